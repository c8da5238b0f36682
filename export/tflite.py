"""TFLite converters, one per format in contracts.formats (float32, float16, dynamic range, int8 PTQ, int8 QAT).

Each takes the Keras model, calibration images (uint8 RGB, N x S x S x 3) and the path to write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


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
    """A full-integer converter with int8 input and output, calibrated on `calibration` (uint8 RGB images).

    int8-only ops make conversion fail loudly instead of silently keeping float ops or a float input
    (NOTES-deps items 8-9); the representative dataset is required for full integer quantization.
    int8_only=False lets selective quantization keep some ops in float; per_channel=False uses one scale per
    weight tensor (export.int8_compare measures what each is worth).
    """
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative_dataset(calibration)
    if int8_only:
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    if not per_channel:
        c._experimental_disable_per_channel = True  # the converter's own switch (no public API for it)
    return c


def convert_int8(model, calibration: np.ndarray, path: Path) -> None:
    """Post-training full-integer quantization of the float model."""
    _write(int8_converter(model, calibration), path)


def convert_int8_qat(model, calibration: np.ndarray, path: Path) -> None:
    """Full-integer model from the QAT model: ranges come from training, calibration only fills the input."""
    _write(int8_converter(model, calibration), path)
