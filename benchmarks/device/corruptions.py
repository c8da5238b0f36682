"""Camera corruptions at fixed, seeded severities, with numpy and OpenCV only (this file ships to the Pi).

    bad = corrupt(rgb, "gaussian_blur", 3, np.random.default_rng(0))      # one uint8 HxWx3 RGB image
    bad = corrupt_batch(rgb_images, "motion_blur", MIDDLE, seed=0)         # N images, each seeded by its index

Six corruptions a camera meets, at severities 1-5 (0 = the image unchanged). The values follow ImageNet-C
(Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR
2019; github.com/hendrycks/robustness, ImageNet-C/imagenet_c/imagenet_c/corruptions.py), except low light, which
ImageNet-C lacks and which follows 3D Common Corruptions (Kar et al., CVPR 2022; github.com/EPFL-VILAB/
3DCommonCorruptions, create_3dcc/create_non3d.py). The code is our own OpenCV version of theirs, not a copy.

ImageNet-C defines its values on 224x224 images. Lengths in pixels (blur sigmas, the motion-blur streak, the
pixelation block) are scaled here by side/224, side being the image's shorter side, so a severity blurs the same
fraction of the picture at 96 px, at 224 px and in a 640x480 camera frame. Per-pixel values are not scaled: the
noise's standard deviation, the JPEG quality and the low-light curve act on each pixel (or 8x8 JPEG block) of the
image they are given, as a sensor and an encoder act on each frame they produce. So gaussian_noise and jpeg cost a
96 px test image more than they cost a 640x480 frame that edge then shrinks to 96 px (shrinking averages the
noise and the block edges away). Pixelation, by the same rule, takes an image down to 224*c pixels on its shorter
side: where that is not smaller than the image (severities 1-2 at 96 px) the image comes back unchanged.
"""

from __future__ import annotations

import math
import zlib

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
MIDDLE = 3  # the severity the results' robust_* columns and the sweep's --pick-by use
REFERENCE_SIDE = 224  # ImageNet-C's image side, where the lengths below are defined

# name -> the parameter at severities 1..5. Each comes from the function of the same kind in the sources above.
CORRUPTIONS: dict[str, tuple] = {
    # sigma in pixels at 224 px: ImageNet-C gaussian_blur, c = [1, 2, 3, 4, 6]
    "gaussian_blur": (1, 2, 3, 4, 6),
    # standard deviation on the 0-1 scale: ImageNet-C gaussian_noise, c = [.08, .12, 0.18, 0.26, 0.38]
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # JPEG quality: ImageNet-C jpeg_compression, c = [25, 18, 15, 10, 7]
    "jpeg": (25, 18, 15, 10, 7),
    # peak brightness left (the 0-1 range is mapped to 0..c through gamma 2): 3DCC low_light,
    # c = [.60, .50, 0.40, 0.30, 0.20]; its shot and read noise are LOW_LIGHT_NOISE below
    "low_light": (0.60, 0.50, 0.40, 0.30, 0.20),
    # fraction of the 224 px side kept before blowing it back up: ImageNet-C pixelate, c = [0.6, 0.5, 0.4, 0.3, 0.25]
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    # (radius, sigma) in pixels at 224 px of ImageMagick's motion blur, angle uniform in -45..45 degrees:
    # ImageNet-C motion_blur, c = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
}
# 3DCC low_light adds poisson_gaussian_noise(severity=3) at every severity: photon counts of 10 * 12 per unit of
# brightness (shot noise) and a read noise of 0.1 * 0.18 on the 0-1 scale
LOW_LIGHT_NOISE = (120.0, 0.018)
MOTION_ANGLE = 45.0  # ImageNet-C: np.random.uniform(-45, 45)
GAUSS_TRUNCATE = 4.0  # skimage.filters.gaussian's default kernel reach, in sigmas (ImageNet-C blurs with it)


