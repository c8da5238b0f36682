"""Benchmark stage: every published artifact's size, accuracy and speed on this device, and what int8 buys.

python -m benchmarks --run runs/NAME                    # results, plots and report in runs/NAME/bench/
python -m benchmarks.device.latency --model MODEL.tflite      # on the device itself (no TensorFlow needed)
"""

import os

# The float Keras reference is a tf-keras model (as in train/); set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
