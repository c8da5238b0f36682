"""read_metadata(): what a .tflite says about itself in its TFLite Support metadata, with the standard library only.

MediaPipe Tasks, the TFLite Support library and Android Studio read a model's labels and input normalization from
the "TFLITE_METADATA" buffer (a flatbuffer of tensorflow/tflite-support's metadata_schema.fbs, identifier M001) and
from the files zipped onto the end of the model (the labels file the output tensor names). export writes both
(export.tflite_metadata); edge reads them here to run a model without its manifest. The Pi has no `flatbuffers`
package guarantee, so the tables are walked by hand with the bounds-checked reader of contracts.runners.tflite_verify.

    meta = read_metadata("model.tflite")   # None: the file carries no metadata
    meta.labels, meta.mean, meta.std       # ["cat", "dog"], [127.5], [127.5]: feed (pixel - mean) / std
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from contracts.runners.tflite_verify import IDENTIFIER, ModelFileError, _Reader, _Table

METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry that names the metadata buffer
METADATA_IDENTIFIER = b"M001"  # metadata_schema.fbs file_identifier
# Enum and union values of metadata_schema.fbs that this reads.
_IMAGE_PROPERTIES = 2  # ContentProperties: FeatureProperties 1, ImageProperties 2, BoundingBoxProperties 3
_NORMALIZATION = 1  # ProcessUnitOptions: NormalizationOptions 1
_AXIS_LABELS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS
_COLOR_SPACES = {1: "RGB", 2: "GRAYSCALE"}  # ColorSpaceType; 0 is UNKNOWN
_MAX_LABELS_BYTES = 16 << 20  # a labels file larger than this is damage, not labels
_FIX = "copy the file again, or re-write its metadata (python -m export re-writes this toolkit's models)"


@dataclass(frozen=True)
class ModelMetadata:
    """The parts of a model's metadata that a classifier needs."""

    name: str  # ModelMetadata.name ("" when absent)
    description: str
    version: str
    labels: list[str] | None  # the output tensor's TENSOR_AXIS_LABELS file, one label a line (None: no labels file)
    mean: list[float] | None  # the input's NormalizationOptions: it takes (pixel - mean) / std (None: no normalization)
    std: list[float] | None
    color_space: str | None  # the input image's "RGB" or "GRAYSCALE" (None: not stated)


def _string(t: _Table, i: int, name: str) -> str | None:
    start, n = t.vector(i, 1, name)
    if not start:
        return None
    try:
        return t.r.buf[start : start + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"the string {t.what}.{name} is not UTF-8") from None


def _floats(t: _Table, i: int, name: str) -> list[float]:
    start, n = t.vector(i, 4, name)
    return list(struct.unpack_from(f"<{n}f", t.r.buf, start)) if n else []


def _metadata_buffer(buf: bytes) -> bytes | None:
    """The bytes of the buffer the model's TFLITE_METADATA entry names, or None when it has no such entry."""
    r = _Reader(buf)
    model = r.table(r.u32(0), "Model")
    for entry in model.tables(6, "metadata"):
        if _string(entry, 0, "name") != METADATA_NAME:
            continue
        index = entry.scalar(1, r.u32, 4)
        buffers = model.tables(4, "buffers")
        if index >= len(buffers):
            raise ModelFileError(f"its {METADATA_NAME} entry names buffer {index} of {len(buffers)}")
        start, n = buffers[index].vector(0, 1, "data")
        if not n:  # a model over 2 GB keeps its buffers after the flatbuffer, by offset and size
            start, n = buffers[index].scalar(1, r.u64, 8), buffers[index].scalar(2, r.u64, 8)
            if start <= 1 or start + n > len(buf):
                raise ModelFileError(f"its {METADATA_NAME} buffer is empty or lies past the end of the file")
        return buf[start : start + n]
    return None


def _input(t: _Table) -> tuple[str | None, list[float] | None, list[float] | None]:
    """(color space, mean, std) of an input TensorMetadata."""
    color = None
    content = t.subtable(3, "content")
    if content is not None and content.scalar(0, content.r.u8, 1) == _IMAGE_PROPERTIES:
        props = content.subtable(1, "ImageProperties")
        color = _COLOR_SPACES.get(props.scalar(0, props.r.u8, 1)) if props is not None else None
    for unit in t.tables(4, "process_units"):
        if unit.scalar(0, unit.r.u8, 1) != _NORMALIZATION:
            continue
        options = unit.subtable(1, "NormalizationOptions")
        mean, std = (_floats(options, 0, "mean"), _floats(options, 1, "std")) if options is not None else ([], [])
        if not mean or len(mean) != len(std):
            raise ModelFileError(f"its input NormalizationOptions has {len(mean)} means and {len(std)} stds")
        if not all(math.isfinite(v) for v in mean + std) or 0.0 in std:
            raise ModelFileError(f"its input NormalizationOptions is mean {mean}, std {std}: not a normalization")
        return color, mean, std
    return color, None, None


