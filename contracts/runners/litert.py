"""The LiteRT runner: a .tflite model in ai-edge-litert's interpreter, else tflite-runtime's (32-bit Pi OS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.console import first_line
from contracts.errors import BackendError
from contracts.manifest import TensorSpec
from contracts.runners.base import Backend, check_single_io
from contracts.runners.tflite_verify import ModelFileError, verify_tflite


def load_litert_interpreter():
    """The LiteRT Interpreter class: ai_edge_litert's, else tflite_runtime's.

    Raises:
        BackendError: neither is installed (or tflite-runtime was built against another numpy).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except (ImportError, AttributeError) as e:  # AttributeError: tflite-runtime 2.14 under numpy 2
        why = "" if isinstance(e, ModuleNotFoundError) else f" (tflite-runtime failed to import: {e}; it needs numpy<2)"
        raise BackendError(
            f"no LiteRT interpreter is installed{why}: pip install -r requirements-edge.txt (ai-edge-litert), or on "
            "32-bit Raspberry Pi OS requirements-edge-armv7.txt (tflite-runtime)"
        ) from None


class LiteRTBackend(Backend):
    """A .tflite model in the LiteRT interpreter (XNNPACK kernels where the build has them)."""

    name = "litert"

    def __init__(self, model_path: str | Path, threads: int | None = None):
        interpreter_class = load_litert_interpreter()
        try:  # tflite-runtime can crash the process on a malformed file: check its structure first
            verify_tflite(model_path)
        except ModelFileError as e:
            raise BackendError(str(e)) from None
        self.package = interpreter_class.__module__.split(".")[0]  # ai_edge_litert or tflite_runtime, for the log
        try:
            self._it = interpreter_class(model_path=str(model_path), num_threads=threads)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BackendError(
                f"{model_path} is not a model LiteRT can run ({first_line(e)}): copy it again or re-run export"
            ) from None
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        check_single_io(model_path, len(inputs), len(outputs))
        self._in, self._out = inputs[0]["index"], outputs[0]["index"]
        self.input, self.output = _litert_spec(inputs[0]), _litert_spec(outputs[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return self._it.get_tensor(self._out)


def _litert_spec(d: dict) -> TensorSpec:
    """A tensor's details as the interpreter reports them, quantization included (scale 0 means none)."""
    dtype = np.dtype(d["dtype"])
    scale, zero_point = d.get("quantization", (0.0, 0))
    quantized = dtype.kind in "iu" and scale != 0
    return TensorSpec(
        name=str(d["name"]),
        shape=[int(v) for v in d["shape"]],
        dtype=dtype.name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )
