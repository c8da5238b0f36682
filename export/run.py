"""export_run(): one export as a list of named steps.

The steps, in order: open the run (its settings, labels and Keras models, and the preprocessing its float model
applies), the reference (the test split and the Keras models' outputs on it), the calibration images, then for each
format: convert it to a temporary name, label it (TFLite metadata or ONNX metadata_props: export.label), check
that file in its own runtime against Keras (the parity gate), and only then publish it (rename it into place). The
manifest is written last, atomically.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from contracts.atomic import atomic_path, write_json
from contracts.console import first_line, log
from contracts.formats import FORMATS, ExportFormat, resolve_formats
from contracts.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ArtifactEntry,
    Manifest,
    ManifestError,
    Preprocessing,
    load_manifest,
    package_versions,
    sha256_file,
    write_manifest,
)
from export.errors import ExportError
from export.label import is_labelled, label
from export.model_info import ModelInfo, model_info
from export.parity import check_parity
from export.runtime import predict, tensor_specs
from export.settings import ExportSettings
from train.runfolder import FLOAT_MODEL, QAT_MODEL
from train.settings import RunSettings, load_run_settings

__all__ = ["ExportError", "export_run"]

# The packages whose versions the manifest records: what made the artifacts and what checked them.
TOOLS = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx", "onnxruntime",
         "ai-edge-litert", "numpy", "opencv-python-headless")  # fmt: skip


@dataclass(frozen=True)
class SourceModels:
    """The run's Keras models that the formats are converted from."""

    keras: dict  # "float" -> model, and "qat" -> model when a format needs it and the run has one
    sha256: dict  # the same keys -> checksum of the file each was loaded from (for up-to-date checks)


@dataclass(frozen=True)
class Reference:
    """What every artifact is checked against: the test split and its source Keras model's outputs on it."""

    images: np.ndarray  # uint8 RGB test images (the first --max-test-images if given)
    labels: np.ndarray
    keras_probs: dict  # "float" / "qat" -> N x classes probabilities
    float_top1: float  # the float Keras model's test top-1: the reference for every artifact's drop


def export_run(s: ExportSettings) -> dict:
    """Exports a run; returns {"published": [...], "up_to_date": [...], "failed": {format: reason},
    "skipped": {format: reason}}.

    Raises:
        ExportError: the run folder, its models, its labels or its model's preprocessing are unusable.
        FormatError: an unknown format name (the message lists the valid ones).
        FileNotFoundError, train.settings.SettingsError: the run has no usable settings.json.
        train.data.DataError: its splits.json is missing or damaged.
    """
    formats = resolve_formats(s.formats)
    run = open_run(s.run)
    rs = load_run_settings(run)
    export_dir = prepare_export_dir(run, s)
    models = load_models(run, need_qat=any(f.source == "qat" for f in formats))
    labels = read_labels(run, models.keras["float"])
    preprocessing = read_preprocessing(run, models.keras["float"])
    ref = reference(run, models, s.max_test_images)
    calibration = choose_calibration(run, rs.settings.seed, s.calibration_images)
    ts = rs.settings
    describe = functools.partial(model_info, run=run.name, backbone=ts.backbone, alpha=ts.alpha, labels=labels,
                                 image_size=ts.image_size, preprocessing=preprocessing)  # fmt: skip
    result, entries = export_formats(formats, models, calibration, ref, export_dir, s, describe)
    write_run_manifest(run, rs, labels, preprocessing, ref.float_top1, entries, export_dir)
    return result


def open_run(run: str | Path) -> Path:
    """The run folder, resolved. Raises ExportError if it does not exist."""
    run = Path(run)
    if not run.is_dir():
        raise ExportError(f"{run} not found: pass --run runs/NAME (a folder made by `python -m train`)")
    return run.resolve()


def prepare_export_dir(run: Path, s: ExportSettings) -> Path:
    """runs/NAME/export/, cleared of the temporary files of an export killed half way, with export_settings.json."""
    export_dir = run / "export"
    export_dir.mkdir(exist_ok=True)
    for leftover in export_dir.glob(".*.partial*"):  # an export killed half way: start that artifact again
        leftover.unlink()
    write_json(export_dir / "export_settings.json", s.to_dict())
    return export_dir


