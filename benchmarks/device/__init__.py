"""The device-side benchmark: what runs on the Raspberry Pi itself, shipped whole in the bundle (deploy.bundle).

    python -m benchmarks.device.latency --model model/tflite_int8.tflite --device-name pi4 --out pi4.json
    python -m benchmarks.device.soak --model model/tflite_int8.tflite --frames 20000 --out soak.json
    python -m benchmarks.device.robustness --model model/tflite_int8.tflite --images frames/ --out robust.json
    python -m benchmarks.device.watching --model model/tflite_int8.tflite --out watching.json

latency times models in their runtime and describes the machine; loop times edge's camera loop (edge.app.run_loop)
on a generated video; soak runs that loop for hours, sampling memory (sampling); corruptions makes the camera
conditions (blur, noise, JPEG, low light, pixelation, motion blur) the host's robustness section measures, and
robustness runs them on the device's own frames; watching times the loop with the live view's clients; rows is the
row format both sides write and merge; settings holds BenchError and the --threads parser.

It imports only contracts, edge, this package, the standard library, numpy and OpenCV (what the edge requirements
install): never TensorFlow, scikit-learn or matplotlib (tests check every shipped file and run latency where those
cannot be imported). The one way out is soak's --plot, which imports the host's benchmarks.plots when asked for
and is refused with one line where that is missing.
"""