def check(name: str, severity: int) -> None:
    """Raises ValueError naming the valid choices when `name` or `severity` is not one of them."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ValueError(f"severity {severity!r} is not one of 0 (clean), {', '.join(map(str, SEVERITIES))}")


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One image under one corruption.

    Args:
        image: uint8 HxWx3 RGB.
        name: a key of CORRUPTIONS.
        severity: 0 (the image itself, unchanged) to 5.
        rng: draws the noise and the motion-blur angle, so a seeded generator gives the same image every time.

    Returns:
        uint8 HxWx3 RGB, the shape of `image`.

    Raises:
        ValueError: an unknown name or severity, or an image that is not uint8 HxWx3.
    """
    check(name, severity)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt() takes uint8 HxWx3 RGB images, not {image.dtype} {image.shape}")
    if severity == 0:
        return image
    c = CORRUPTIONS[name][severity - 1]
    scale = min(image.shape[:2]) / REFERENCE_SIDE
    out = _APPLY[name](np.ascontiguousarray(image), c, scale, rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    return out


def image_rng(name: str, severity: int, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of image `index` under (name, severity): the same in every batch, order and process."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), severity, index])  # crc32: stable, unlike hash()


def corrupt_batch(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """N images under one corruption; image i is drawn from image_rng(name, severity, i, seed), so an image comes
    out the same whatever batch, order or process it is corrupted in."""
    check(name, severity)
    return np.stack([corrupt(img, name, severity, image_rng(name, severity, i, seed)) for i, img in enumerate(images)])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gaussian_blur(img: np.ndarray, sigma: float, scale: float, rng) -> np.ndarray:
    s = sigma * scale
    k = 2 * math.ceil(GAUSS_TRUNCATE * s) + 1
    # BORDER_REPLICATE is skimage's mode="nearest", ImageNet-C's border
    return cv2.GaussianBlur(img, (k, k), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REPLICATE)


def _gaussian_noise(img: np.ndarray, std: float, scale: float, rng) -> np.ndarray:
    return _to_uint8(img + rng.normal(0.0, std * 255.0, size=img.shape))


def _jpeg(img: np.ndarray, quality: int, scale: float, rng) -> np.ndarray:
    # OpenCV encodes BGR: swapping first keeps the chroma subsampling on the right channels
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG (is this OpenCV built without libjpeg?)")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _low_light(img: np.ndarray, peak: float, scale: float, rng) -> np.ndarray:
    """A camera at dusk: the brightness curve darkened to `peak` through gamma 2 (shadows sink furthest), then
    shot noise (Poisson in the photons a dim scene gives) and read noise. 3DCC first stretches each image's own
    min..max to 0..1; here 0..255 is the range, so a dull frame is not given contrast before it is darkened."""
    x = (img / 255.0) ** 2 * peak
    photons, read = LOW_LIGHT_NOISE
    x = np.clip(rng.poisson(x * photons) / photons, 0.0, 1.0)
    return _to_uint8((x + rng.normal(0.0, read, size=x.shape)) * 255.0)


def _pixelate(img: np.ndarray, keep: float, scale: float, rng) -> np.ndarray:
    """Down to keep*224 pixels on the shorter side with INTER_AREA, back up with INTER_NEAREST: blocks of
    1/keep pixels at 224 px, side/(224*keep) here (the blocky rendering of a low-resolution picture blown up)."""
    h, w = img.shape[:2]
    factor = keep / scale  # the fraction of this image's side that survives
    if factor >= 1.0:
        return img.copy()
    small = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_NEAREST)


def motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage kernel (what ImageNet-C calls through Wand): 2*ceil(radius)+1 taps along one
    direction from the pixel, weights exp(-i^2 / (2 sigma^2)), tap i at i*(cos, sin) of the angle, rounded."""
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i**2) / (2.0 * max(sigma, 1e-6) ** 2))
    a = math.radians(angle_deg)
    dx = np.ceil(i * math.cos(a) - 0.5).astype(int)  # ImageMagick's rounding
    dy = np.ceil(i * math.sin(a) - 0.5).astype(int)
    k = np.zeros((2 * width + 1, 2 * width + 1), np.float64)
    np.add.at(k, (dy + width, dx + width), weights)
    return (k / k.sum()).astype(np.float32)


def _motion_blur(img: np.ndarray, c: tuple, scale: float, rng) -> np.ndarray:
    radius, sigma = c
    angle = rng.uniform(-MOTION_ANGLE, MOTION_ANGLE)
    k = motion_kernel(radius * scale, sigma * scale, angle)
    # filter2D correlates: output(x) sums input(x + tap), as ImageMagick samples; "edge" virtual pixels = replicate
    out = cv2.filter2D(img.astype(np.float32), -1, k, borderType=cv2.BORDER_REPLICATE)
    return _to_uint8(out)


_APPLY = {
    "gaussian_blur": _gaussian_blur,
    "gaussian_noise": _gaussian_noise,
    "jpeg": _jpeg,
    "low_light": _low_light,
    "pixelate": _pixelate,
    "motion_blur": _motion_blur,
}
