"""Export stage: a trained run -> TFLite and ONNX artifacts, each parity-checked, plus the manifest.

python -m export --run runs/NAME [--formats all|tflite_int8,onnx_fp32] [--force]
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the run's models are tf-keras models
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
