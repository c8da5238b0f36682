"""tf.data input pipelines: decode, resize, cache, shuffle, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.data import Split, load_resized

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(split: Split, image_size: int, batch_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
    """Batches of (float32 RGB 0-255 images, int labels). Augmentation is inside the model, not here.

    Files are decoded with the same function the scan used (by content, any mode to RGB), so the
    pipeline sees exactly what was validated; decoded images are cached in memory after the first epoch.
    """
    if split.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    else:

        def _load(path):
            return load_resized(path.decode(), image_size)

        def _map(path, label):
            img = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
            img.set_shape((image_size, image_size, 3))
            return img, label

        ds = tf.data.Dataset.from_tensor_slices((np.array(split.paths), split.labels))
        ds = ds.map(_map, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE).cache()
    if training:
        ds = ds.shuffle(min(len(split), 10_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
