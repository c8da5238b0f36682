"""Quantization-aware training: wrap the fine-tuned float model with tfmot fake-quantization.

The recipe that works with a Rescaling layer (NOTES-deps, "What QAT of MobileNetV2 ... needed"):
annotate every layer through clone_model, give Rescaling a config that quantizes only its output,
give the augmentation layers (identity at inference, train.augment's included) a config that quantizes nothing,
then quantize_apply.

tfmot starts every quantizer range at +-6 and moves activation ranges by an EMA with decay 0.999, so on a
small dataset the QAT model starts far from the float model and its first epochs re-learn the task instead of
fine-tuning it. calibrate_ranges() therefore sets every range from the float model before the first step,
the way post-training quantization would: QAT then starts where float ended.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from train.augment import LAYERS as CAMERA_LAYERS
from train.model import AUGMENT_PREFIX, PREPROCESS_NAME

_qk = tfmot.quantization.keras


class NoOpQuantizeConfig(_qk.QuantizeConfig):
    """Quantizes nothing: for augmentation layers, which are the identity once deployed."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class OutputQuantizeConfig(NoOpQuantizeConfig):
    """No weights; the output gets an 8-bit asymmetric moving-average quantizer (for Rescaling)."""

    def get_output_quantizers(self, layer):
        return [_qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]


# tfmot (de)serializes the layers it wraps in the legacy format, by bare class name, which Keras' registry of
# train.augment's layers (by "package>name") does not answer: they are named here.
CUSTOM_OBJECTS = {"NoOpQuantizeConfig": NoOpQuantizeConfig, "OutputQuantizeConfig": OutputQuantizeConfig,
                  **{cls.__name__: cls for cls in CAMERA_LAYERS.values()}}  # fmt: skip


def _annotate(layer):
    if layer.name.startswith(AUGMENT_PREFIX):
        return _qk.quantize_annotate_layer(layer, quantize_config=NoOpQuantizeConfig())
    if isinstance(layer, keras.layers.Rescaling):
        return _qk.quantize_annotate_layer(layer, quantize_config=OutputQuantizeConfig())
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    return _qk.quantize_annotate_layer(layer)


def quantize_model(model: keras.Model, freeze_batchnorm: bool = False) -> keras.Model:
    """The QAT twin of a float model, starting from its weights (compile it before training).

    Args:
        model: the fine-tuned float model.
        freeze_batchnorm: keep BatchNormalization in inference mode, as in fine-tuning a pretrained
            backbone (small batches would otherwise overwrite its statistics).
    """
    for layer in model.layers:  # QAT fine-tunes the whole network; the fixed preprocessing stays fixed
        frozen_bn = freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name != PREPROCESS_NAME and not frozen_bn
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    with _qk.quantize_scope(CUSTOM_OBJECTS):
        return _qk.quantize_apply(annotated)


def save_qat_model(model: keras.Model, path: str | Path) -> None:
    """HDF5: the .keras format cannot reload tfmot's QuantizeLayer variables in tf-keras 2.21."""
    model.save(str(path), include_optimizer=False, save_format="h5")


def load_qat_model(path: str | Path) -> keras.Model:
    with _qk.quantize_scope(CUSTOM_OBJECTS):
        return keras.models.load_model(str(path), compile=False)


def _range_targets(qat: keras.Model, float_model: keras.Model) -> list[tuple[dict, object, str]]:
    """(quantizer variables, float layer, what it sees) for every activation range in the QAT model.

    What it sees is "input" (the model input, for tfmot's QuantizeLayer), "output" (the float layer's output,
    for output and post-activation quantizers) or "pre_activation" (the layer's output before its activation,
    e.g. the logits before softmax).
    """
    float_layers = {layer.name: layer for layer in float_model.layers}
    targets = []
    for layer in qat.layers:
        if isinstance(layer, _qk.QuantizeWrapper):
            src = float_layers.get(layer.layer.name)
            if src is None:
                continue  # a layer tfmot added: its range is left to training
            if getattr(layer, "_output_quantizers", None):
                targets.append((layer._output_quantizer_vars, src, "output"))
            for act in layer._quantize_activations:
                if hasattr(act, "_pre_activation_vars"):
                    targets.append((act._pre_activation_vars, src, "pre_activation"))
                if hasattr(act, "_post_activation_vars"):
                    targets.append((act._post_activation_vars, src, "output"))
        elif getattr(layer, "quantizer", None) is not None and hasattr(layer, "quantizer_vars"):
            targets.append((layer.quantizer_vars, None, "input"))
    return targets


