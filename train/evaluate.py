"""What a run is measured by: a model on the test split (Evaluation), and how close the QAT model starts to the
float model once its quantizer ranges are calibrated (calibrate_qat)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contracts.console import log
from train.data import Split, split_images
from train.settings import TrainSettings


@dataclass(frozen=True)
class Evaluation:
    """One model on the test split."""

    probs: np.ndarray  # N x classes probabilities, in the split's order
    top1: float  # rounded to 4 places, as metrics.json gives it
    per_class: dict  # class name -> precision, recall, f1-score, support

    @property
    def pred(self) -> np.ndarray:
        return np.argmax(self.probs, 1)


def evaluate(model, test_ds, labels: np.ndarray, class_names: list[str]) -> Evaluation:
    """Predicts the test split (a tf.data.Dataset in the order of `labels`) and scores it per class."""
    from train.report import classification_metrics

    probs = model.predict(test_ds, verbose=0)
    m = classification_metrics(labels, probs, class_names)
    return Evaluation(probs=probs, top1=m["top1"], per_class=m["per_class"])


def calibrate_qat(qat, float_model, train_split: Split, val_ds, s: TrainSettings, n_images: int = 256) -> dict:
    """Sets a fresh QAT model's quantizer ranges from the float model, on `n_images` training images.

    Returns:
        How close it starts, on the val split: "agreement" (top-1 agreement with the float model after
        calibration), "agreement_uncalibrated" (before: tfmot's +-6 ranges) and "val_top1" (after).
    """
    from train.qat import calibrate_ranges

    # The val split is predicted from its pipeline, batch by batch: a float32 copy of it grows with the dataset.
    val_y = np.concatenate([y.numpy() for _, y in val_ds])
    float_pred = float_model.predict(val_ds, verbose=0).argmax(1)  # once, for before and after
    before = float(np.mean(qat.predict(val_ds, verbose=0).argmax(1) == float_pred))
    pick = np.random.default_rng(s.seed).permutation(len(train_split))[:n_images]
    images = split_images(train_split, s.image_size, pick)
    n = calibrate_ranges(qat, float_model, images, batch_size=s.batch_size)
    pred = qat.predict(val_ds, verbose=0).argmax(1)
    after, top1 = float(np.mean(pred == float_pred)), float(np.mean(pred == val_y))
    log(f"QAT start: {n} quantizer ranges calibrated on {len(pick)} training images; agreement with the float "
        f"model on val {before:.3f} -> {after:.3f}, val top-1 {top1:.4f}")  # fmt: skip
    return {"agreement": round(after, 4), "agreement_uncalibrated": round(before, 4), "val_top1": round(top1, 4)}
