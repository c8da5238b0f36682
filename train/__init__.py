"""Training stage: MobileNetV2 (or VGG16) transfer learning, fine-tuning and quantization-aware training.

python -m train --data digits            # the embedded dataset, offline
python -m train --data path/to/folder    # one sub-folder per class
"""

import os

# tf-keras, not Keras 3: tensorflow-model-optimization only quantizes tf-keras models (NOTES-deps item 5).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
