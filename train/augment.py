"""Camera-condition augmentation: training-only tf-keras layers for blur, sensor noise, JPEG, light and resolution.

python -m train --data digits --aug-blur 1.5 --aug-jpeg 0   # stronger blur, no JPEG

Each layer changes a random `fraction` of the images of a batch, each by its own random amount up to what its
`strength` allows (1.0 = the default, 0 = the layer is not built), and passes the rest clean, so the model still
sees clean pictures. At inference (training false) every layer returns its input untouched, so exported models hold
none of them. They are registered serializable and saved with this module's name, so a saved model loads wherever
`train` is importable, with no custom_objects.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

# The kinds are in the order a camera applies them: optics and resolution, light, sensor noise, compression.
from train.settings import AUG_KINDS as KINDS
from train.settings import AUG_MAX_STRENGTH as MAX_STRENGTH

_PACKAGE = "edge_toolkit"
# What strength 1.0 reaches, in pixels of the model's input (digits: 96) or 0-255 levels. Chosen so that the
# middle severity of benchmarks/device/corruptions.py falls inside the range training sees.
_BLUR_SIGMA = 2.0  # largest Gaussian blur sigma; motion blur streaks reach 3x this in length
_NOISE_STD = 80.0  # largest noise standard deviation, 0-255 levels
_JPEG_QUALITY_DROP = 85  # the lowest quality is 100 - this (then at least 5)
# Light is mostly too little for a camera: exposure gain within exp(-_DARKER .. +_BRIGHTER), gamma (above 1
# sinks the shadows) within exp(-0.8 _BRIGHTER .. +0.6 _DARKER).
_DARKER, _BRIGHTER = 1.6, 0.5
_PHOTONS = 100.0  # a dim picture's shot noise: at least this many photons per unit of brightness / strength
_SCALE_FACTOR = 7.0  # down-sampling by up to 1 + this (log-uniform: small factors are the common ones)
_RESIZE = ("nearest", "bilinear", "bicubic", "area")


class CameraAugment(keras.__internal__.layers.BaseRandomLayer):
    """Base of the camera-condition layers: picks the images to change, and is the identity outside training.

    Args:
        strength: how far the random amounts reach, 0 < strength <= MAX_STRENGTH (1.0 = the default).
        fraction: the share of each batch's images that the layer changes, 0 < fraction <= 1.
        seed: random seed (None: from Keras' global seed, as the other random layers).
    """

    def __init__(self, strength: float = 1.0, fraction: float = 0.2, seed=None, **kwargs):
        super().__init__(seed=seed, force_generator=True, **kwargs)
        if not 0 < strength <= MAX_STRENGTH or not 0 < fraction <= 1:
            raise ValueError(f"{type(self).__name__}: strength {strength} or fraction {fraction} out of range")
        self.strength, self.fraction, self.seed = float(strength), float(fraction), seed

    def call(self, inputs, training=None):
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)):
            return self._augment_some(inputs) if training else inputs
        return tf.cond(tf.cast(training, tf.bool), lambda: self._augment_some(inputs), lambda: tf.identity(inputs))

    def _uniform(self, shape, lo=0.0, hi=1.0):
        return self._random_generator.random_uniform(shape, lo, hi)

    def _augment_some(self, x):
        x = tf.cast(x, tf.float32)
        pick = tf.where(self._uniform(tf.shape(x)[:1]) < self.fraction)
        chosen = tf.gather(x, pick[:, 0])
        changed = tf.cond(
            tf.shape(chosen)[0] > 0, lambda: tf.clip_by_value(self.augment(chosen), 0.0, 255.0), lambda: chosen
        )
        out = tf.tensor_scatter_nd_update(x, pick, changed)
        out.set_shape(x.shape)
        return out

    def augment(self, x):
        """Changes every image of x (float32 0-255, N x H x W x C, N > 0); the result is clipped to 0-255."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), strength=self.strength, fraction=self.fraction, seed=self.seed)


def _depthwise_per_image(x, kernels):
    """x (N, H, W, C) convolved, image i with kernels[i] (K x K, odd K), edges reflected."""
    n, h, w, c = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2], x.shape[-1]
    k = kernels.shape[1]
    r = k // 2
    # The batch goes into the channels, so one depthwise convolution gives each image its own kernel.
    stacked = tf.reshape(tf.transpose(x, (1, 2, 0, 3)), (1, h, w, n * c))
    stacked = tf.pad(stacked, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    kern = tf.repeat(tf.transpose(kernels, (1, 2, 0)), c, axis=2)[..., None]  # K, K, N*C, 1
    y = tf.nn.depthwise_conv2d(stacked, kern, strides=[1, 1, 1, 1], padding="VALID")
    return tf.transpose(tf.reshape(y, (h, w, n, c)), (2, 0, 1, 3))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CameraBlur(CameraAugment):
    """Out-of-focus (Gaussian) or motion blur, half the images each: sigma up to 2 px x strength, streaks 3x as
    long at a random angle."""

    def augment(self, x):
        n = tf.shape(x)[0]
        top = _BLUR_SIGMA * self.strength
        r = max(1, math.ceil(1.5 * top))
        k = 2 * r + 1
        sigma = self._uniform([n, 1, 1], 0.3, top)
        grid = tf.range(-r, r + 1, dtype=tf.float32)
        v, u = tf.meshgrid(grid, grid, indexing="ij")
        gauss = tf.exp(-(u**2 + v**2) / (2 * sigma**2))
        angle = self._uniform([n, 1, 1], 0.0, math.pi)
        along = u * tf.cos(angle) + v * tf.sin(angle)
        across = -u * tf.sin(angle) + v * tf.cos(angle)
        half = 1.5 * sigma  # a streak of 3 sigma, inside the kernel
        motion = tf.exp(-(across**2) / 0.5) * tf.sigmoid(4.0 * (half + 0.5 - tf.abs(along)))
        kernels = tf.where(self._uniform([n, 1, 1]) < 0.5, gauss, motion)
        kernels = kernels / tf.reduce_sum(kernels, axis=(1, 2), keepdims=True)
        kernels.set_shape((None, k, k))
        return _depthwise_per_image(x, kernels)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SensorNoise(CameraAugment):
    """Gaussian sensor noise, standard deviation up to 80 levels x strength, per pixel and channel (colour noise)
    or per pixel (luminance noise), half the images each."""

    def augment(self, x):
        n = tf.shape(x)[0]
        std = self._uniform([n, 1, 1, 1], 0.0, _NOISE_STD * self.strength)
        shape = tf.shape(x)
        noise = self._random_generator.random_normal(shape)
        gray = tf.broadcast_to(noise[..., :1], shape)
        noise = tf.where(self._uniform([n, 1, 1, 1]) < 0.5, noise, gray)
        return x + std * noise


@keras.saving.register_keras_serializable(package=_PACKAGE)
class JpegQuality(CameraAugment):
    """JPEG compression at a random quality down to 100 - 85 x strength (at least 5), per image."""

    def augment(self, x):
        n = tf.shape(x)[0]
        lowest = max(5, round(100 - _JPEG_QUALITY_DROP * self.strength))
        quality = tf.cast(self._uniform([n], lowest, 101), tf.int32)
        images = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)

        def one(args):
            image, q = args
            return tf.image.adjust_jpeg_quality(image, tf.minimum(q, 100))

        out = tf.map_fn(one, (images, quality), fn_output_signature=tf.TensorSpec(x.shape[1:], tf.uint8))
        return tf.cast(out, tf.float32)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Lighting(CameraAugment):
    """Exposure gain within exp(-1.6 .. +0.5 x strength), gamma within exp(-0.4 .. +0.96 x strength), contrast
    around the image mean within 1 +- 0.4 x strength (mostly dim light, some bright, washed-out or harsh), then the
    shot noise of a sensor that caught few photons: Poisson-like, its variance proportional to the brightness."""

    def augment(self, x):
        n = tf.shape(x)[0]
        s = self.strength
        gain = tf.exp(self._uniform([n, 1, 1, 1], -_DARKER * s, _BRIGHTER * s))
        gamma = tf.exp(self._uniform([n, 1, 1, 1], -_BRIGHTER * s * 0.8, _DARKER * s * 0.6))
        contrast = self._uniform([n, 1, 1, 1], max(0.1, 1 - 0.4 * s), 1 + 0.4 * s)
        y = 255.0 * tf.pow(tf.clip_by_value(x, 0.0, 255.0) / 255.0, gamma) * gain
        mean = tf.reduce_mean(y, axis=(1, 2, 3), keepdims=True)
        y = tf.clip_by_value((y - mean) * contrast + mean, 0.0, 255.0)
        photons = tf.exp(self._uniform([n, 1, 1, 1], math.log(_PHOTONS / s), math.log(_PHOTONS * 30)))
        shot = tf.sqrt(y * 255.0 / photons) * self._random_generator.random_normal(tf.shape(x))
        return y + shot


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResolutionJitter(CameraAugment):
    """Down-sampling by a random factor up to 1 + 7 x strength, then back up with nearest, bilinear, bicubic or
    area interpolation (blocky and smooth renderings of the same content); one factor and method per batch."""

    def augment(self, x):
        size = tf.shape(x)[1:3]
        factor = tf.exp(self._uniform([], 0.0, math.log(1.0 + _SCALE_FACTOR * self.strength)))
        small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) / factor), tf.int32), 2)
        down = tf.image.resize(x, small, method="area")
        pick = tf.cast(self._uniform([], 0.0, len(_RESIZE)), tf.int32)
        branches = [lambda m=m: tf.image.resize(down, size, method=m) for m in _RESIZE]
        out = tf.switch_case(tf.minimum(pick, len(_RESIZE) - 1), branches)
        return tf.reshape(out, tf.shape(x))


LAYERS = {"scale": ResolutionJitter, "blur": CameraBlur, "light": Lighting, "noise": SensorNoise, "jpeg": JpegQuality}


def camera_layers(strengths: dict[str, float], fraction: float, prefix: str) -> list:
    """The camera-condition layers for {kind: strength}, in KINDS order; a strength of 0 builds no layer."""
    return [LAYERS[kind](strengths[kind], fraction, name=prefix + kind) for kind in KINDS if strengths.get(kind, 0) > 0]
