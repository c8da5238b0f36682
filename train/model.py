"""build_model(): one flat functional model, raw RGB pixels in, class probabilities out.

Augmentation (training only: geometric here, camera conditions in train.augment) and the backbone's preprocessing
are layers inside the model, so every exported artifact takes plain 0-255 RGB pixels, and
tensorflow-model-optimization can quantize it (it refuses nested models, NOTES-deps item 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tf_keras as keras

from contracts.console import first_line
from train.augment import CameraAugment, camera_layers
from train.settings import SettingsError

AUGMENT_PREFIX = "augment_"
HEAD_PREFIX = "head_"
PREPROCESS_NAME = "preprocess"
# ImageNet channel means (BGR) that VGG16's "caffe" preprocessing subtracts.
_VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_DEFAULT_FINE_TUNE_FROM = {"mobilenetv2": "100", "vgg16": "block5_conv1"}


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be fetched (no internet, blocked, corrupt cache)."""


def _augmentation(x, flip: bool, camera: dict[str, float], camera_fraction: float):
    """Geometric layers, then the camera-condition ones (train.augment); all of them are training-only."""
    L = keras.layers
    if flip:
        x = L.RandomFlip("horizontal", name=AUGMENT_PREFIX + "flip")(x)
    x = L.RandomRotation(0.05, fill_mode="nearest", name=AUGMENT_PREFIX + "rotation")(x)
    x = L.RandomZoom(0.1, fill_mode="nearest", name=AUGMENT_PREFIX + "zoom")(x)
    x = L.RandomTranslation(0.1, 0.1, fill_mode="nearest", name=AUGMENT_PREFIX + "translation")(x)
    for layer in camera_layers(camera, camera_fraction, AUGMENT_PREFIX):
        x = layer(x)
    return x


def _vgg_preprocess(x):
    """VGG16's caffe preprocessing (RGB->BGR, minus the ImageNet mean) as a fixed 1x1 convolution.

    A convolution rather than a Lambda, so it serializes, converts to TFLite/ONNX and quantizes.
    """
    conv = keras.layers.Conv2D(3, 1, name=PREPROCESS_NAME, trainable=False)
    y = conv(x)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_c, in_c in enumerate((2, 1, 0)):
        kernel[0, 0, in_c, out_c] = 1.0
    conv.set_weights([kernel, -_VGG_MEAN_BGR])
    return y


def _backbone(x, backbone: str, image_size: int, alpha: float, weights):
    shape = (image_size, image_size, 3)
    if backbone == "mobilenetv2":
        return keras.applications.MobileNetV2(
            input_tensor=x, input_shape=shape, include_top=False, weights=weights, alpha=alpha
        )
    return keras.applications.VGG16(input_tensor=x, input_shape=shape, include_top=False, weights=weights)