def load_models(run: Path, need_qat: bool) -> SourceModels:
    """The float model, and the QAT model too if need_qat and the run has one (it costs seconds to load).

    Raises:
        ExportError: the run has no float model (training did not finish).
    """
    f = run / FLOAT_MODEL
    if not f.is_file():
        raise ExportError(f"{f} not found: the run did not finish training; re-run `python -m train` with the same "
                          "arguments to resume it")  # fmt: skip
    import tf_keras as keras

    models = {"float": keras.models.load_model(str(f), compile=False)}
    shas = {"float": sha256_file(f)}
    q = run / QAT_MODEL
    if need_qat and q.is_file():
        from train.qat import load_qat_model

        models["qat"] = load_qat_model(q)
        shas["qat"] = sha256_file(q)
    return SourceModels(keras=models, sha256=shas)


def read_labels(run: Path, model) -> list[str]:
    """labels.txt, one class name a line, in the model's output order.

    Raises:
        ExportError: it does not list one label per model output.
    """
    path = run / "labels.txt"
    labels = path.read_text().split("\n")[:-1] if path.is_file() else []
    n = model.output_shape[-1]
    if len(labels) != n:
        raise ExportError(f"{path} lists {len(labels)} labels but the model has {n} outputs: restore "
                          "the labels.txt written by training, or retrain")  # fmt: skip
    return labels


def read_preprocessing(run: Path, model) -> Preprocessing:
    """What the float model's preprocessing layer does (export.preprocessing); ExportError if it has none."""
    from export.preprocessing import preprocessing_of

    return preprocessing_of(model, str(run / FLOAT_MODEL))


def reference(run: Path, models: SourceModels, max_images: int = 0) -> Reference:
    """The test split train recorded, and each Keras model's probabilities on it (the float top-1 is logged)."""
    from train.data import load_split, split_length

    n = split_length(run, "test")
    x, y, _ = load_split(run, "test", indices=range(min(max_images, n)) if max_images else None)
    probs = {k: _predict(m, x) for k, m in models.keras.items()}
    top1 = float(np.mean(probs["float"].argmax(1) == y))
    log(f"{run.name}: float Keras test top-1 {top1:.4f} on {len(y)} images")
    return Reference(images=x, labels=y, keras_probs=probs, float_top1=top1)


