"""Benchmark stage: measure every published artifact's size, accuracy and speed, and report what int8 buys.

    python -m benchmarks --run runs/NAME             # results, plots and report in runs/NAME/bench/ (benchmarks.cli)
    python -m benchmarks.device.latency --model MODEL.tflite --out pi4.json     # on the Pi (no TensorFlow needed)
    python -m benchmarks.device.soak --model MODEL.tflite --out soak.json       # hours of the camera loop, on the Pi

Host side (this package): cli and settings, run (measures here, merges other devices' rows), accuracy (test split
through edge's preprocessing; the float Keras reference), compare (ratios within one device), report and plots.
Device side (benchmarks.device, shipped whole in the Pi bundle): latency, loop, soak and the row format. The host
imports the device package, never the reverse, except for a soak's optional --plot.
"""

import os

# The float Keras reference is a tf-keras model (as in train/); set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
