"""ONNX converters: float32 with tf2onnx, static int8 (QDQ) with onnxruntime's quantize_static.

NOTES-deps compared the int8 routes: from_tflite keeps int8 I/O with a generated input name, while
quantize_static (QDQ, per-channel) keeps float I/O and was faster under onnxruntime, so it is used here.
write_metadata_props() labels the result (export.run calls it before the parity gate).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from contracts.manifest import package_versions
from export.model_info import ModelInfo

INPUT_NAME = "image"
OPSET = 17


def convert_fp32(model, calibration: np.ndarray, path: Path, onnx_opset: int = OPSET) -> None:
    import tf2onnx

    size = model.input_shape[1]
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=onnx_opset, output_path=str(path))


class _Calibration:
    """onnxruntime CalibrationDataReader over uint8 images."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._it = iter(images)
        self._name = input_name

    def get_next(self):
        img = next(self._it, None)
        return None if img is None else {self._name: img[None].astype(np.float32)}


def convert_int8(model, calibration: np.ndarray, path: Path, onnx_opset: int = OPSET) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        convert_fp32(model, calibration, fp32, onnx_opset)
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph optimization (needs sympy)
        quantize_static(
            str(pre), str(path), _Calibration(calibration, INPUT_NAME), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip


def metadata_props(info: ModelInfo, input_dtype: str, quantized: bool) -> dict[str, str]:
    """The metadata_props an .onnx carries: what a tool without the manifest needs, each value a string (JSON for
    lists and the preprocessing). mean/std are the TFLite NormalizationOptions' (feed (pixel - mean) / std)."""
    versions = package_versions(["tf2onnx", "onnxruntime"] if quantized else ["tf2onnx"])
    made_with = ", ".join(f"{k} {v}" for k, v in versions.items())
    return {
        "name": info.name, "description": info.description, "version": info.version,
        "labels": json.dumps(info.labels), "image_size": str(info.image_size),
        "input_shape": json.dumps([1, info.image_size, info.image_size, 3]), "layout": info.preprocessing.layout,
        "input_dtype": input_dtype, "color_order": info.preprocessing.color_order,
        "input_range": json.dumps(info.preprocessing.input_range), "mean": json.dumps(info.mean),
        "std": json.dumps(info.std), "preprocessing": json.dumps(asdict(info.preprocessing)),
        "producer": f"{info.producer} ({made_with})" if made_with else info.producer,
    }  # fmt: skip


def write_metadata_props(path: Path, info: ModelInfo) -> None:
    """Rewrites the .onnx at `path` with metadata_props() (replacing keys it had, keeping the others)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    dtype = onnx.helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type).name
    props.update(metadata_props(info, dtype, quantized=any(n.op_type == "QuantizeLinear" for n in model.graph.node)))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def labels_in(path: Path) -> list[str] | None:
    """The labels an .onnx's metadata_props list (write_metadata_props), or None when it lists none."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        labels = json.loads(props["labels"])
    except (KeyError, json.JSONDecodeError):
        return None
    return labels if isinstance(labels, list) else None
