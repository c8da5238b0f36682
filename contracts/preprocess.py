"""Frame -> model input, the one implementation shared by training, export, edge and benchmarks.

The contract (recorded in the manifest's `preprocessing`): RGB, uint8 values 0-255, resized to a square
without cropping (cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging). Scaling to the
backbone's range happens inside the model, so every artifact takes the same pixels.

Shrinking by 2x or more first reduces by the largest whole factor that divides both sides with INTER_AREA
(OpenCV's fast path, e.g. 640x480 -> 128x96), then INTER_AREA to the target: about 2.5x cheaper than
one INTER_AREA call on a 640x480 camera frame (0.33 against 0.83 ms here), still an area average, and
the same function runs in training and on the device, so both see identical pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

# Picture files every stage reads: train (Pillow) and edge's image folders (OpenCV). OpenCV cannot decode .gif, so
# edge skips one with a warning naming it; everything else here both libraries read.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resizes an HxWx3 uint8 RGB image to size x size with the contract's interpolation."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(rgb)
    if size >= min(h, w):
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    k = next((d for d in range(min(h, w) // size, 1, -1) if h % d == 0 and w % d == 0), 1)
    if k >= 2:
        rgb = cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def bgr_to_input(bgr: np.ndarray, size: int) -> np.ndarray:
    """An OpenCV BGR (or grayscale, or BGRA) frame -> a size x size x 3 uint8 RGB image."""
    small = resize_rgb(bgr, size)  # resize first: the colour conversion then touches size*size pixels only
    if small.ndim == 2:
        return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
    if small.shape[2] == 4:
        return cv2.cvtColor(small, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Real values -> integers with a tensor's own quantization parameters (real = scale * (q - zp))."""
    info = np.iinfo(np.dtype(dtype))
    q = np.round(np.asarray(x, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, np.float32) - zero_point) * np.float32(scale)
