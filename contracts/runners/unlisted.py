"""A model no manifest lists (another tool's, or one of ours copied alone): what edge needs, read from the model.

    path = "mobilenet_v1_0.25_128_quant.tflite"
    unlisted, backend = describe_unlisted(path, lambda: create_backend("litert", path), labels_file="labels.txt")

Labels come from `--labels FILE` (one per line), else the model's own metadata: a .tflite's TFLite metadata (the
output's TENSOR_AXIS_LABELS file, as MediaPipe Model Maker and the TFLite metadata writers put it there), an .onnx's
metadata_props "labels". The pixels fed follow MediaPipe's ImageClassifier: a float input gets (pixel - mean) / std
with the metadata's NormalizationOptions, a uint8 input gets the raw pixels, an int8 input gets (pixel - mean) / std
quantized with the tensor's own parameters; without normalization metadata mean is 0 and std 1 (raw 0-255 pixels,
what this toolkit's models take). The result is a manifest and artifact entry the Classifier checks like any other,
with no checksum: nothing says what the file should be.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BackendError, EdgeError
from contracts.formats import format_for_file
from contracts.manifest import SCHEMA_VERSION, ArtifactEntry, Manifest, Preprocessing, TensorSpec
from contracts.runners.base import Backend
from contracts.runners.tflite_verify import ModelFileError, _Reader, verify_tflite
from contracts.tflite_metadata import ModelMetadata, read_metadata

_LABELS_HINT = "pass --labels FILE (one label per line, in output order)"


@dataclass(frozen=True)
class Unlisted:
    """What the Classifier needs of a model no manifest lists, and where each part came from."""

    manifest: Manifest  # made up from the model: its labels, input size and pixel range; no checksum
    entry: ArtifactEntry  # sha256 "" (nothing was verified); tensors as the runtime reports them
    labels_from: str  # "its metadata" or "--labels FILE"
    pixels_from: str  # what the pixels become, and on whose word: "raw (uint8 input)", "(pixel - 127.5) / 127.5 (...)"


def read_labels_file(path: str | Path) -> list[str]:
    """The labels of a --labels file: one per line, blank lines skipped, surrounding spaces stripped.

    Raises:
        EdgeError: the file is missing, unreadable, not UTF-8 text, or holds no label.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeError(f"--labels {p} not found: {_LABELS_HINT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"--labels {p} is not a readable text file ({e}): {_LABELS_HINT}") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise EdgeError(f"--labels {p} is empty: {_LABELS_HINT}")
    return labels


def _onnx_list(path: Path, props: dict, key: str, kind) -> list | None:
    """The JSON list metadata_props[key] holds (a number counts as a list of one), or None when it is absent."""
    text = props.get(key)
    if text is None:
        return None
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        v = None
    if kind is not str and isinstance(v, (int, float)):
        v = [v]
    if not (isinstance(v, list) and v and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)):
        what, fix = ("strings", _LABELS_HINT) if kind is str else ("numbers", "write its metadata_props again")
        raise EdgeError(f"{path}: its metadata_props {key} is {text[:60]!r}, not a JSON list of {what}: {fix}")
    return v


def _tflite_metadata(path: Path) -> ModelMetadata | None:
    """The .tflite's metadata (None: it has none); corrupt metadata is an EdgeError naming the file and the fix."""
    try:
        return read_metadata(path)
    except ModelFileError as e:
        raise EdgeError(str(e)) from None


def _one_value(path: Path, what: str, values: list[float] | None, default: float) -> float:
    """The one mean or std every channel shares (edge maps all channels through one table)."""
    if not values:
        return default
    if any(not math.isfinite(v) for v in values) or len(set(values)) != 1:
        raise EdgeError(
            f"{path}: metadata normalization {what} {values} is not one finite value for every channel, which "
            "edge cannot feed: write metadata with a single mean and std"
        )
    return float(values[0])


def _tflite_io(path: Path) -> tuple[list[int], list[int]] | None:
    """(input shape, output shape) of a sound .tflite's one input and output, read from the flatbuffer before any
    interpreter opens it (LiteRT prints a line of its own on opening); None: not one of each (the backend says so)."""
    r = _Reader(path.read_bytes())
    subgraph = r.table(r.u32(0), "Model").tables(2, "subgraphs")[0]
    tensors = subgraph.tables(0, "tensors")
    inputs, outputs = subgraph.ints(1, "inputs"), subgraph.ints(2, "outputs")
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    return tensors[inputs[0]].ints(0, "shape"), tensors[outputs[0]].ints(0, "shape")


def _check_labels(path: Path, labels: list[str] | None, labels_from: str, has_metadata: bool, n_out: int) -> None:
    if labels is None:
        has = "its metadata has no labels" if has_metadata else "it carries no metadata"
        raise EdgeError(f"{path} is listed by no manifest.json beside it and {has}: {_LABELS_HINT}")
    if len(labels) == n_out:
        return
    if labels_from.startswith("--labels"):
        raise EdgeError(f"{labels_from} lists {len(labels)} labels but {path} has {n_out} outputs: pass a labels "
                        f"file with one line per output ({n_out})")  # fmt: skip
    raise EdgeError(f"{path}: its metadata lists {len(labels)} labels but the model has {n_out} outputs: pass "
                    f"--labels FILE with {n_out} lines (one label per output, in order)")  # fmt: skip


