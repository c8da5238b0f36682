"""export_run(): convert, check, publish. An artifact is written to a temporary name, parity-checked in
its own runtime, and only then renamed into place; the manifest is written last, atomically.
"""

from __future__ import annotations

import importlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from contracts.atomic import atomic_path, write_json
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
from export.parity import check_parity
from export.runtime import predict, tensor_specs
from export.settings import ExportSettings

_TOOLS = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx", "onnxruntime",
          "ai-edge-litert", "numpy", "opencv-python-headless")  # fmt: skip


class ExportError(Exception):
    """The run cannot be exported as asked; the message names the file and the fix."""


def _log(msg: str) -> None:
    print(msg, flush=True)


def tool_versions() -> dict:
    return package_versions(_TOOLS)


def _load_models(run: Path, need_qat: bool):
    """({"float": model, "qat": model if asked for and present}, sha256 of each loaded file)."""
    from train.run import FLOAT_MODEL, QAT_MODEL

    f = run / FLOAT_MODEL
    if not f.is_file():
        raise ExportError(f"{f} not found: the run did not finish training; re-run `python -m train` with the same "
                          "arguments to resume it")  # fmt: skip
    import tf_keras as keras

    models = {"float": keras.models.load_model(str(f), compile=False)}
    shas = {"float": sha256_file(f)}
    q = run / QAT_MODEL
    if need_qat and q.is_file():  # loading and predicting with it costs seconds: only when a format needs it
        from train.qat import load_qat_model

        models["qat"] = load_qat_model(q)
        shas["qat"] = sha256_file(q)
    return models, shas


def _check_labels(run: Path, labels: list[str], model) -> None:
    n = model.output_shape[-1]
    if len(labels) != n:
        raise ExportError(f"{run / 'labels.txt'} lists {len(labels)} labels but the model has {n} outputs: restore "
                          "the labels.txt written by training, or retrain")  # fmt: skip


def _existing(export_dir: Path) -> dict[str, ArtifactEntry]:
    try:
        return {a.format: a for a in load_manifest(export_dir / MANIFEST_NAME).artifacts}
    except ManifestError:
        return {}


def _up_to_date(entry: ArtifactEntry | None, export_dir: Path, source_sha: str) -> bool:
    return (entry is not None and entry.source_sha256 == source_sha and (export_dir / entry.file).is_file()
            and sha256_file(export_dir / entry.file) == entry.sha256)  # fmt: skip


def _convert(fmt: ExportFormat, model, calibration, path: Path, s: ExportSettings) -> None:
    module, func = fmt.converter.split(":")
    fn = getattr(importlib.import_module(module), func)
    fn(model, calibration, path, **{k: getattr(s, k) for k in fmt.converter_options})


def export_run(s: ExportSettings) -> dict:
    """Exports a run; returns {"published": [...], "failed": {format: reason}, "skipped": {format: reason}}.

    Raises:
        ExportError: the run folder, its models or its labels are unusable.
        FormatError: an unknown format name (the message lists the valid ones).
    """
    formats = resolve_formats(s.formats)
    run = Path(s.run)
    if not run.is_dir():
        raise ExportError(f"{run} not found: pass --run runs/NAME (a folder made by `python -m train`)")
    run = run.resolve()
    export_dir = run / "export"
    export_dir.mkdir(exist_ok=True)
    for leftover in export_dir.glob(".*.partial*"):  # an export killed half way: start that artifact again
        leftover.unlink()
    write_json(export_dir / "export_settings.json", s.to_dict())

    from train.data import load_split
    from train.settings import load_settings

    ts = load_settings(run)
    labels = (run / "labels.txt").read_text().split("\n")[:-1] if (run / "labels.txt").is_file() else []
    models, shas = _load_models(run, need_qat=any(f.source == "qat" for f in formats))
    _check_labels(run, labels, models["float"])
    test_x, test_y, _ = load_split(run, "test")
    if s.max_test_images:
        test_x, test_y = test_x[: s.max_test_images], test_y[: s.max_test_images]
    train_x, _, _ = load_split(run, "train")
    rng = np.random.default_rng(ts.seed)
    calibration = train_x[rng.permutation(len(train_x))[: s.calibration_images]]
    keras_probs = {k: m.predict(test_x.astype(np.float32), batch_size=64, verbose=0) for k, m in models.items()}
    float_top1 = float(np.mean(keras_probs["float"].argmax(1) == test_y))
    _log(f"{run.name}: float Keras test top-1 {float_top1:.4f} on {len(test_y)} images")

    previous = _existing(export_dir)
    entries: dict[str, ArtifactEntry] = dict(previous)
    result = {"published": [], "up_to_date": [], "failed": {}, "skipped": {}}
    for fmt in formats:
        if fmt.source not in models:
            result["skipped"][fmt.name] = f"{run.name} has no QAT model (phase 3 did not run)"
            _log(f"{fmt.name}: skipped, {result['skipped'][fmt.name]}")
            continue
        final = export_dir / fmt.filename
        if not s.force and _up_to_date(previous.get(fmt.name), export_dir, shas[fmt.source]):
            result["up_to_date"].append(fmt.name)
            _log(f"{fmt.name}: up to date ({final.name}), skipped; --force re-exports")
            continue
        entries.pop(fmt.name, None)
        t = time.time()
        try:
            with atomic_path(final) as tmp:
                _convert(fmt, models[fmt.source], calibration, tmp, s)
                probs = predict(tmp, test_x)
                parity = check_parity(fmt, probs, keras_probs[fmt.source], test_y, float_top1)
                if not parity.passed:
                    raise ExportError("; ".join(parity.failures))
                inp, out = tensor_specs(tmp)
                entry = ArtifactEntry(
                    format=fmt.name, file=fmt.filename, sha256=sha256_file(tmp), size_bytes=tmp.stat().st_size,
                    quantization=fmt.quantization, runtime=fmt.runtime, input=inp, output=out,
                    source_model=fmt.source, source_sha256=shas[fmt.source], test_top1=parity.test_top1,
                    parity=parity.to_dict(fmt),
                )  # fmt: skip
        except Exception as e:  # a converter or gate failure refuses this format only; the others go on
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            result["failed"][fmt.name] = reason
            final.unlink(missing_ok=True)  # a stale older file must not pass for a checked one
            _log(f"{fmt.name}: NOT published: {reason}")
            continue
        entries[fmt.name] = entry
        result["published"].append(fmt.name)
        _log(
            f"{fmt.name}: published {final.name} ({entry.size_bytes / 1e6:.2f} MB, {time.time() - t:.0f} s): "
            f"agreement {parity.agreement:.4f}, max |dp| {parity.max_abs_diff:.1e}, top-1 {parity.test_top1:.4f}"
        )

    settings_doc = json.loads((run / "settings.json").read_text())
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, run=run.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=labels, image_size=ts.image_size, preprocessing=Preprocessing(), backbone=ts.backbone,
        alpha=ts.alpha, weights_used=settings_doc.get("weights_used", ts.weights), settings_sha256=ts.sha256(),
        float_test_top1=round(float_top1, 6), tool_versions=tool_versions(),
        artifacts=[entries[f] for f in FORMATS if f in entries],
    )  # fmt: skip
    write_manifest(manifest, export_dir / MANIFEST_NAME)
    _log(f"manifest: {export_dir / MANIFEST_NAME} ({len(manifest.artifacts)} artifacts)")
    return result
