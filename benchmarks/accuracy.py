"""Test-set accuracy of an artifact as the device computes it, and its agreement with the float model.

    probs = predict_images(classifier, test_rgb)           # edge's own preprocessing and (de)quantization
    ref = keras_reference(run_dir, test_rgb)                # the float Keras model's, if TensorFlow imports
    row.update(accuracy_columns(probs, test_y, labels, ref))

Every image goes through contracts.runners.classifier.Classifier.predict, one at a time, as a camera frame would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.runners.classifier import Classifier

KERAS_REFERENCE = "keras_float"  # the `reference` column when agreement is against the float Keras model
TFLITE_REFERENCE = "tflite_fp32"  # ... and when TensorFlow is missing: the float32 TFLite artifact


def predict_images(classifier: Classifier, rgb: np.ndarray) -> np.ndarray:
    """Float probabilities (N x classes) for uint8 RGB images, through the classifier's preprocessing."""
    return np.stack([classifier.predict(np.ascontiguousarray(img[..., ::-1]))[0] for img in rgb])


def keras_reference(run_dir: str | Path, rgb: np.ndarray) -> np.ndarray:
    """Probabilities of the run's float Keras model on uint8 RGB images (its Rescaling layer takes 0-255).

    Raises:
        ImportError: TensorFlow / tf-keras is not installed (the caller falls back to tflite_fp32).
        FileNotFoundError: the run has no float model file.
    """
    from train.runfolder import FLOAT_MODEL

    path = Path(run_dir) / FLOAT_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the float Keras model of the run)")
    import tf_keras as keras

    model = keras.models.load_model(str(path), compile=False)
    return model.predict(rgb.astype(np.float32), batch_size=64, verbose=0)


def per_class_top1(pred: np.ndarray, y: np.ndarray, label_names: list[str]) -> dict:
    """{label: fraction of that class's test images predicted right}; None for a class with no test image."""
    out = {}
    for i, name in enumerate(label_names):
        mask = y == i
        out[name] = round(float(np.mean(pred[mask] == i)), 4) if mask.any() else None
    return out


def accuracy_columns(probs: np.ndarray, y: np.ndarray, label_names: list[str], ref_probs: np.ndarray | None) -> dict:
    """top1, per_class_top1, agreement (None without a reference) and n_test of one artifact."""
    pred = probs.argmax(1)
    agreement = None if ref_probs is None else round(float(np.mean(pred == ref_probs.argmax(1))), 4)
    return {
        "top1": round(float(np.mean(pred == y)), 4),
        "agreement": agreement,
        "n_test": int(len(y)),
        "per_class_top1": per_class_top1(pred, y, label_names),
    }
