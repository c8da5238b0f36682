"""python -m train.pretrain: a pretrained MobileNetV2 backbone made offline, for machines that cannot download ImageNet.

python -m train.pretrain --alpha 0.35 --image-size 96            # ~/.cache/edge-toolkit/backbones/fashion-...h5
python -m train --weights ~/.cache/edge-toolkit/backbones/fashion-mnist-mobilenetv2-a0.35-s96-n20000-e6-HASH.h5 ...

The backbone is trained on Fashion-MNIST (70,000 real product photos, 10 classes; Debian's
`dataset-fashion-mnist` package holds the original idx files), a different task from the one it is then
transferred to. It is saved exactly as Keras saves its ImageNet no-top weights, so `python -m train --weights FILE`
takes it as it would take the ImageNet file. It is no substitute for ImageNet features on real photos; it exists so
that the transfer path (frozen backbone, fine-tuning, QAT, int8) is exercised and measured from real pretrained
weights where ImageNet cannot be had. The file is cached by its recipe: asking again returns it without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.atomic import atomic_path, write_json
from contracts.console import log

FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts the idx files
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


class PretrainError(RuntimeError):
    """The pretraining data is missing or unreadable; the message says how to get it."""


@dataclass(frozen=True)
class PretrainSettings:
    """One recipe for an offline backbone; every field but source_dir and cache_dir names the cached file."""

    alpha: float = 0.35  # MobileNetV2 width the backbone is made for (a weights file fits one width only)
    image_size: int = 96  # side the backbone trains at; the weights fit any size, features are best near this one
    images: int = 20_000  # Fashion-MNIST training images used (of 60,000): about 2 min an epoch at 96 px on 2 cores
    epochs: int = 6  # whole-network epochs from random init
    batch_size: int = 64
    learning_rate: float = 2e-3  # Adam; the network trains from scratch, so the usual 1e-3 or a little more
    seed: int = 1337
    source_dir: str = FASHION_DIR  # folder holding the four Fashion-MNIST idx .gz files
    cache_dir: str = ""  # "" = ~/.cache/edge-toolkit/backbones

    @property
    def name(self) -> str:
        return (
            f"fashion-mnist-mobilenetv2-a{self.alpha:g}-s{self.image_size}-n{self.images}-e{self.epochs}"
            f"-{self.recipe_sha256()[:8]}"
        )

    def recipe_sha256(self) -> str:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("source_dir", "cache_dir")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def path(self) -> Path:
        root = Path(self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "edge-toolkit", "backbones"))
        return root / f"{self.name}.h5"


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: big-endian magic, dims, then uint8 data) as a numpy array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PretrainError(f"{path} is not a readable gzip idx file ({e}); reinstall dataset-fashion-mnist") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PretrainError(f"{path} is not an unsigned-byte idx file; reinstall dataset-fashion-mnist")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise PretrainError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} values); reinstall the package")
    return data.reshape(dims)


def load_fashion_mnist(split: str, source_dir: str = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N x 28 x 28 uint8, dark background) and labels of "train" or "test".

    Raises:
        PretrainError: the files are missing (the message gives the apt command) or unreadable.
    """
    root = Path(source_dir)
    paths = [root / f for f in FASHION_FILES[split]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PretrainError(
            f"{missing[0]} not found: install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or pass --source-dir to a folder holding the four original idx .gz files"
        )
    images, labels = (_read_idx(p) for p in paths)
    if images.ndim != 3 or len(images) != len(labels):
        raise PretrainError(f"{paths[0]} and {paths[1]} do not match ({images.shape} images, {labels.shape} labels)")
    return images, labels.astype(np.int64)


def _to_rgb(gray: np.ndarray, size: int) -> np.ndarray:
    from contracts.preprocess import resize_rgb

    return np.stack([resize_rgb(np.repeat(g[..., None], 3, axis=2), size) for g in gray])


def _stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(idx)


def pretrain_backbone(s: PretrainSettings, force: bool = False) -> Path:
    """Trains (or finds in the cache) a MobileNetV2 no-top backbone on Fashion-MNIST; returns its .h5 path.

    Beside it, NAME.json records the recipe, the Fashion-MNIST test top-1 the full network reached, and the time.

    Raises:
        PretrainError: Fashion-MNIST is not installed or is unreadable.
    """
    out = s.path()
    if out.is_file() and out.with_suffix(".json").is_file() and not force:
        log(f"pretrained backbone: {out} (cached)")
        return out
    x_train, y_train = load_fashion_mnist("train", s.source_dir)
    x_test, y_test = load_fashion_mnist("test", s.source_dir)
    t0 = time.time()
    import tensorflow as tf
    import tf_keras as keras

    from train.model import HEAD_PREFIX, build_model

    keras.utils.set_random_seed(s.seed)
    idx = _stratified(y_train, s.images, s.seed)
    train = _to_rgb(x_train[idx], s.image_size)
    test_idx = _stratified(y_test, max(1000, s.images // 10), s.seed)
    test = _to_rgb(x_test[test_idx], s.image_size)
    log(f"pretraining MobileNetV2 a{s.alpha:g} at {s.image_size} px on {len(train)} Fashion-MNIST images, "
         f"{s.epochs} epochs (cached as {out.name})")  # fmt: skip
    # uint8 in the dataset (4x less memory than float32), cast per batch
    ds = (
        tf.data.Dataset.from_tensor_slices((train, y_train[idx]))
        .shuffle(len(train), seed=s.seed)
        .batch(s.batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_model(len(FASHION_CLASSES), s.image_size, alpha=s.alpha, weights="none", flip=True)
    steps = s.epochs * int(np.ceil(len(train) / s.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(s.learning_rate, steps, alpha=0.05)
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds, epochs=s.epochs, verbose=1 if sys.stdout.isatty() else 2)
    probs = model.predict(test.astype(np.float32), batch_size=128, verbose=0)
    top1 = float(np.mean(probs.argmax(1) == y_test[test_idx]))
    log(f"pretrained backbone: Fashion-MNIST test top-1 {top1:.4f} on {len(test)} images, {time.time() - t0:.0f} s")

    # Saved the way Keras saves its ImageNet no-top files, so MobileNetV2(weights=FILE) loads it by topology.
    base = keras.applications.MobileNetV2(
        input_shape=(s.image_size, s.image_size, 3), include_top=False, weights=None, alpha=s.alpha
    )
    for layer in base.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    assert not any(layer.name.startswith(HEAD_PREFIX) for layer in base.layers)
    with atomic_path(out) as tmp:
        base.save_weights(str(tmp))
    write_json(
        out.with_suffix(".json"),
        dict(dataclasses.asdict(s), recipe_sha256=s.recipe_sha256(), task="fashion-mnist",
             fashion_test_top1=round(top1, 4), n_test=len(test), seconds=round(time.time() - t0, 1)),
    )  # fmt: skip
    log(f"pretrained backbone: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    d = PretrainSettings()
    p = argparse.ArgumentParser(prog="python -m train.pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=d.alpha, help="MobileNetV2 width multiplier")
    p.add_argument("--image-size", type=int, default=d.image_size, help="side the backbone trains at")
    p.add_argument("--images", type=int, default=d.images, help="Fashion-MNIST training images to use (max 60000)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--source-dir", default=d.source_dir, help="folder with the four Fashion-MNIST idx .gz files")
    p.add_argument(
        "--cache-dir", default=d.cache_dir, help="where backbones are kept (~/.cache/edge-toolkit/backbones)"
    )
    p.add_argument("--force", action="store_true", help="train again even if the cached file exists")
    args = vars(p.parse_args(argv))
    force = args.pop("force")
    try:
        pretrain_backbone(PretrainSettings(**args), force=force)
    except PretrainError as e:
        print(f"error: {e}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was cached; run the same command again", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
