"""Model runners: one small interface over LiteRT (default) and onnxruntime (optional).

    backend = create_backend("litert", "runs/NAME/export/tflite_int8.tflite", threads=4)
    y = backend.run(x)  # x already has the input tensor's shape and dtype (the classifier quantizes)

export's parity gate, edge on the Pi and the benchmarks all run artifacts through these, so an artifact is checked
with exactly the code the Pi runs. LiteRT comes from ai-edge-litert, else tflite-runtime; onnxruntime is imported
only by contracts.runners.onnx, and only when asked for.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BackendError
from contracts.formats import RUNTIMES, runtime_for_file
from contracts.runners.base import Backend

BACKENDS = RUNTIMES  # ("litert", "onnxruntime"): a backend is named after the runtime in the formats table


def backend_for_file(model_path: str | Path) -> str | None:
    """The backend a model file's suffix implies (.tflite -> litert, .onnx -> onnxruntime), else None."""
    return runtime_for_file(model_path)


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
        from contracts.runners.litert import LiteRTBackend

        return LiteRTBackend(model_path, threads)
    if name == "onnxruntime":
        from contracts.runners.onnx import OnnxBackend

        return OnnxBackend(model_path, threads)
    raise BackendError(
        f"unsupported backend {name!r} for {model_path}: pass --backend {' or --backend '.join(BACKENDS)}"
    )