def _check_input(path: Path, shape: list[int]) -> None:
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] < 1 or shape[3] != 3:
        raise EdgeError(
            f"{path} takes input shape {shape}; edge feeds square RGB pictures, N x S x S x 3 (NHWC): pass an "
            "image classifier with such an input"
        )


def _tflite_facts(path: Path, labels: list[str] | None, labels_from: str) -> tuple:
    """(labels, mean, std, has metadata) of a .tflite, checked from the file alone, before any interpreter opens
    it: LiteRT prints a line of its own on opening, and a refusal is to be one line."""
    try:
        verify_tflite(path)
    except ModelFileError as e:
        raise BackendError(str(e)) from None
    meta = _tflite_metadata(path)
    if labels is None and meta is not None:
        labels = meta.labels
    io = _tflite_io(path)
    if io is not None:
        _check_labels(path, labels, labels_from, meta is not None, io[1][-1] if io[1] else 0)
        _check_input(path, io[0])
    return (labels, meta.mean, meta.std, True) if meta is not None else (labels, None, None, False)


def _onnx_facts(path: Path, backend: Backend, labels: list[str] | None) -> tuple:
    """(labels, mean, std, has metadata) of an .onnx, from the metadata_props its session reports."""
    props = getattr(backend, "custom_metadata", None) or {}
    if labels is None:
        labels = _onnx_list(path, props, "labels", str)
    number = (int, float)
    return labels, _onnx_list(path, props, "mean", number), _onnx_list(path, props, "std", number), bool(props)


def _pixels(path: Path, spec: TensorSpec, mean: list[float] | None, std: list[float] | None) -> tuple:
    """(input TensorSpec, Preprocessing.input_range, how pixels are fed in words) for an input tensor."""
    m, s = _one_value(path, "mean", mean, 0.0), _one_value(path, "std", std, 1.0)
    if s == 0:
        raise EdgeError(f"{path}: metadata normalization std is 0: write metadata with a nonzero std")
    if spec.dtype == "uint8":  # the pixels themselves, whatever float range the metadata describes (as MediaPipe)
        scale, zp = spec.scale or 1.0, spec.zero_point or 0
        # quantize(scale * (pixel - zp)) == pixel: the classifier's table then hands the raw pixel through.
        spec = TensorSpec(spec.name, spec.shape, spec.dtype, scale, zp)
        return spec, [scale * (0 - zp), scale * (255 - zp)], "raw (uint8 input)"
    if mean is None and std is None:
        return spec, [0.0, 255.0], "raw 0-255 (no normalization metadata)"
    return spec, [(0.0 - m) / s, (255.0 - m) / s], f"(pixel - {m:g}) / {s:g} (normalization from its metadata)"


def describe_unlisted(
    path: str | Path, open_backend: Callable[[], Backend], labels_file: str | Path | None = None
) -> tuple[Unlisted, Backend]:
    """What the Classifier needs of a model no manifest lists, from the model's metadata and `labels_file`.

    A .tflite is checked from its file before `open_backend` runs (so a refusal is one line, with nothing of the
    runtime's on stderr); an .onnx's metadata_props come from its session.

    Args:
        path: the .tflite or .onnx file.
        open_backend: opens it in its runtime (its tensors give the input size, dtype and quantization).
        labels_file: a --labels file, one label per line; None: the labels in the model's metadata.

    Returns:
        (the description, the opened backend).

    Raises:
        EdgeError: no labels anywhere, a label count that is not the output size, a --labels file that is missing
            or empty, corrupt metadata, or an input edge cannot feed (not N x S x S x 3); each message names the
            file and what to pass. BackendError (an EdgeError): the runtime cannot open the model.
    """
    path = Path(path)
    labels = read_labels_file(labels_file) if labels_file is not None else None
    labels_from = f"--labels {labels_file}" if labels_file is not None else "its metadata"
    tflite = path.suffix.lower() == ".tflite"
    if tflite:
        labels, mean, std, has_metadata = _tflite_facts(path, labels, labels_from)
    backend = open_backend()
    if not tflite:
        labels, mean, std, has_metadata = _onnx_facts(path, backend, labels)
    n_out = backend.output.shape[-1] if backend.output.shape else 0
    _check_labels(path, labels, labels_from, has_metadata, n_out)
    _check_input(path, backend.input.shape)
    input_spec, input_range, pixels_from = _pixels(path, backend.input, mean, std)
    if np.dtype(backend.output.dtype).kind in "iu" and backend.output.scale is None:
        raise EdgeError(f"{path}: its output is {backend.output.dtype} without quantization parameters, which edge "
                        "cannot turn into scores: pass a model whose integer output is quantized")  # fmt: skip

    fmt = format_for_file(path)
    entry = ArtifactEntry(
        format=fmt.name if fmt is not None else path.stem, file=path.name, sha256="",
        size_bytes=path.stat().st_size, quantization="int8" if input_spec.scale is not None else "none",
        runtime=backend.name, input=input_spec, output=backend.output, source_model="", source_sha256="",
        test_top1=float("nan"), parity={},
    )  # fmt: skip
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, run=path.stem, created="", labels=list(labels),
        image_size=int(backend.input.shape[1]), preprocessing=Preprocessing(input_range=input_range,
        normalization=pixels_from), backbone="", alpha=0.0, weights_used="", settings_sha256="",
        float_test_top1=float("nan"), tool_versions={}, artifacts=[entry],
    )  # fmt: skip
    return Unlisted(manifest, entry, labels_from, pixels_from), backend
