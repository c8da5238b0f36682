"""Run an exported artifact in its own runtime (LiteRT for .tflite, onnxruntime for .onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.manifest import TensorSpec
from edge.preprocess import dequantize, quantize


def _tflite(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    return it


def tensor_specs(path: str | Path) -> tuple[TensorSpec, TensorSpec]:
    """The artifact's input and output tensors as the device will see them."""
    path = Path(path)
    if path.suffix == ".tflite":
        it = _tflite(path)

        def spec(d):
            scale, zp = d["quantization"]
            q = d["dtype"] in (np.int8, np.uint8)
            return TensorSpec(d["name"], [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name,
                              float(scale) if q else None, int(zp) if q else None)  # fmt: skip

        return spec(it.get_input_details()[0]), spec(it.get_output_details()[0])
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    i, o = s.get_inputs()[0], s.get_outputs()[0]

    def shape(x):
        return [d if isinstance(d, int) else 1 for d in x.shape]

    return TensorSpec(i.name, shape(i), "float32"), TensorSpec(o.name, shape(o), "float32")


def predict(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Float probabilities (N x classes) for uint8 RGB images, one image at a time as on the device."""
    path = Path(path)
    if path.suffix == ".tflite":
        it = _tflite(path)
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        out = []
        for img in images:
            x = img[None].astype(np.float32)
            if i["dtype"] in (np.int8, np.uint8):
                x = quantize(x, *i["quantization"], np.dtype(i["dtype"]).name)
            it.set_tensor(i["index"], x)
            it.invoke()
            y = it.get_tensor(o["index"])[0]
            out.append(dequantize(y, *o["quantization"]) if o["dtype"] in (np.int8, np.uint8) else y)
        return np.stack(out).astype(np.float32)
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: images[k : k + 64].astype(np.float32)})[0]
                           for k in range(0, len(images), 64)]).astype(np.float32)  # fmt: skip
