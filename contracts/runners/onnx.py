"""The optional onnxruntime backend (--backend onnxruntime, or an .onnx model).

This is the only module the Pi bundle ships that imports onnxruntime, and it does so when a backend is made, so the
Pi needs onnxruntime only if it runs ONNX models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.console import first_line
from contracts.errors import BackendError
from contracts.manifest import TensorSpec
from contracts.runners.base import Backend, check_single_io

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


class OnnxBackend(Backend):
    """An .onnx model on onnxruntime's CPU provider.

    ONNX graph inputs carry no quantization parameters, so input.scale and output.scale are None; a model with
    integer inputs is quantized with the manifest's parameters instead (see Classifier).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError(
                f"onnxruntime is not installed, and {model_path} needs it for --backend onnxruntime: pip install "
                "onnxruntime (the pinned version is in requirements/onnx.txt), or use a .tflite model"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per core
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: warnings would clutter stderr on every start
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise BackendError(
                f"{model_path} is not a model onnxruntime can run ({first_line(e)}): copy it again or re-run export"
            ) from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        check_single_io(model_path, len(inputs), len(outputs))
        self._in_name, self._out_name = inputs[0].name, outputs[0].name
        self.input, self.output = _onnx_spec(inputs[0], model_path), _onnx_spec(outputs[0], model_path)
        # metadata_props (labels, for a model no manifest lists: contracts.runners.unlisted)
        self.custom_metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self._out_name], {self._in_name: x})[0]


def _onnx_spec(arg, model_path) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise BackendError(f"{model_path}: tensor {arg.name} has type {arg.type}, which edge cannot feed; re-export it")
    # A symbolic batch dimension ("N", "unk__12") runs one frame at a time here; other symbolic dims stay -1.
    shape = [d if isinstance(d, int) else (1 if k == 0 else -1) for k, d in enumerate(arg.shape)]
    return TensorSpec(name=arg.name, shape=shape, dtype=dtype)