def _pre_activation(layer, x):
    """The layer's output with its activation replaced by the identity (its own weights, eager)."""
    act = layer.activation
    layer.activation = keras.activations.linear
    try:
        return layer(x, training=False)
    finally:
        layer.activation = act


def calibrate_ranges(
    qat: keras.Model, float_model: keras.Model, images: np.ndarray, batch_size: int = 32, method: str = "minmax"
) -> int:
    """Sets every quantizer range of a fresh QAT model from the float model, before any QAT step.

    Weight ranges are set by the weight quantizers themselves (tfmot's last-value rule, per channel where the
    quantizer is). Activation ranges come from the float model's tensor on the calibration images, with 0
    included: by default its min and max over all of them, as TFLite's post-training calibration takes them, so
    the QAT model starts as close to float as post-training int8 does; method="ema" takes instead the mean over
    batches of each batch's min and max, the value tfmot's moving average converges to (it clips the tails: on a
    digits transfer run it agreed with float on 0.933-0.948 of val against 0.944 for min/max).

    Args:
        qat: the model returned by quantize_model(), not yet trained.
        float_model: the float model it was made from.
        images: calibration images, uint8 or float 0-255 RGB (N x S x S x 3), e.g. a few hundred training images.
        batch_size: images per calibration batch (the EMA's fixed point depends on it, as in training).
        method: "minmax" or "ema" (see above).

    Returns:
        The number of quantizer ranges set.
    """
    n = 0
    for layer in qat.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", []):
            quantizer(weight, True, weights=qvars)  # training=True assigns the range from the weight itself
            n += 1
    targets = _range_targets(qat, float_model)
    pre_layers = list({id(src): src for _, src, kind in targets if kind == "pre_activation"}.values())
    tensors = {"input": float_model.input}
    for _, src, kind in targets:
        if kind == "output":
            tensors[src.name] = src.output
    for src in pre_layers:
        tensors["in:" + src.name] = src.input
    keys = list(tensors)
    probe = keras.Model(float_model.input, [tensors[k] for k in keys])

    @tf.function
    def extremes(x):
        outs = probe(x, training=False)
        outs = dict(zip(keys, outs if isinstance(outs, (list, tuple)) else [outs]))
        for src in pre_layers:
            outs["pre:" + src.name] = _pre_activation(src, outs["in:" + src.name])
        return {k: (tf.reduce_min(v), tf.reduce_max(v)) for k, v in outs.items() if not k.startswith("in:")}

    seen: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(np.asarray(images[i : i + batch_size], np.float32))
        for k, (lo, hi) in extremes(x).items():
            seen.setdefault(k, []).append((min(float(lo), 0.0), max(float(hi), 0.0)))
    if not seen:
        raise ValueError("calibrate_ranges() needs at least one calibration image")
    for qvars, src, kind in targets:
        key = {
            "input": "input",
            "output": getattr(src, "name", ""),
            "pre_activation": "pre:" + getattr(src, "name", ""),
        }
        ext = np.array(seen[key[kind]])
        lo, hi = (ext[:, 0].min(), ext[:, 1].max()) if method == "minmax" else ext.mean(0)
        for var, value in ((qvars["min_var"], lo), (qvars["max_var"], hi)):
            var.assign(np.full(var.shape, value, dtype=var.dtype.as_numpy_dtype))
        n += 1
    return n
