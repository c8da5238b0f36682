"""tf.data input pipelines: decode, resize, cache (uint8), shuffle, batch, cast to float32, prefetch.

make_dataset(split, 96, 32, training=True, seed=1337, cache=plan, cache_path=RUN/cache/train)

Images stay uint8 up to the batch: the cache holds 1 byte a pixel, not float32's 4 (121 KB less an image at
96 px, 450 KB at 224), and the shuffle buffer holds uint8 too. Where they are cached is train.cache's plan;
every mode gives the same images in the same order, so the mode never changes what a run learns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from train.cache import CachePlan
from train.data import Split, load_resized

AUTOTUNE = tf.data.AUTOTUNE
# Images in the shuffle buffer (uint8 in it: 0.28 GB at 96 px, 1.5 GB at 224). A split up to this size is shuffled
# whole every epoch; a larger one is put in a seeded random order once, first, because its files come class by
# class and a buffer smaller than the split would otherwise fill with the first classes only.
SHUFFLE_BUFFER = 10_000


def decoded(split: Split, image_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
    """(uint8 S x S x 3 RGB image, int label) elements of a split, in the order batches draw from.

    Files are decoded with the same function the scan used (by content, any mode to RGB), so the pipeline sees
    exactly what was validated.
    """
    if split.images is not None:  # already an array in memory (digits): nothing to decode or cache
        return tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    paths, labels = np.array(split.paths), split.labels
    if training and len(split) > SHUFFLE_BUFFER:
        order = np.random.default_rng(seed).permutation(len(split))
        paths, labels = paths[order], labels[order]

    def _load(path):
        return load_resized(path.decode(), image_size)

    def _map(path, label):
        img = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
        img.set_shape((image_size, image_size, 3))
        return img, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.map(_map, num_parallel_calls=AUTOTUNE, deterministic=True)


def cached(ds: tf.data.Dataset, plan: CachePlan | None, cache_path: str | Path | None = None) -> tf.data.Dataset:
    """ds cached as the plan says: in memory, in tf.data's file cache at cache_path, or not at all.

    Raises:
        ValueError: the file mode without a cache_path.
    """
    mode = plan.mode if plan is not None else "memory"
    if mode == "memory":
        return ds.cache()
    if mode == "file":
        if cache_path is None:
            raise ValueError("the file cache needs a cache_path (train.cache.cache_folder(run) / split name)")
        return ds.cache(str(cache_path))
    return ds  # "stream" decodes every epoch; "held" is in memory already


def _to_float(x, y):
    return tf.cast(x, tf.float32), y


def make_dataset(split: Split, image_size: int, batch_size: int, training: bool, seed: int = 0,
                 cache: CachePlan | None = None, cache_path: str | Path | None = None) -> tf.data.Dataset:  # fmt: skip
    """Batches of (float32 RGB 0-255 images, int labels). Augmentation is inside the model, not here.

    Args:
        cache: where decoded images wait between epochs (train.cache.plan_cache); None caches in memory.
        cache_path: the file cache's prefix, for cache.mode "file" (RUN/cache/SPLIT); its folder must exist.
    """
    ds = decoded(split, image_size, training, seed)
    if split.images is None:
        ds = cached(ds, cache, cache_path)
    if training:
        ds = ds.shuffle(min(len(split), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
