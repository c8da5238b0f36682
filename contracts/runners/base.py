"""What every model runner is: one input tensor, one output tensor, `run(x)`; shared by LiteRT and onnxruntime."""

from __future__ import annotations

import abc

import numpy as np

from contracts.errors import BackendError
from contracts.manifest import TensorSpec


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


def check_single_io(model_path, n_inputs: int, n_outputs: int) -> None:
    """An image classifier has one input and one output tensor; anything else is not an export of ours."""
    if n_inputs != 1 or n_outputs != 1:
        raise BackendError(
            f"{model_path} has {n_inputs} inputs and {n_outputs} outputs; an image classifier has one of "
            "each: export it with `python -m export`"
        )
