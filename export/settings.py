"""ExportSettings: the choices of one export, saved as runs/NAME/export/export_settings.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSettings:
    """The choices of one export. Field comments are the documentation; --help mirrors them."""

    run: str = "runs/latest"  # the training run folder to export
    formats: str = "all"  # comma-separated names from contracts.formats.FORMATS, or "all"
    force: bool = False  # re-export artifacts that are up to date (same source model checksum)
    calibration_images: int = 200  # training images in the representative dataset for int8 calibration
    onnx_opset: int = 17  # tf2onnx opset; 17 is well supported by onnxruntime 1.31 and by older Pi builds
    max_test_images: int = 0  # cap on test images used by the parity gate (0 = the whole test split)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