def _predict(model, images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """model.predict on uint8 images, cast to float32 a chunk at a time (not a float32 copy of the whole split);
    the chunks are whole 64-image batches, so the batches are the ones a single call would make."""
    return np.concatenate([model.predict(images[i : i + chunk].astype(np.float32), batch_size=64, verbose=0)
                           for i in range(0, len(images), chunk)])  # fmt: skip


def calibration_indices(run: Path, seed: int, n: int) -> np.ndarray:
    """Which n training images calibrate int8: the first n of a permutation of the training split seeded by the
    run's seed (export.int8_compare draws the same ones)."""
    from train.data import split_length

    return np.random.default_rng(seed).permutation(split_length(run, "train"))[:n]


def choose_calibration(run: Path, seed: int, n: int) -> np.ndarray:
    """The n calibration images (calibration_indices), decoding only those, not the whole training split."""
    from train.data import load_split

    return load_split(run, "train", indices=calibration_indices(run, seed, n))[0]


def convert(fmt: ExportFormat, model, calibration: np.ndarray, path: Path, s: ExportSettings) -> None:
    """Writes `path` with fmt's converter (the formats table names it), given the settings it takes."""
    module, func = fmt.converter.split(":")
    fn = getattr(importlib.import_module(module), func)
    fn(model, calibration, path, **{k: getattr(s, k) for k in fmt.converter_options})


def check(fmt: ExportFormat, path: Path, ref: Reference, source_sha: str) -> ArtifactEntry:
    """The parity gate: runs the artifact in its own runtime on the test split and compares it with Keras.

    Returns:
        Its manifest entry, with the parity figures.

    Raises:
        ExportError: it fails fmt's thresholds; the message lists each failure.
    """
    probs = predict(path, ref.images)
    parity = check_parity(fmt, probs, ref.keras_probs[fmt.source], ref.labels, ref.float_top1)
    if not parity.passed:
        raise ExportError("; ".join(parity.failures))
    inp, out = tensor_specs(path)
    return ArtifactEntry(
        format=fmt.name, file=fmt.filename, sha256=sha256_file(path), size_bytes=path.stat().st_size,
        quantization=fmt.quantization, runtime=fmt.runtime, input=inp, output=out, source_model=fmt.source,
        source_sha256=source_sha, test_top1=parity.test_top1, parity=parity.to_dict(fmt),
    )  # fmt: skip


def publish(fmt: ExportFormat, models: SourceModels, calibration: np.ndarray, ref: Reference, export_dir: Path,
            s: ExportSettings, info: ModelInfo) -> ArtifactEntry:  # fmt: skip
    """Converts, labels and checks one format under a temporary name; renames it into place only if it passed."""
    with atomic_path(export_dir / fmt.filename) as tmp:
        convert(fmt, models.keras[fmt.source], calibration, tmp, s)
        label(fmt, tmp, info)
        return check(fmt, tmp, ref, models.sha256[fmt.source])


def _up_to_date(fmt: ExportFormat, entry: ArtifactEntry | None, export_dir: Path, source_sha: str,
                labels: list[str]) -> bool:  # fmt: skip
    """The artifact on disk is the one the manifest lists, from this source model, in the format's dtypes, labelled."""
    path = export_dir / fmt.filename
    return (entry is not None and entry.source_sha256 == source_sha and path.is_file()
            and (entry.input.dtype, entry.output.dtype) == (fmt.input_dtype, fmt.output_dtype)
            and sha256_file(path) == entry.sha256 and is_labelled(fmt, path, labels))  # fmt: skip


def export_formats(formats: list[ExportFormat], models: SourceModels, calibration: np.ndarray, ref: Reference,
                   export_dir: Path, s: ExportSettings, describe: Callable[[ExportFormat, str], ModelInfo],
                   ) -> tuple[dict, dict[str, ArtifactEntry]]:  # fmt: skip
    """Publishes each format, unless its source model is missing or (without --force) it is up to date.

    describe(fmt, source model sha256) is what each artifact is labelled with (export.model_info.model_info).

    A format that fails (converter error or parity gate) is refused alone; the others go on.

    Returns:
        (export_run's result, the manifest entries: the previous manifest's, updated by this export).
    """
    try:
        previous = {a.format: a for a in load_manifest(export_dir / MANIFEST_NAME).artifacts}
    except ManifestError:
        previous = {}
    entries = dict(previous)
    result = {"published": [], "up_to_date": [], "failed": {}, "skipped": {}}
    for fmt in formats:
        if fmt.source not in models.keras:
            result["skipped"][fmt.name] = f"{export_dir.parent.name} has no QAT model (phase 3 did not run)"
            log(f"{fmt.name}: skipped, {result['skipped'][fmt.name]}")
            continue
        final = export_dir / fmt.filename
        info = describe(fmt, models.sha256[fmt.source])
        if not s.force and _up_to_date(fmt, previous.get(fmt.name), export_dir, models.sha256[fmt.source], info.labels):
            result["up_to_date"].append(fmt.name)
            log(f"{fmt.name}: up to date ({final.name}), skipped; --force re-exports")
            continue
        entries.pop(fmt.name, None)
        t = time.time()
        try:
            entry = publish(fmt, models, calibration, ref, export_dir, s, info)
        except Exception as e:  # a converter or gate failure refuses this format only; the others go on
            result["failed"][fmt.name] = first_line(e)
            final.unlink(missing_ok=True)  # a stale older file must not pass for a checked one
            log(f"{fmt.name}: NOT published: {first_line(e)}")
            continue
        entries[fmt.name] = entry
        result["published"].append(fmt.name)
        p = entry.parity
        log(
            f"{fmt.name}: published {final.name} ({entry.size_bytes / 1e6:.2f} MB, {time.time() - t:.0f} s): "
            f"agreement {p['agreement']:.4f}, max |dp| {p['max_abs_diff']:.1e}, top-1 {p['test_top1']:.4f}"
        )
    return result, entries


def write_run_manifest(run: Path, rs: RunSettings, labels: list[str], preprocessing: Preprocessing,
                       float_top1: float, entries: dict[str, ArtifactEntry], export_dir: Path) -> Manifest:  # fmt: skip
    """manifest.json, written last and atomically, listing the entries in the formats table's order."""
    ts = rs.settings
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, run=run.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=labels, image_size=ts.image_size, preprocessing=preprocessing, backbone=ts.backbone, alpha=ts.alpha,
        weights_used=rs.weights_used, settings_sha256=ts.sha256(), float_test_top1=round(float_top1, 6),
        tool_versions=package_versions(TOOLS), artifacts=[entries[f] for f in FORMATS if f in entries],
    )  # fmt: skip
    write_manifest(manifest, export_dir / MANIFEST_NAME)
    log(f"manifest: {export_dir / MANIFEST_NAME} ({len(manifest.artifacts)} artifacts)")
    return manifest
