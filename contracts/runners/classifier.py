"""Classify one camera frame with an exported model, reading everything about the model from its manifest.

    clf = Classifier.from_model("runs/NAME/export/tflite_int8.tflite", top_k=3)
    result = clf.classify(cv2.imread("cat.jpg"))   # Result(categories=[Category("cat", 0.93), ...], inference_ms=1.2)

from_model() checks, before anything runs: the manifest beside the model lists it, the file's sha256 matches,
and the tensors the runtime reports agree with the manifest (shape, dtype, quantization). Integer inputs are
quantized and integer outputs dequantized with the parameters the interpreter itself reports. A model no manifest
lists (another tool's, or ours copied alone) runs on its own metadata or a labels file instead, unverified
(contracts.runners.unlisted): `unverified` then holds the line edge logs about it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from contracts.errors import BackendError, EdgeError
from contracts.manifest import (
    ArtifactEntry,
    Manifest,
    ManifestError,
    TensorSpec,
    find_manifest,
    load_manifest,
    verify_checksum,
)
from contracts.preprocess import bgr_to_input, dequantize, quantize
from contracts.runners import BACKENDS, backend_for_file, create_backend
from contracts.runners.base import Backend
from contracts.runners.unlisted import describe_unlisted

# What this runtime implements of the manifest's preprocessing contract (contracts.manifest.Preprocessing).
_COLOR_ORDERS = ("RGB", "BGR")
_LAYOUTS = ("NHWC",)
_RESIZES = ("area",)


@dataclass(frozen=True)
class Category:
    """One class and its probability."""

    label: str
    score: float


@dataclass(frozen=True)
class Result:
    """What the model made of one frame."""

    categories: list[Category]  # best first, at most top_k, only those scoring >= min_score; empty: unknown
    inference_ms: float  # time inside the runtime only (not preprocessing)
    scores: np.ndarray = field(repr=False)  # float32 probability of every label, in manifest label order

    @property
    def top(self) -> Category | None:
        """The best category, or None when nothing reached min_score ("unknown")."""
        return self.categories[0] if self.categories else None


class Classifier:
    """A model, its labels and its preprocessing, ready to classify BGR frames."""

    def __init__(
        self,
        backend: Backend,
        manifest: Manifest,
        entry: ArtifactEntry,
        *,
        top_k: int = 3,
        min_score: float = 0.0,
        where: str = "manifest",
        unverified: str | None = None,
    ):
        """Checks that the backend's tensors agree with the manifest entry (ManifestError names `where` if not).

        `unverified` says why no manifest checksum was checked and where labels and pixels came from (a model no
        manifest lists); None: the entry is a real manifest's, and the file matched its sha256.
        """
        self.backend, self.manifest, self.entry = backend, manifest, entry
        self.unverified = unverified
        self.labels = list(manifest.labels)
        self.top_k, self.min_score = top_k, min_score
        self._check_preprocessing(where)
        self.input_quantization = _quantization(backend.input, entry.input, "input", entry.file, where)
        self.output_quantization = _quantization(backend.output, entry.output, "output", entry.file, where)
        self.size = manifest.image_size
        shape = backend.input.shape
        if len(shape) != 4 or shape[1:3] != [self.size, self.size] or shape[3] != 3:
            raise ManifestError(
                f"{where}: {entry.file} takes input shape {shape}, the manifest says {self.size}x{self.size}x3 "
                "(NHWC): the manifest belongs to another export; re-run export"
            )
        n_out = backend.output.shape[-1] if backend.output.shape else 0
        if n_out != len(self.labels):
            raise ManifestError(
                f"{where}: {entry.file} has {n_out} outputs but the manifest lists {len(self.labels)} labels; "
                "re-run export"
            )
        self._bgr = manifest.preprocessing.color_order == "BGR"
        self._lut = self._input_table()

    @classmethod
    def from_model(
        cls,
        model_path: str | Path,
        backend: str | None = None,
        threads: int | None = None,
        *,
        top_k: int = 3,
        min_score: float = 0.0,
        labels: str | Path | None = None,
    ) -> Classifier:
        """Opens a model after checking it against the manifest.json beside it, or, when no manifest there lists
        it, on its own metadata (contracts.runners.unlisted; the classifier's `unverified` says so).

        Args:
            model_path: a .tflite or .onnx artifact written by export, or any image classifier of that kind.
            backend: "litert" or "onnxruntime"; None picks the runtime the manifest names for the model (or its
                suffix implies).
            threads: interpreter threads; None lets the runtime choose.
            top_k: categories per result.
            min_score: categories scoring below it are left out; a frame with none left is "unknown".
            labels: a labels file (one per line) for a model no manifest lists; None: its metadata's labels.

        Raises:
            EdgeError: missing model file, a backend that cannot run it (BackendError), --labels for a model a
                manifest lists, or a model no manifest lists without usable labels or metadata.
            ManifestError: an unreadable or mismatching manifest, or a checksum mismatch (ChecksumError).
        """
        path = Path(model_path)
        if backend is not None and backend not in BACKENDS:
            raise BackendError(f"unsupported backend {backend!r} for {path}: pass --backend litert or onnxruntime")
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "not found"
            raise EdgeError(
                f"{path} {what}: pass --model runs/NAME/export/FORMAT.tflite (written by `make export`), "
                "or the model inside a bundle"
            )
        manifest_path = find_manifest(path)
        manifest = load_manifest(manifest_path) if manifest_path.is_file() else None
        if manifest is None or path.name not in [a.file for a in manifest.artifacts]:
            return cls._unlisted(path, backend, threads, labels, top_k, min_score)
        if labels is not None:
            raise EdgeError(
                f"{path} is listed in {manifest_path}, which gives its labels: drop --labels (it is for models "
                "without a manifest)"
            )
        entry = manifest.entry_for_file(path)
        verify_checksum(path, entry)
        name = backend or entry.runtime or backend_for_file(path)
        if name != entry.runtime:
            raise BackendError(
                f"{path} is a {entry.runtime} model ({entry.format}), --backend {name} cannot run it: drop --backend, "
                f"or pass the {'.onnx' if name == 'onnxruntime' else '.tflite'} artifact of the same run"
            )
        return cls(
            create_backend(name, path, threads), manifest, entry, top_k=top_k, min_score=min_score,
            where=str(manifest_path),
        )  # fmt: skip

    @classmethod
    def _unlisted(cls, path: Path, backend, threads, labels, top_k: int, min_score: float) -> Classifier:
        """A model no manifest lists, described by its metadata or `labels` (contracts.runners.unlisted)."""
        name = backend or backend_for_file(path)
        if name is None:
            raise EdgeError(f"{path} is neither a .tflite nor an .onnx model: pass one of those to --model")
        u, runner = describe_unlisted(path, lambda: create_backend(name, path, threads), labels)
        note = (f"no manifest lists {path}, so no checksum was verified; {len(u.manifest.labels)} labels from "
                f"{u.labels_from}; pixels fed {u.pixels_from}")  # fmt: skip
        return cls(runner, u.manifest, u.entry, top_k=top_k, min_score=min_score, where=str(path), unverified=note)

    def _check_preprocessing(self, where: str) -> None:
        p = self.manifest.preprocessing
        for what, value, known in (
            ("color_order", p.color_order, _COLOR_ORDERS),
            ("layout", p.layout, _LAYOUTS),
            ("resize", p.resize, _RESIZES),
        ):
            if value not in known:
                raise ManifestError(
                    f"{where}: preprocessing {what} {value!r} is not one this edge runtime implements "
                    f"({', '.join(known)}); update edge/ to the toolkit version that exported the model"
                )

    def _input_table(self) -> np.ndarray | None:
        """What each of the 256 pixel values becomes in the input tensor: the input range mapping, then
        quantization with the tensor's own parameters. One table lookup per frame replaces a float
        conversion, a division, rounding and clipping of every pixel (the camera loop's hot path)."""
        lo, hi = (float(v) for v in self.manifest.preprocessing.input_range)
        if self.input_quantization is None and (lo, hi) == (0.0, 255.0):
            return None  # float pixels as they are: a plain conversion is faster than a lookup
        x = lo + np.arange(256, dtype=np.float32) * np.float32((hi - lo) / 255.0)
        if self.input_quantization is None:
            return x.astype(self.backend.input.dtype)
        scale, zero_point = self.input_quantization
        table = quantize(x, scale, zero_point, self.backend.input.dtype)
        # uint8 pixels at scale 1, zero point 0 (the published int8 formats) are the input as they are: no lookup
        return None if np.array_equal(table, np.arange(256)) and table.dtype == np.uint8 else table

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """A BGR frame -> the model's input tensor (1 x H x W x 3, in its dtype, quantized if integer)."""
        rgb = bgr_to_input(bgr, self.size)
        if self._bgr:
            rgb = rgb[..., ::-1]
        if self._lut is None:
            return rgb[None].astype(self.backend.input.dtype)
        if self._lut.itemsize == 1:  # int8/uint8 input: cv2.LUT maps bytes; the result is reinterpreted
            return cv2.LUT(rgb, self._lut.view(np.uint8)).view(self._lut.dtype)[None]
        return self._lut[rgb][None]

    def predict(self, bgr: np.ndarray | None, x: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(float32 probabilities in label order, milliseconds inside the runtime) for one BGR frame, or for
        `x`, the frame already made into the model's input by preprocess() (on another thread, say)."""
        if x is None:
            x = self.preprocess(bgr)
        t = time.perf_counter()
        y = self.backend.run(x)
        ms = (time.perf_counter() - t) * 1000.0
        y = np.asarray(y).reshape(-1)
        if self.output_quantization is not None:
            y = dequantize(y, *self.output_quantization)
        return y.astype(np.float32, copy=False), ms

    def classify(self, bgr: np.ndarray | None, x: np.ndarray | None = None) -> Result:
        """The top-k categories of one OpenCV BGR (or gray, or BGRA) frame of any size, or of its input tensor
        `x` = preprocess(bgr) when that was made already (edge.reader does it on its thread)."""
        scores, ms = self.predict(bgr, x)
        order = np.argsort(-scores, kind="stable")[: self.top_k]
        categories = [Category(self.labels[i], float(scores[i])) for i in order if scores[i] >= self.min_score]
        return Result(categories, ms, scores)

    def describe(self) -> str:
        """One line for the log: what runs, and how."""
        q = self.input_quantization
        quant = f", input scale {q[0]:.6g} zero point {q[1]}" if q else ""
        runtime = self.backend.name
        package = getattr(self.backend, "package", None)  # which LiteRT wheel: ai_edge_litert or tflite_runtime
        if package:
            runtime += f" ({package})"
        checked = "no manifest, not verified" if self.unverified else f"sha256 {self.entry.sha256[:12]}, verified"
        return (
            f"{self.entry.file} ({self.entry.format}, {checked}) on {runtime}, "
            f"{self.size}x{self.size} {self.backend.input.dtype}{quant}, {len(self.labels)} labels"
        )


def _quantization(runtime: TensorSpec, listed: TensorSpec, which: str, file: str, where: str):
    """(scale, zero_point) to use for a tensor, or None for a float one.

    The runtime's own parameters are used; they must agree with the manifest's. A runtime that does not
    report them (onnxruntime) uses the manifest's.
    """
    if runtime.dtype != listed.dtype:
        raise ManifestError(
            f"{where}: {file} {which} is {runtime.dtype} in the model but {listed.dtype} in the manifest: the "
            "manifest belongs to another export; re-run export"
        )
    if np.dtype(runtime.dtype).kind not in "iu":
        return None
    if runtime.scale is None:
        if listed.scale is None:
            raise ManifestError(f"{where}: {file} {which} is {runtime.dtype} but has no quantization; re-run export")
        return float(listed.scale), int(listed.zero_point or 0)
    if listed.scale is not None and (
        not np.isclose(runtime.scale, listed.scale, rtol=1e-6, atol=0) or runtime.zero_point != listed.zero_point
    ):
        raise ManifestError(
            f"{where}: {file} {which} quantization is scale {runtime.scale:.6g}, zero point {runtime.zero_point} in "
            f"the model but {listed.scale:.6g}, {listed.zero_point} in the manifest: the manifest belongs to another "
            "export; re-run export"
        )
    return runtime.scale, int(runtime.zero_point)