def _labels_file(t: _Table) -> str | None:
    """The name of an output TensorMetadata's first TENSOR_AXIS_LABELS file (the one readers use by default)."""
    for f in t.tables(6, "associated_files"):
        if f.scalar(2, f.r.u8, 1) == _AXIS_LABELS:
            name = _string(f, 0, "name")
            if not name:
                raise ModelFileError("its labels file has no name")
            return name
    return None


def _read_labels(buf: bytes, name: str) -> list[str]:
    """The lines of the file `name` in the zip archive appended to the model (as MediaPipe splits them)."""
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as zf:
            try:
                info = zf.getinfo(name)
            except KeyError:
                packed = ", ".join(zf.namelist()) or "none"
                raise ModelFileError(f"its metadata names the labels file {name}, not among the files packed "
                                     f"into it ({packed})") from None  # fmt: skip
            if info.file_size > _MAX_LABELS_BYTES:
                raise ModelFileError(f"its labels file {name} claims {info.file_size} bytes")
            data = zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as e:
        if not zipfile.is_zipfile(io.BytesIO(buf)):
            raise ModelFileError(f"its metadata names the labels file {name}, but no files are packed into it (a "
                                 "copy cut short, or a writer that left them out)") from None  # fmt: skip
        raise ModelFileError(f"its metadata names the labels file {name}, but the files packed into it are "
                             f"unreadable ({e})") from None  # fmt: skip
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise ModelFileError(f"its labels file {name} is not UTF-8 text") from None
    if lines and lines[-1] == "":  # the final newline ends the last label
        lines.pop()
    labels = [line.removesuffix("\r") for line in lines]
    if not labels:
        raise ModelFileError(f"its labels file {name} is empty")
    return labels


def _parse(meta: bytes, buf: bytes) -> ModelMetadata:
    if len(meta) < 8 or meta[4:8] != METADATA_IDENTIFIER:
        raise ModelFileError(f"its {METADATA_NAME} buffer is not TFLite metadata (no M001 identifier)")
    r = _Reader(meta)
    color = mean = std = labels_file = None
    try:
        root = r.table(r.u32(0), "ModelMetadata")
        texts = [_string(root, i, name) or "" for i, name in enumerate(("name", "description", "version"))]
        subgraphs = root.tables(3, "subgraph_metadata")
        if subgraphs:
            inputs = subgraphs[0].tables(2, "input_tensor_metadata")
            outputs = subgraphs[0].tables(3, "output_tensor_metadata")
            if inputs:
                color, mean, std = _input(inputs[0])
            labels_file = _labels_file(outputs[0]) if outputs else None
    except ModelFileError as e:  # the reader's offsets count from the metadata buffer's start, not the file's
        raise ModelFileError(f"in its {len(meta)}-byte metadata buffer, {e}") from None
    labels = _read_labels(buf, labels_file) if labels_file is not None else None
    return ModelMetadata(*texts, labels=labels, mean=mean, std=std, color_space=color)


def read_metadata(path: str | Path) -> ModelMetadata | None:
    """The TFLite Support metadata of a .tflite file.

    Args:
        path: a .tflite model.

    Returns:
        Its name, description, version, labels, input normalization and colour space; None when the file carries
        no TFLITE_METADATA.

    Raises:
        ModelFileError: one line naming the file: it cannot be read, is not a TFLite model, or its metadata or the
            labels file the metadata names is corrupt or missing.
    """
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{p} cannot be read ({e.strerror or e}): pass a .tflite model file") from None
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise ModelFileError(f"{p} is not a TFLite model (no TFL3 identifier): pass a .tflite model file")
    try:
        meta = _metadata_buffer(buf)
        return None if meta is None else _parse(meta, buf)
    except ModelFileError as e:
        raise ModelFileError(f"{p} has corrupt TFLite metadata ({e}): {_FIX}") from None
    except (struct.error, RecursionError, IndexError) as e:
        raise ModelFileError(f"{p} has corrupt TFLite metadata ({e}): {_FIX}") from None
