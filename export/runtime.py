"""Run an exported artifact in its own runtime, through the same backends the device uses (contracts.runners)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.manifest import TensorSpec
from contracts.preprocess import dequantize, quantize
from contracts.runners import backend_for_file, create_backend


def tensor_specs(path: str | Path) -> tuple[TensorSpec, TensorSpec]:
    """The artifact's input and output tensors as the device will see them (quantization included)."""
    backend = create_backend(backend_for_file(path), path, threads=2)
    try:
        return backend.input, backend.output
    finally:
        backend.close()


def predict(path: str | Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """Float probabilities (N x classes) for uint8 RGB images, one image at a time as on the device.

    int8 tensors are quantized and dequantized with the runtime's own parameters.
    """
    backend = create_backend(backend_for_file(path), path, threads=threads)
    i, o = backend.input, backend.output
    out = []
    try:
        for img in images:
            x = img[None].astype(np.float32)
            if i.scale is not None:
                x = quantize(x, i.scale, i.zero_point, i.dtype)
            y = np.asarray(backend.run(x))[0]
            out.append(dequantize(y, o.scale, o.zero_point) if o.scale is not None else y)
    finally:
        backend.close()
    return np.stack(out).astype(np.float32)
