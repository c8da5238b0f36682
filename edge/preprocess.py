"""Frame -> model input, the one implementation shared by training, export, edge and benchmarks.

The contract (recorded in the manifest's `preprocessing`): RGB, uint8 values 0-255, resized to a square
without cropping (cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging). Scaling to the
backbone's range happens inside the model, so every artifact takes the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resizes an HxWx3 uint8 RGB image to size x size with the contract's interpolation."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def bgr_to_input(bgr: np.ndarray, size: int) -> np.ndarray:
    """An OpenCV BGR (or grayscale, or BGRA) frame -> a size x size x 3 uint8 RGB image."""
    if bgr.ndim == 2:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    elif bgr.shape[2] == 4:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return resize_rgb(rgb, size)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Real values -> integers with a tensor's own quantization parameters (real = scale * (q - zp))."""
    info = np.iinfo(np.dtype(dtype))
    q = np.round(np.asarray(x, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, np.float32) - zero_point) * np.float32(scale)
