"""Inference backends: one small interface over LiteRT (default) and onnxruntime (optional).

    backend = create_backend("litert", "runs/NAME/export/tflite_int8.tflite", threads=4)
    y = backend.run(x)  # x already has the input tensor's shape and dtype (the classifier quantizes)

LiteRT comes from ai-edge-litert, else from tflite-runtime (the only wheel for 32-bit Raspberry Pi OS).
onnxruntime is imported only by edge.backend_onnx, and only when asked for.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from edge.errors import BackendError
from edge.formats import RUNTIMES
from edge.manifest import TensorSpec
from edge.tflite_verify import ModelFileError, verify_tflite

BACKENDS = RUNTIMES  # ("litert", "onnxruntime"): a backend is named after the runtime in the formats table


class Backend(abc.ABC):
    """A loaded model with one input and one output tensor."""

    name: str  # "litert" or "onnxruntime"
    input: TensorSpec  # as the runtime reports it; scale/zero_point are None where the runtime does not carry them
    output: TensorSpec

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Runs one batch; x has the input tensor's shape and dtype. Returns the raw output tensor."""

    def close(self) -> None:  # noqa: B027 (optional hook, most runtimes free themselves)
        """Frees the runtime's resources."""


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


def check_single_io(model_path, n_inputs: int, n_outputs: int) -> None:
    """An image classifier has one input and one output tensor; anything else is not an export of ours."""
    if n_inputs != 1 or n_outputs != 1:
        raise BackendError(
            f"{model_path} has {n_inputs} inputs and {n_outputs} outputs; an image classifier has one of "
            "each: export it with `python -m export`"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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
                f"{model_path} is not a model LiteRT can run ({_first_line(e)}): copy it again or re-run export"
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


def backend_for_file(model_path: str | Path) -> str | None:
    """The backend a model file's suffix implies (.tflite -> litert, .onnx -> onnxruntime), else None."""
    return {".tflite": "litert", ".onnx": "onnxruntime"}.get(Path(model_path).suffix.lower())


def create_backend(name: str, model_path: str | Path, threads: int | None = None) -> Backend:
    """Loads a model in the named backend.

    Args:
        name: "litert" or "onnxruntime".
        model_path: the artifact (.tflite for litert, .onnx for onnxruntime).
        threads: CPU threads for the runtime; None lets the runtime choose.

    Raises:
        BackendError: an unknown name, a runtime that is not installed, or a file it cannot open.
    """
    if name == "litert":
        return LiteRTBackend(model_path, threads)
    if name == "onnxruntime":
        from edge.backend_onnx import OnnxBackend

        return OnnxBackend(model_path, threads)
    raise BackendError(
        f"unsupported backend {name!r} for {model_path}: pass --backend {' or --backend '.join(BACKENDS)}"
    )
