"""TFLite converters, one per format in contracts.formats (float32, float16, dynamic range, int8 PTQ, int8 QAT).

Each takes the Keras model, calibration images (uint8 RGB, N x S x S x 3) and the path to write. The full-integer
formats take uint8 pixels and give uint8 probabilities around int8 internals: the image types MediaPipe Tasks and
the TFLite Support library accept (they refuse int8), and pixels fit uint8 exactly (scale 1, zero point 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from export.errors import ExportError
from export.tflite_metadata import pack_model, unpack_model

PIXEL_QUANTIZATION = (1.0, 0)  # uint8 input: real = 1.0 * (q - 0), the raw pixel


def _converter(model) -> tf.lite.TFLiteConverter:
    return tf.lite.TFLiteConverter.from_keras_model(model)


def representative_dataset(images: np.ndarray):
    """A TFLite representative dataset: each uint8 image as a float32 batch of one."""

    def gen():
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


def _write(converter, path: Path) -> None:
    Path(path).write_bytes(converter.convert())


def convert_fp32(model, calibration: np.ndarray, path: Path) -> None:
    _write(_converter(model), path)


def convert_fp16(model, calibration: np.ndarray, path: Path) -> None:
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]
    _write(c, path)


def convert_dynamic(model, calibration: np.ndarray, path: Path) -> None:
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: int8 weights, float activations
    _write(c, path)


def int8_converter(model, calibration: np.ndarray, per_channel: bool = True, int8_only: bool = True):
    """A full-integer converter with uint8 input and output, calibrated on `calibration` (uint8 RGB images).

    int8-only ops make conversion fail loudly instead of silently keeping float ops or a float input
    (NOTES-deps items 8-9); the representative dataset is required for full integer quantization.
    int8_only=False lets selective quantization keep some ops in float; per_channel=False uses one scale per
    weight tensor (export.int8_compare measures what each is worth). The converter adds a QUANTIZE op after the
    uint8 input and after the int8 output; int8_model() turns its output into the published bytes.
    """
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative_dataset(calibration)
    if int8_only:
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.uint8
    c.inference_output_type = tf.uint8
    if not per_channel:
        c._experimental_disable_per_channel = True  # the converter's own switch (no public API for it)
    return c


def pin_pixel_input(model_bytes: bytes) -> bytes:
    """A full-integer model whose uint8 input is quantized as raw pixels (scale 1, zero point 0).

    The converter gives the input the range the calibration images span: 0-255 when one of them has a 255 pixel,
    else a narrower one, and MediaPipe feeds raw pixels whatever the tensor says. The input's only consumer is the
    QUANTIZE op into the int8 graph, which requantizes from whatever the input's parameters are, so stating the
    pixel range there changes nothing else (pixels above the calibrated range clip in int8, as before).

    Raises:
        ExportError: the input is not uint8, or something other than a QUANTIZE op reads it.
    """
    from tensorflow.lite.python.schema_py_generated import BuiltinOperator, TensorType

    model = unpack_model(model_bytes)
    sg = model.subgraphs[0]
    tensor = sg.tensors[sg.inputs[0]]
    q = tensor.quantization
    if tensor.type != TensorType.UINT8 or q is None or q.scale is None or len(q.scale) != 1:
        raise ExportError("the int8 converter made an input that is not per-tensor uint8: check int8_converter")
    if (float(q.scale[0]), int(q.zeroPoint[0])) == PIXEL_QUANTIZATION:
        return model_bytes
    readers = [op for op in sg.operators if sg.inputs[0] in list(op.inputs)]
    codes = [model.operatorCodes[op.opcodeIndex] for op in readers]
    if not readers or any(max(c.builtinCode, c.deprecatedBuiltinCode) != BuiltinOperator.QUANTIZE for c in codes):
        raise ExportError("the int8 model's uint8 input feeds something other than a QUANTIZE op: its range "
                          f"{q.scale[0]:.6g} x (q - {q.zeroPoint[0]}) cannot be restated as raw pixels")  # fmt: skip
    q.scale, q.zeroPoint = [PIXEL_QUANTIZATION[0]], [PIXEL_QUANTIZATION[1]]
    q.min, q.max = ([0.0], [255.0]) if q.min is not None else (None, None)
    return pack_model(model)


def int8_model(converter) -> bytes:
    """The published bytes of a full-integer converter (int8_converter): converted, input pinned to raw pixels."""
    return pin_pixel_input(converter.convert())


def convert_int8(model, calibration: np.ndarray, path: Path) -> None:
    """Post-training full-integer quantization of the float model."""
    Path(path).write_bytes(int8_model(int8_converter(model, calibration)))


def convert_int8_qat(model, calibration: np.ndarray, path: Path) -> None:
    """Full-integer model from the QAT model: ranges come from training, calibration only fills the input."""
    Path(path).write_bytes(int8_model(int8_converter(model, calibration)))