def build_model(
    num_classes: int,
    image_size: int,
    backbone: str = "mobilenetv2",
    alpha: float = 1.0,
    weights: str = "none",
    dropout: float = 0.2,
    augment: bool = True,
    flip: bool = True,
    bn_momentum: float = 0.9,
    camera: dict[str, float] | None = None,
    camera_fraction: float = 0.2,
) -> keras.Model:
    """Builds the classifier.

    Args:
        num_classes: size of the softmax head.
        image_size: square input side in pixels.
        backbone: "mobilenetv2" or "vgg16".
        alpha: MobileNetV2 width multiplier (ignored for VGG16).
        weights: "imagenet", "none", or the path of a local .h5 weights file for the backbone.
        dropout: dropout rate before the head.
        augment: add the training-only augmentation layers.
        flip: include horizontal flips in the augmentation.
        camera: camera-condition strength per kind of train.augment.KINDS (0 or missing: no layer); None: none.
        camera_fraction: the share of each batch's images each camera-condition layer changes.
        bn_momentum: BatchNormalization momentum (keras.applications' 0.999 is too slow for short runs).

    Returns:
        A flat tf-keras functional model: float32 RGB 0-255 (N, S, S, 3) -> probabilities (N, classes).

    Raises:
        WeightsUnavailable: "imagenet" weights could not be downloaded.
        FileNotFoundError: a weights path that does not exist.
    """
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file; pass imagenet, none, or a local .h5 file")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _augmentation(inputs, flip, camera or {}, camera_fraction) if augment else inputs
    if backbone == "mobilenetv2":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=PREPROCESS_NAME)(x)  # to MobileNetV2's [-1, 1]
    else:
        x = _vgg_preprocess(x)
    keras_weights = None if weights == "none" else weights
    try:
        base = _backbone(x, backbone, image_size, alpha, keras_weights)
    except Exception as e:  # keras raises URLError/HTTPError/OSError/ValueError when the download fails
        if keras_weights not in (None, "imagenet"):
            raise SettingsError(
                f"--weights {weights} does not fit {backbone} (alpha {alpha:g}) at {image_size}x{image_size}: "
                f"{first_line(e)}; "
                "pass the --backbone and --alpha the file was saved with"
            ) from None
        if weights != "imagenet":
            raise
        raise WeightsUnavailable(f"{type(e).__name__}: {first_line(e)}") from e
    y = keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "pool")(base.output)
    y = keras.layers.Dropout(dropout, name=HEAD_PREFIX + "dropout")(y)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_PREFIX + "probs")(y)
    model = keras.Model(inputs, outputs, name=f"{backbone}_classifier")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model


def without_camera_layers(model: keras.Model) -> keras.Model:
    """The same model with the same weights, less train.augment's layers (the identity at inference).

    model_float.keras is saved this way: tf-keras finds the layers of a functional model by class name alone (the
    module saved with them is not imported), so a file holding them would load only where train.augment had been
    imported first; without them, export, the benchmarks and anyone's own script load it with a plain load_model.
    """
    camera = {layer.name for layer in model.layers if isinstance(layer, CameraAugment)}
    if not camera:
        return model
    config = model.get_config()
    source = {e["name"]: e["inbound_nodes"][0][0][0] for e in config["layers"] if e["name"] in camera}
    config["layers"] = [e for e in config["layers"] if e["name"] not in camera]
    for entry in config["layers"]:
        for node in entry["inbound_nodes"]:
            for inbound in node:
                while inbound[0] in source:
                    inbound[0] = source[inbound[0]]
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def backbone_layers(model: keras.Model) -> list:
    """The backbone's layers, in order: everything but input, augmentation, preprocessing and head."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not layer.name.startswith((AUGMENT_PREFIX, HEAD_PREFIX))
        and layer.name != PREPROCESS_NAME
    ]


def set_trainable(model: keras.Model, phase: str, backbone: str, fine_tune_from: str = "", pretrained: bool = True):
    """Sets which layers train in a phase ("head", "fine_tune" or "all").

    In fine-tuning, BatchNormalization layers stay frozen, which in tf-keras also runs them in inference
    mode, so the small new batches do not wreck the statistics learned on ImageNet.

    Returns:
        A one-line description of what trains, for the log.
    """
    layers = backbone_layers(model)
    for layer in model.layers:
        layer.trainable = True
    model.get_layer(PREPROCESS_NAME).trainable = False
    if phase == "all" or not pretrained:
        return f"whole network trains ({sum(1 for _ in layers)} backbone layers)"
    if phase == "head":
        for layer in layers:
            layer.trainable = False
        return "backbone frozen, head trains"
    start = fine_tune_from or _DEFAULT_FINE_TUNE_FROM[backbone]
    names = [layer.name for layer in layers]
    if start.isdigit():
        idx = int(start)
    elif start in names:
        idx = names.index(start)
    else:
        raise SettingsError(
            f"--fine-tune-from {start!r} is not a layer of {backbone}: give an index or a name like {names[-10]}"
        )
    idx = min(idx, len(layers) - 1)
    for i, layer in enumerate(layers):
        layer.trainable = i >= idx and not isinstance(layer, keras.layers.BatchNormalization)
    return f"backbone layers {idx}-{len(layers) - 1} of {len(layers)} train (from {names[idx]}), BatchNorm frozen"
