"""The manifest's preprocessing, read from the model itself.

train.model puts the backbone's normalization inside the model, as a layer named train.model.PREPROCESS_NAME
(MobileNetV2: Rescaling to [-1, 1]; VGG16: a fixed 1x1 convolution, RGB to BGR minus the ImageNet means), so every
artifact takes plain 0-255 RGB pixels. preprocessing_of() states what that layer really does, from its config and
weights, so the manifest cannot claim a normalization the artifacts do not apply.
"""

from __future__ import annotations

import numpy as np

from contracts.manifest import Preprocessing
from export.errors import ExportError

INPUT_RANGE = [0.0, 255.0]  # what train.model's models take: raw pixels, the layer below normalizes them
_FIX = "export a model made by `python -m train` (its normalization is a layer inside the model)"


def _num(x) -> str:
    """A scale, offset or mean as a person reads it: 1/127.5 rather than 0.00784314, lists element by element."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_num(v) for v in np.asarray(x, dtype=float).ravel()) + "]"
    x = float(x)
    if x and abs(x) < 1 and float(f"{1 / x:g}") == 1 / x:
        return f"1/{1 / x:g}"
    return f"{x:g}"


def _rescaling(layer) -> str:
    cfg = layer.get_config()
    scale, offset = cfg["scale"], cfg["offset"]
    lo, hi = (np.asarray(offset) + np.asarray(scale) * v for v in INPUT_RANGE)
    return (f"inside the model (Rescaling {_num(scale)}, offset {_num(offset)}: 0-255 becomes "
            f"[{_num(np.min(lo))}, {_num(np.max(hi))}])")  # fmt: skip


def _channel_conv(layer, where: str) -> str:
    """A fixed 1x1 convolution that permutes the channels and subtracts a mean (VGG16's "caffe" preprocessing)."""
    weights = layer.get_weights()
    kernel = weights[0]
    if kernel.shape != (1, 1, 3, 3) or len(weights) != 2:
        raise ExportError(f"{where}: its {layer.name!r} layer is a convolution of kernel {kernel.shape}, not the fixed "
                          f"1x1 channel mapping train builds: {_FIX}")  # fmt: skip
    k = kernel[0, 0]  # (in, out)
    if not (np.isin(k, (0.0, 1.0)).all() and (k.sum(0) == 1).all() and (k.sum(1) == 1).all()):
        raise ExportError(f"{where}: its {layer.name!r} convolution mixes channels, not only reorders them: {_FIX}")
    order = "".join("RGB"[int(np.argmax(k[:, out]))] for out in range(3))
    return f"inside the model (fixed 1x1 convolution: RGB to {order}, minus the means {_num(-weights[1])})"


def preprocessing_of(model, where: str = "the model") -> Preprocessing:
    """The preprocessing contract of a model built by train.model.build_model, read from its preprocessing layer.

    Args:
        model: the float Keras model of a run.
        where: what to call it in messages (its file).

    Returns:
        Preprocessing with the model's color order and input range, and its normalization as the layer does it,
        e.g. "inside the model (Rescaling 1/127.5, offset -1: 0-255 becomes [-1, 1])".

    Raises:
        ExportError: the model takes no NHWC RGB input, has no preprocessing layer, or has one of a kind that is
            not train's.
    """
    import tf_keras as keras

    from train.model import PREPROCESS_NAME

    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ExportError(f"{where} takes input of shape {shape}, not NHWC RGB images: {_FIX}")
    try:
        layer = model.get_layer(PREPROCESS_NAME)
    except ValueError:
        raise ExportError(f"{where} has no {PREPROCESS_NAME!r} layer, so how it normalizes its 0-255 RGB input is "
                          f"unknown: {_FIX}") from None  # fmt: skip
    if isinstance(layer, keras.layers.Rescaling):
        normalization = _rescaling(layer)
    elif isinstance(layer, keras.layers.Conv2D):
        normalization = _channel_conv(layer, where)
    else:
        raise ExportError(f"{where}: its {PREPROCESS_NAME!r} layer is a {type(layer).__name__}, neither the "
                          f"Rescaling nor the 1x1 convolution train builds: {_FIX}")  # fmt: skip
    return Preprocessing(color_order="RGB", input_range=list(INPUT_RANGE), layout="NHWC", normalization=normalization)
