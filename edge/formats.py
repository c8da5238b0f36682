"""The one table of export formats, shared by export, edge and benchmarks.

It lives in edge/ because the Raspberry Pi must be able to read it without TensorFlow: converters are
named as "module:function" strings and only export/ resolves them.

    from edge.formats import FORMATS, resolve_formats
    resolve_formats("tflite_int8,onnx_fp32")
"""

from __future__ import annotations

from dataclasses import dataclass

RUNTIMES = ("litert", "onnxruntime")


class FormatError(ValueError):
    """An unknown format name; the message lists the valid ones."""


@dataclass(frozen=True)
class ExportFormat:
    """One deployable artifact kind and the parity gate it must pass before it is published."""

    name: str  # key of the table and stem of the file: tflite_int8 -> tflite_int8.tflite
    suffix: str  # file suffix, with the dot
    runtime: str  # runtime that runs it on the device: "litert" or "onnxruntime"
    source: str  # Keras model it is converted from: "float" or "qat"
    quantization: str  # "none", "fp16", "dynamic" (int8 weights, float activations) or "int8" (full integer)
    input_dtype: str  # dtype of the input tensor the device feeds: "float32" or "int8"
    output_dtype: str  # dtype of the output tensor: "float32" or "int8"
    converter: str  # "module:function" in export/ that writes it; resolved only by export
    min_agreement: float  # top-1 agreement with the source Keras model on the test set, at least
    max_abs_diff: float | None  # largest |p_artifact - p_keras| over all test probabilities, at most (None: unchecked)
    max_top1_drop: float | None  # test top-1 may be at most this far below the float model's (None: unchecked)
    description: str  # one line for --help and reports

    @property
    def filename(self) -> str:
        return self.name + self.suffix

    @property
    def is_int8(self) -> bool:
        return self.quantization == "int8"


# Thresholds: float formats must reproduce Keras; fp16/dynamic lose a little precision; int8 formats are
# judged against their source model and against float accuracy (NOTES-deps: a weak model gives int8
# agreement near 0.9, XNNPACK and reference kernels differ, so int8 is never compared exactly).
_FORMATS = (
    ExportFormat(
        "tflite_fp32", ".tflite", "litert", "float", "none", "float32", "float32",
        "export.tflite:convert_fp32", 0.995, 1e-4, None, "TFLite float32",
    ),
    ExportFormat(
        "tflite_fp16", ".tflite", "litert", "float", "fp16", "float32", "float32",
        "export.tflite:convert_fp16", 0.99, None, None, "TFLite with float16 weights",
    ),
    ExportFormat(
        "tflite_dynamic", ".tflite", "litert", "float", "dynamic", "float32", "float32",
        "export.tflite:convert_dynamic", 0.99, None, None, "TFLite dynamic-range (int8 weights)",
    ),
    ExportFormat(
        "tflite_int8", ".tflite", "litert", "float", "int8", "int8", "int8",
        "export.tflite:convert_int8", 0.95, None, 0.02, "TFLite full-integer post-training quantization",
    ),
    ExportFormat(
        "tflite_int8_qat", ".tflite", "litert", "qat", "int8", "int8", "int8",
        "export.tflite:convert_int8_qat", 0.95, None, 0.01, "TFLite full-integer from quantization-aware training",
    ),
    ExportFormat(
        "onnx_fp32", ".onnx", "onnxruntime", "float", "none", "float32", "float32",
        "export.onnx:convert_fp32", 0.995, 1e-4, None, "ONNX float32 (tf2onnx)",
    ),
    ExportFormat(
        "onnx_int8", ".onnx", "onnxruntime", "float", "int8", "float32", "float32",
        "export.onnx:convert_int8", 0.95, None, 0.02, "ONNX static int8 (QDQ, onnxruntime quantize_static)",
    ),
)  # fmt: skip

FORMATS: dict[str, ExportFormat] = {f.name: f for f in _FORMATS}


def resolve_formats(names: str | list[str] | None) -> list[ExportFormat]:
    """Turns "all", a comma-separated string or a list of names into formats, in table order.

    Raises:
        FormatError: a name is not in the table; the message lists the valid ones.
    """
    if names is None or names == "all" or names == ["all"]:
        return list(_FORMATS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise FormatError(f"unknown format {', '.join(unknown)}: choose from all, {', '.join(FORMATS)}")
    return [f for f in _FORMATS if f.name in names]


def format_for_file(path: str) -> ExportFormat | None:
    """The format whose file name a path has (tflite_int8.tflite -> tflite_int8), else None."""
    from pathlib import Path

    return FORMATS.get(Path(path).stem) if Path(path).suffix in {f.suffix for f in _FORMATS} else None
