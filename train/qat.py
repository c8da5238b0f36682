"""Quantization-aware training: wrap the fine-tuned float model with tfmot fake-quantization.

The recipe that works with a Rescaling layer (NOTES-deps, "What QAT of MobileNetV2 ... needed"):
annotate every layer through clone_model, give Rescaling a config that quantizes only its output,
give the augmentation layers (identity at inference) a config that quantizes nothing, then quantize_apply.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_model_optimization as tfmot
import tf_keras as keras

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


CUSTOM_OBJECTS = {"NoOpQuantizeConfig": NoOpQuantizeConfig, "OutputQuantizeConfig": OutputQuantizeConfig}


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
