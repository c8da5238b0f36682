"""write_metadata(): TFLite Support metadata inside a .tflite, so MediaPipe Tasks and the TFLite Support readers run it.

The metadata is a flatbuffer of tensorflow/tflite-support's metadata_schema.fbs (identifier M001), built here with
the `flatbuffers` package (mediapipe's own writer cannot be installed beside TensorFlow: it pins protobuf<5). It goes
into the model as the buffer its "TFLITE_METADATA" entry names (TensorFlow's model schema object API), and the labels
file is zipped onto the end of the model, which is how tflite-support's MetadataPopulator packs associated files.
LiteRT ignores both. contracts.tflite_metadata reads them back.

    write_metadata("runs/NAME/export/tflite_int8.tflite", info)   # info: export.model_info.ModelInfo

What it says: the input is an RGB image whose 0-255 pixels go in as they are (NormalizationOptions mean 0, std 1:
MediaPipe refuses a float input without one, and the normalization is a layer inside the model), and the output's
TENSOR_AXIS_LABELS file is labels.txt.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np

from contracts.tflite_metadata import METADATA_IDENTIFIER, METADATA_NAME
from export.model_info import ModelInfo

LABELS_FILE = "labels.txt"
# metadata_schema.fbs values written here
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION = 1  # ProcessUnitOptions union
_RGB = 1  # ColorSpaceType
_AXIS_LABELS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS
# The oldest metadata parser that reads every field written here. tflite-support's metadata_version.cc starts at
# 1.0.0 and raises it only for fields added later (tokenizers, tensor groups, audio, file versions, custom
# metadata): none of them is written.
MIN_PARSER_VERSION = "1.0.0"


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


class _AlignedBuilder(flatbuffers.Builder):
    """Packs byte vectors (constant buffers) 16-byte aligned, as schema.fbs asks (data: force_align: 16): TensorFlow's
    generated Python Pack() asks for 1, so a repack could leave weights where SIMD loads want them aligned."""

    def StartVector(self, elemSize, numElems, alignment):
        return super().StartVector(elemSize, numElems, 16 if elemSize == 1 else alignment)


def unpack_model(model: bytes):
    """A .tflite's flatbuffer as TensorFlow's schema object API ModelT (anything appended to it is dropped)."""
    return _schema().ModelT.InitFromPackedBuf(bytearray(model), 0)


def pack_model(model) -> bytes:
    """ModelT -> .tflite flatbuffer bytes (TFL3), constant buffers 16-byte aligned."""
    b = _AlignedBuilder(1 << 20)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _table(b: flatbuffers.Builder, n_fields: int, offsets: dict[int, int], bytes_: dict[int, int] | None = None) -> int:
    """A table of `n_fields` slots: uoffset fields (slot -> offset of a string, vector or table) and byte fields."""
    b.StartObject(n_fields)
    for slot, off in offsets.items():
        b.PrependUOffsetTRelativeSlot(slot, off, 0)
    for slot, value in (bytes_ or {}).items():
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _offsets(b: flatbuffers.Builder, items: list[int]) -> int:
    b.StartVector(4, len(items), 4)
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _stats(b: flatbuffers.Builder, lo: float, hi: float) -> int:
    """Stats (max slot 0, min slot 1): the value range, as MediaPipe's metadata writer records it."""
    return _table(b, 2, {0: _floats(b, [hi]), 1: _floats(b, [lo])})


def metadata_buffer(info: ModelInfo, input_type: str, output_type: str) -> bytes:
    """The ModelMetadata flatbuffer (metadata_schema.fbs, field slots in its order) for an image classifier.

    Args:
        info: what the model is (name, description, version, labels, normalization).
        input_type: the input tensor's dtype ("float32" or "uint8"): sets the input's recorded value range.
        output_type: the output tensor's dtype ("float32" or "uint8"): probabilities 0-1, or their 0-255 codes.

    Returns:
        The bytes of the metadata flatbuffer, identifier M001.
    """
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    # Input: TensorMetadata(name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5, files 6)
    image = _table(b, 2, {}, {0: _RGB})  # ImageProperties(color_space 0, default_size 1)
    content = _table(b, 3, {1: image}, {0: _IMAGE_PROPERTIES})  # Content(properties_type 0, properties 1, range 2)
    norm = _table(b, 2, {0: _floats(b, info.mean), 1: _floats(b, info.std)})  # NormalizationOptions(mean, std)
    unit = _table(b, 2, {1: norm}, {0: _NORMALIZATION})  # ProcessUnit(options_type 0, options 1)
    lo, hi = (0.0, 255.0) if input_type == "uint8" else info.preprocessing.input_range  # what the tensor holds
    inp = _table(b, 7, {
        0: s("image"), 1: s(info.input_description(input_type)), 3: content, 4: _offsets(b, [unit]),
        5: _stats(b, lo, hi),
    })  # fmt: skip
    # Output: the probabilities, labelled by the TENSOR_AXIS_LABELS file. AssociatedFile(name 0, description 1, type 2)
    labels = _table(b, 5, {0: s(LABELS_FILE), 1: s("The class names, one a line, in output order.")},
                    {2: _AXIS_LABELS})  # fmt: skip
    features = _table(b, 0, {})  # FeatureProperties: no fields
    out_content = _table(b, 3, {1: features}, {0: _FEATURE_PROPERTIES})
    out = _table(b, 7, {
        0: s("probability"), 1: s(f"Probabilities of the {len(info.labels)} labels in {LABELS_FILE}" +
                                  (" (uint8: probability x 256)" if output_type == "uint8" else "")),
        3: out_content, 5: _stats(b, 0.0, 255.0 if output_type == "uint8" else 1.0), 6: _offsets(b, [labels]),
    })  # fmt: skip
    # SubGraphMetadata(name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3, ...)
    subgraph = _table(b, 4, {0: s("image_classifier"), 2: _offsets(b, [inp]), 3: _offsets(b, [out])})
    # ModelMetadata(name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5, files 6, min_parser 7)
    root = _table(b, 8, {
        0: s(info.name), 1: s(info.description), 2: s(info.version), 3: _offsets(b, [subgraph]), 4: s(info.producer),
        7: s(MIN_PARSER_VERSION),
    })  # fmt: skip
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def add_metadata(model, metadata: bytes) -> None:
    """Puts `metadata` into ModelT `model` as the buffer its TFLITE_METADATA entry names (replacing an older one)."""
    schema = _schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if entry.name in (METADATA_NAME, METADATA_NAME.encode()):
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model with `files` zipped onto its end (stored, not compressed), as tflite-support packs them; dated
    1980-01-01 (zip's first date), so one model and its labels make the same bytes, the same sha256, every time."""
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _dtype(model, tensor_index: int) -> str:
    types = {v: k.lower() for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}
    return types[model.subgraphs[0].tensors[tensor_index].type]


def with_metadata(model_bytes: bytes, info: ModelInfo) -> bytes:
    """A .tflite's bytes with metadata describing it as `info` says, and labels.txt packed onto its end."""
    model = unpack_model(model_bytes)
    sg = model.subgraphs[0]
    meta = metadata_buffer(info, _dtype(model, sg.inputs[0]), _dtype(model, sg.outputs[0]))
    add_metadata(model, meta)
    return append_files(pack_model(model), {LABELS_FILE: "".join(f"{x}\n" for x in info.labels).encode()})


def write_metadata(path: str | Path, info: ModelInfo) -> None:
    """Rewrites the .tflite at `path` with its metadata and labels file (replacing any it had)."""
    p = Path(path)
    p.write_bytes(with_metadata(p.read_bytes(), info))
