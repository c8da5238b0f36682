"""ModelInfo: what every published artifact says about itself, so tools that never saw its manifest can run it.

export.tflite_metadata writes it into a .tflite as TFLite Support metadata (MediaPipe Tasks, the TFLite Support
library), export.onnx into an .onnx as metadata_props; export.run fills it once per format, before the parity gate,
so the checked file is the published one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from contracts.formats import ExportFormat
from contracts.manifest import Preprocessing

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def toolkit() -> str:
    """This toolkit's name and version from pyproject.toml ("edge-image-classifier 0.1.0")."""
    try:
        text = PYPROJECT.read_text()
    except OSError:
        text = ""
    found = [re.search(rf'^{key}\s*=\s*"([^"]+)"', text, re.MULTILINE) for key in ("name", "version")]
    name, version = (m.group(1) if m else None for m in found)
    return f"{name or 'edge-image-classifier'} {version or '(version unknown)'}"


@dataclass(frozen=True)
class ModelInfo:
    """One artifact's description. Field comments are the documentation."""

    name: str  # the run's name (the folder under runs/)
    description: str  # one line: the model, its classes and input, the format, and what made it
    version: str  # "sha256:" and 12 hex digits of the Keras model it was converted from: one training, one version
    labels: list[str]  # class names in output order
    image_size: int  # square input side in pixels
    preprocessing: Preprocessing  # the manifest's contract: RGB, 0-255 pixels, NHWC, normalization inside the model
    producer: str  # this toolkit and its version, toolkit()

    @property
    def std(self) -> list[float]:
        """NormalizationOptions std: a reader feeds (pixel - mean) / std, which must be the model's input range."""
        lo, hi = self.preprocessing.input_range
        return [255.0 / (hi - lo)]

    @property
    def mean(self) -> list[float]:
        lo, _ = self.preprocessing.input_range
        return [0.0 - lo * self.std[0]]  # 0.0 - : never -0.0

    def input_description(self, dtype: str) -> str:
        """One line on the input tensor: what to feed, in which dtype."""
        lo, hi = self.preprocessing.input_range
        return (f"{self.image_size}x{self.image_size} {self.preprocessing.color_order} image, {dtype} pixels "
                f"{lo:g}-{hi:g}; normalization is {self.preprocessing.normalization}")  # fmt: skip


def model_info(fmt: ExportFormat, source_sha256: str, *, run: str, backbone: str, alpha: float, labels: list[str],
               image_size: int, preprocessing: Preprocessing) -> ModelInfo:  # fmt: skip
    """The ModelInfo of one format of a run, converted from the Keras model whose checksum is source_sha256."""
    made_by = toolkit()
    model = f"{backbone} (alpha {alpha:g})" if backbone == "mobilenetv2" else backbone
    description = (f"Image classifier: {model}, {len(labels)} classes ({', '.join(labels[:5])}"
                   f"{', ...' if len(labels) > 5 else ''}), {image_size}x{image_size} RGB 0-255 input. "
                   f"Format {fmt.name}: {fmt.description}. Made by {made_by} from run {run}.")  # fmt: skip
    return ModelInfo(
        name=run, description=description, version=f"sha256:{source_sha256[:12]}", labels=list(labels),
        image_size=image_size, preprocessing=preprocessing, producer=made_by,
    )  # fmt: skip
