"""Backbone weights files: check one before any data is loaded, and name the ImageNet files Keras looks for.

An air-gapped machine gets ImageNet transfer learning either with `--weights FILE` or by placing the file where
Keras caches its downloads (`imagenet_cache_path()`), under the exact name `imagenet_file_name()` gives.
"""

from __future__ import annotations

import os
from pathlib import Path

from contracts.console import first_line
from train.settings import SettingsError

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the widths Keras publishes ImageNet weights for
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)  # the input sizes it publishes (any other size loads the 224 file)
MOBILENET_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
VGG16_NO_TOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNetV2's channel rounding (keras.applications.mobilenet_v2._make_divisible)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v2_width(alpha: float) -> int:
    """Filters of block_16_project, the last inverted-residual block: 320 x alpha, rounded as MobileNetV2 does."""
    return _make_divisible(320 * alpha)


def imagenet_file_name(backbone: str, alpha: float, image_size: int) -> str:
    """The no-top ImageNet file Keras downloads for this backbone, width and input size."""
    if backbone == "vgg16":
        return VGG16_NO_TOP
    rows = image_size if image_size in MOBILENET_V2_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def imagenet_cache_path(backbone: str, alpha: float, image_size: int) -> Path:
    """Where Keras looks for that file before downloading it (KERAS_HOME, else ~/.keras, then models/)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / imagenet_file_name(backbone, alpha, image_size)


def _alpha_of(width: int) -> str:
    fits = [a for a in MOBILENET_V2_ALPHAS if mobilenet_v2_width(a) == width]
    return f"{fits[0]:g}" if fits else f"{width / 320:.3g} (block_16_project has {width} filters)"


def check_weights_file(path: str | Path, backbone: str, alpha: float) -> str:
    """Checks that a weights file is a Keras no-top backbone file of this backbone and width.

    Returns:
        A short description for the log, e.g. "MobileNetV2 alpha 0.35 no-top weights, 260 layers".

    Raises:
        SettingsError: one line naming the file and what fits: missing, empty, not HDF5, truncated, a full model
            with its classifier top, another backbone, or another width ("it holds alpha 1.0: pass --alpha 1.0").
    """
    import h5py

    p = Path(path)
    flag = f"--weights {p}"
    if not p.is_file():
        raise SettingsError(f"{flag}: no such file; pass imagenet, none, or a local Keras .h5 weights file")
    if p.stat().st_size == 0:
        raise SettingsError(f"{flag} is an empty file; download or copy the weights file again")
    if not h5py.is_hdf5(str(p)):
        raise SettingsError(f"{flag} is not an HDF5 file; pass a Keras no-top .h5 weights file such as "
                            f"{imagenet_file_name(backbone, alpha or 1.0, 224)}")  # fmt: skip
    try:
        with h5py.File(p, "r") as f:
            g = f.get("model_weights", f)  # a whole saved model keeps its weights there
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("layer_names", [])]
            shapes = {}
            for n in ("block_16_project", "predictions", "block5_conv3"):
                if n in g and "weight_names" in g[n].attrs and len(g[n].attrs["weight_names"]):
                    w = g[n].attrs["weight_names"][0]
                    shapes[n] = g[n][w.decode() if isinstance(w, bytes) else w].shape
    except (OSError, KeyError, ValueError) as e:
        raise SettingsError(f"{flag} is truncated or corrupt ({first_line(e)}); copy the file again") from None
    if not names:
        raise SettingsError(f"{flag} holds no Keras layer weights; pass a file written by model.save_weights() "
                            "or a Keras applications no-top file")  # fmt: skip
    if "predictions" in names or any(n.startswith("head_") for n in names):
        no_top = imagenet_file_name(backbone, alpha or 1.0, 224)
        raise SettingsError(f"{flag} holds a whole classifier (with its top), not a backbone; pass the no-top "
                            f"file ({no_top}), or save the backbone alone")  # fmt: skip
    if backbone == "vgg16":
        if "block5_conv3" not in names:
            raise SettingsError(f"{flag} does not hold VGG16 weights (no block5_conv3 layer); pass {VGG16_NO_TOP}")
        return f"VGG16 no-top weights, {len(names)} layers"
    if "block_16_project" not in shapes:
        held = "VGG16" if "block5_conv3" in names else "no MobileNetV2 backbone"
        raise SettingsError(f"{flag} holds {held} weights (no block_16_project layer); pass a MobileNetV2 no-top "
                            "file, or --backbone vgg16 for a VGG16 file")  # fmt: skip
    width = int(shapes["block_16_project"][-1])
    if width != mobilenet_v2_width(alpha):
        held = _alpha_of(width)
        raise SettingsError(f"{flag} holds MobileNetV2 alpha {held} weights, not alpha {alpha:g}: pass --alpha "
                            f"{held.split()[0]}, or a file made for alpha {alpha:g}")  # fmt: skip
    return f"MobileNetV2 alpha {alpha:g} no-top weights, {len(names)} layers"
