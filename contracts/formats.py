"""The one table of export formats: every fact about a format lives here, keyed by its name.

export converts and gates with it, edge and the benchmarks find runtimes and file names with it, deploy picks the
model to ship with it, and the Makefile asks it for file names (`python -m contracts.formats --file NAME`). It is
TF-free: converters are "module:function" strings that only export resolves.

    from contracts.formats import FORMATS, resolve_formats
    resolve_formats("tflite_int8,onnx_fp32")
    FORMATS["tflite_int8"].filename        # "tflite_int8.tflite"
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

# The runtime that runs each file kind on the device, and the suffix that kind has: the only suffix rule there is.
SUFFIXES = {"litert": ".tflite", "onnxruntime": ".onnx"}
RUNTIMES = tuple(SUFFIXES)


class FormatError(ValueError):
    """An unknown format name; the message lists the valid ones."""


@dataclass(frozen=True)
class ExportFormat:
    """One deployable artifact kind and the parity gate it must pass before it is published."""

    name: str  # key of the table and stem of the file: tflite_int8 -> tflite_int8.tflite
    runtime: str  # runtime that runs it on the device: a key of SUFFIXES
    source: str  # Keras model it is converted from: "float" or "qat"
    quantization: str  # "none", "fp16", "dynamic" (int8 weights, float activations) or "int8" (full integer)
    # dtypes of the input tensor the device feeds and of the output: "float32", or "uint8" for the full-integer
    # formats (int8 inside; uint8 pixels at scale 1, zero point 0, and uint8 probabilities: what MediaPipe Tasks and
    # the TFLite Support library take, they refuse int8)
    input_dtype: str
    output_dtype: str
    # "module:function" in export/ that writes it, called as fn(model, calibration, path, **{k: settings[k] for k in
    # converter_options}); calibration is uint8 RGB images (N x S x S x 3). Resolved only by export.
    converter: str
    min_agreement: float  # top-1 agreement with the source Keras model on the test set, at least
    description: str  # one line for --help and reports
    max_abs_diff: float | None = None  # largest |p_artifact - p_keras| over all test probabilities (None: unchecked)
    max_top1_drop: float | None = None  # test top-1 may be at most this far below the float model's (None: unchecked)
    converter_options: tuple[str, ...] = ()  # ExportSettings fields the converter takes as keyword arguments
    bundle_rank: int | None = None  # deploy's default choice: the lowest rank the manifest lists (None: never default)

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.runtime]

    @property
    def filename(self) -> str:
        return self.name + self.suffix


# Thresholds: float formats must reproduce Keras; fp16/dynamic lose a little precision; int8 formats are judged
# against their source model and against float accuracy (NOTES-deps: a weak model gives int8 agreement near 0.9,
# XNNPACK and reference kernels differ, so int8 is never compared exactly). Bundle ranks: QAT int8 loses least.
_FORMATS = (
    ExportFormat(
        name="tflite_fp32", runtime="litert", source="float", quantization="none",
        input_dtype="float32", output_dtype="float32", converter="export.tflite:convert_fp32",
        min_agreement=0.995, max_abs_diff=1e-4, bundle_rank=3, description="TFLite float32",
    ),
    ExportFormat(
        name="tflite_fp16", runtime="litert", source="float", quantization="fp16",
        input_dtype="float32", output_dtype="float32", converter="export.tflite:convert_fp16",
        min_agreement=0.99, description="TFLite with float16 weights",
    ),
    ExportFormat(
        name="tflite_dynamic", runtime="litert", source="float", quantization="dynamic",
        input_dtype="float32", output_dtype="float32", converter="export.tflite:convert_dynamic",
        min_agreement=0.99, description="TFLite dynamic-range (int8 weights)",
    ),
    ExportFormat(
        name="tflite_int8", runtime="litert", source="float", quantization="int8",
        input_dtype="uint8", output_dtype="uint8", converter="export.tflite:convert_int8",
        min_agreement=0.95, max_top1_drop=0.02, bundle_rank=2,
        description="TFLite full-integer post-training quantization (uint8 in and out)",
    ),
    ExportFormat(
        name="tflite_int8_qat", runtime="litert", source="qat", quantization="int8",
        input_dtype="uint8", output_dtype="uint8", converter="export.tflite:convert_int8_qat",
        min_agreement=0.95, max_top1_drop=0.01, bundle_rank=1,
        description="TFLite full-integer from quantization-aware training (uint8 in and out)",
    ),
    ExportFormat(
        name="onnx_fp32", runtime="onnxruntime", source="float", quantization="none",
        input_dtype="float32", output_dtype="float32", converter="export.onnx:convert_fp32",
        converter_options=("onnx_opset",), min_agreement=0.995, max_abs_diff=1e-4,
        description="ONNX float32 (tf2onnx)",
    ),
    ExportFormat(
        name="onnx_int8", runtime="onnxruntime", source="float", quantization="int8",
        input_dtype="float32", output_dtype="float32", converter="export.onnx:convert_int8",
        converter_options=("onnx_opset",), min_agreement=0.95, max_top1_drop=0.02,
        description="ONNX static int8 (QDQ, onnxruntime quantize_static)",
    ),
)  # fmt: skip

FORMATS: dict[str, ExportFormat] = {f.name: f for f in _FORMATS}
# deploy's default order: the best deployable first
BUNDLE_PREFERENCE: tuple[str, ...] = tuple(f.name for f in sorted(_FORMATS, key=lambda f: f.bundle_rank or 0)
                                           if f.bundle_rank is not None)  # fmt: skip


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


def runtime_for_file(path: str | Path) -> str | None:
    """The runtime a model file's suffix implies (.tflite -> litert, .onnx -> onnxruntime), else None."""
    suffix = Path(path).suffix.lower()
    return next((runtime for runtime, s in SUFFIXES.items() if s == suffix), None)


def format_for_file(path: str | Path) -> ExportFormat | None:
    """The format whose file name a path has (tflite_int8.tflite -> tflite_int8), else None."""
    fmt = FORMATS.get(Path(path).stem)
    return fmt if fmt is not None and fmt.filename == Path(path).name else None


def main(argv: list[str] | None = None) -> int:
    """`python -m contracts.formats --file NAME` prints NAME's file name (the Makefile asks this)."""
    p = argparse.ArgumentParser(prog="python -m contracts.formats", description="The table of export formats.")
    p.add_argument("--file", metavar="NAME", help="print the file name of format NAME")
    args = p.parse_args(argv)
    try:
        names = [args.file] if args.file else list(FORMATS)
        fmts = resolve_formats(names)
    except FormatError as e:
        print(f"contracts.formats: error: {e}", file=sys.stderr)
        return 2
    for f in fmts:
        print(f.filename if args.file else f"{f.name:16} {f.filename:22} {f.runtime:12} {f.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
