"""The device-side benchmark: what runs on the Raspberry Pi itself, shipped whole in the bundle.

    python -m benchmarks.device.latency --model model/tflite_int8.tflite --device-name pi4 --out pi4.json
    python -m benchmarks.device.soak --model model/tflite_int8.tflite --minutes 60

It imports only contracts, edge, this package and what the edge requirements install (numpy, OpenCV, LiteRT):
never TensorFlow, scikit-learn or matplotlib (a test runs it where those cannot be imported).
"""
