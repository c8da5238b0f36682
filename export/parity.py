"""The parity gate: run an artifact in its own runtime on the test images and compare it with Keras.

Thresholds come from the formats table (contracts.formats); nothing is published that fails them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from contracts.formats import ExportFormat


@dataclass(frozen=True)
class Parity:
    agreement: float  # top-1 agreement with the source Keras model
    max_abs_diff: float  # largest |p_artifact - p_keras| over every test probability
    test_top1: float  # the artifact's own top-1 on the test labels
    top1_drop: float  # float Keras top-1 minus this artifact's top-1 (positive: worse)
    n_images: int
    passed: bool
    failures: tuple[str, ...]  # human-readable reasons when not passed

    def to_dict(self, fmt: ExportFormat) -> dict:
        d = asdict(self)
        d["failures"] = list(self.failures)
        d["thresholds"] = {
            "min_agreement": fmt.min_agreement, "max_abs_diff": fmt.max_abs_diff, "max_top1_drop": fmt.max_top1_drop,
        }  # fmt: skip
        return d


def check_parity(
    fmt: ExportFormat, probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray, float_top1: float
) -> Parity:
    """Compares an artifact's probabilities with its source Keras model's, against fmt's thresholds."""
    pred = probs.argmax(1)
    agreement = float(np.mean(pred == keras_probs.argmax(1)))
    max_abs = float(np.max(np.abs(probs - keras_probs)))
    top1 = float(np.mean(pred == labels))
    drop = float_top1 - top1
    failures = []
    if agreement < fmt.min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {fmt.min_agreement}")
    if fmt.max_abs_diff is not None and max_abs > fmt.max_abs_diff:
        failures.append(f"max abs probability difference {max_abs:.2e} > {fmt.max_abs_diff:.0e}")
    if fmt.max_top1_drop is not None and drop > fmt.max_top1_drop + 1e-9:
        failures.append(f"test top-1 {top1:.4f} is {drop * 100:.2f} points below float {float_top1:.4f} "
                        f"(allowed {fmt.max_top1_drop * 100:g})")  # fmt: skip
    return Parity(round(agreement, 6), max_abs, round(top1, 6), round(drop, 6), len(labels), not failures,
                  tuple(failures))  # fmt: skip
