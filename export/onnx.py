"""ONNX converters: float32 with tf2onnx, static int8 (QDQ) with onnxruntime's quantize_static.

NOTES-deps compared the int8 routes: from_tflite keeps int8 I/O with a generated input name, while
quantize_static (QDQ, per-channel) keeps float I/O and was faster under onnxruntime, so it is used here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

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
