"""Edge runtime: the Raspberry Pi camera classifier, with nothing but numpy, OpenCV and a LiteRT interpreter.

    python -m edge --model model/tflite_int8.tflite --source 0 --headless     # see edge.cli

sources (what --source names, opened as captures) -> reader (reading and preprocessing on threads of their own,
handing on frames and outage events: frames) -> app (checks, then the loop: classify, print, draw) -> display
(overlay, window, recording). The model itself runs in contracts.runners; nothing here imports TensorFlow, and
a test checks every file the bundle ships (deploy.bundle).
"""
