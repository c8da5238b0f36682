"""label(): what an artifact says about itself, written into it before the parity gate checks it.

A .tflite gets TFLite Support metadata and its labels file (export.tflite_metadata), an .onnx its metadata_props
(export.onnx); both from one export.model_info.ModelInfo. is_labelled() tells export.run whether a file on disk
already carries them (files exported before this existed do not, so they are not up to date).
"""

from __future__ import annotations

from pathlib import Path

from contracts.formats import ExportFormat
from contracts.runners.tflite_verify import ModelFileError
from contracts.tflite_metadata import read_metadata
from export.model_info import ModelInfo


def label(fmt: ExportFormat, path: Path, info: ModelInfo) -> None:
    """Writes what the artifact says about itself into it: TFLite metadata and labels, or ONNX metadata_props."""
    if fmt.runtime == "litert":
        from export.tflite_metadata import write_metadata

        write_metadata(path, info)
    else:
        from export.onnx import write_metadata_props

        write_metadata_props(path, info)


def is_labelled(fmt: ExportFormat, path: Path, labels: list[str]) -> bool:
    """Whether an artifact carries what label() writes, with these labels (files exported before it did not)."""
    if fmt.runtime == "litert":
        try:
            meta = read_metadata(path)
        except ModelFileError:
            return False
        return meta is not None and meta.labels == labels
    from export.onnx import labels_in

    return labels_in(path) == labels
