"""run_benchmarks(): measure every published artifact of a run on this machine, merge other devices' rows, and
write results.csv/json, results.md, the plots and report.md into runs/NAME/bench/ (each file atomically).

Per thread count, every artifact is opened as edge opens it (manifest, sha256, tensors); the test split runs
through it once for accuracy; then all artifacts are timed together, in interleaved rounds; then each runs
edge's camera loop on a 640x480 video made from the test images, in turns with a one-thread reference loop (read,
preprocess, infer, draw: the TensorFlow Raspberry Pi example's) whose figures go in the same row as serial_loop_*.
Last, the robustness pass (benchmarks.robustness): each artifact once more on corrupted copies of the test images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import accuracy, robustness
from benchmarks.compare import comparisons, devices
from benchmarks.device import loop
from benchmarks.device.latency import time_rows
from benchmarks.device.machine import default_device_name, device_meta
from benchmarks.device.rows import add_error, format_table, load_rows, new_row, row_key, save_results
from benchmarks.settings import BenchError, BenchSettings, check_settings
from contracts.atomic import write_json, write_text
from contracts.console import first_line, log
from contracts.formats import FORMATS, FormatError, resolve_formats
from contracts.manifest import ArtifactEntry, Manifest, ManifestError, load_manifest

_ORDER = {name: i for i, name in enumerate(FORMATS)}


def _artifacts(s: BenchSettings, manifest: Manifest) -> tuple[list[ArtifactEntry], list[str]]:
    """(published artifacts to measure, requested formats the manifest does not list)."""
    try:
        wanted = [f.name for f in resolve_formats(s.formats)]
    except FormatError as e:
        raise BenchError(f"--formats: {e}") from None
    unknown = [a for a in manifest.artifacts if a.format not in FORMATS and s.formats == "all"]
    chosen = [a for a in manifest.artifacts if a.format in wanted] + unknown
    return chosen, [f for f in wanted if f not in manifest.formats]


def _test_split(run: Path, manifest: Manifest, cap: int) -> tuple[np.ndarray, np.ndarray]:
    from train.data import load_split

    try:
        x, y, names = load_split(run, "test")
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise BenchError(f"{run}: no test split ({e}); pass a run folder written by `python -m train`") from None
    if list(names) != list(manifest.labels):
        raise BenchError(f"{run}/splits.json lists classes {names} but the manifest {manifest.labels}: re-run export")
    return (x[:cap], y[:cap]) if cap else (x, y)


def _reference(s: BenchSettings, run: Path, x: np.ndarray, probs: dict) -> tuple[str | None, np.ndarray | None]:
    """(reference name, its probabilities): the float Keras model, else the tflite_fp32 artifact's."""
    if s.reference in ("auto", "keras"):
        try:
            return accuracy.KERAS_REFERENCE, accuracy.keras_reference(run, x)
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            if s.reference == "keras":
                raise BenchError(f"--reference keras: {e}; pass --reference tflite_fp32 to compare with that") from None
            log(f"reference: the float Keras model is unavailable ({first_line(e)}); using tflite_fp32")
    if accuracy.TFLITE_REFERENCE in probs:
        return accuracy.TFLITE_REFERENCE, probs[accuracy.TFLITE_REFERENCE]
    log("reference: no tflite_fp32 artifact was measured either, so agreement is left empty")
    return None, None


def _measure_host(s: BenchSettings, run: Path, manifest: Manifest, arts: list[ArtifactEntry], x, y, device: str):
    """Rows of this machine, and each artifact's test probabilities."""
    from contracts.runners.classifier import Classifier

    export = run / "export"
    rows, probs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        video = capture_ms = frame_labels = video_error = None
        if s.loop_frames:
            size = (s.frame_width, s.frame_height)
            try:
                frames = loop.frames_from_images(x, s.loop_frames, size)
                video = loop.write_video(frames, Path(tmp) / "loop.mp4", s.video_codec)
                capture_ms = loop.measure_capture(video)
            except Exception as e:  # e.g. a codec this OpenCV lacks: every row says so, latency stands
                video, video_error = None, e
            frame_labels = [int(y[i % len(y)]) for i in range(s.loop_frames)]
            if video is not None:
                log(f"camera loop: {s.loop_frames} frames {size[0]}x{size[1]} ({s.video_codec}), capture alone "
                     f"{capture_ms:.3f} ms/frame")  # fmt: skip
        for t in s.threads:
            opened = []
            for a in arts:
                fmt = FORMATS.get(a.format)
                row = new_row(device, a.format, a.runtime, t, quantization=a.quantization,
                              size_mb=round(a.size_bytes / 1e6, 4), sha256=a.sha256[:12], file=a.file)  # fmt: skip
                rows.append(row)
                if fmt is None:
                    add_error(row, "load", f"format {a.format!r} is not in contracts.formats (update the toolkit)")
                    continue
                try:
                    clf = Classifier.from_model(export / a.file, a.runtime, t)
                except Exception as e:  # a failure is a row with an error, never a crash
                    add_error(row, "load", e)
                    continue
                if a.format not in probs:
                    try:
                        probs[a.format] = accuracy.predict_images(clf, x)
                    except Exception as e:  # e.g. a runtime error on some input: the row says so
                        add_error(row, "accuracy", e)
                opened.append((row, clf))
            time_rows([(r, c.backend) for r, c in opened], s.runs, s.warmup, s.rounds)
            for row, clf in opened:
                if video_error is not None:
                    add_error(row, "camera loop", video_error)
                elif video is not None:
                    try:
                        row.update(loop.loop_columns(clf, video, s.loop_warmup, frame_labels, s.loop_repeats),
                                   capture_ms=round(capture_ms, 4))  # fmt: skip
                    except Exception as e:  # the latency figures stand without the loop's
                        add_error(row, "camera loop", e)
                clf.backend.close()
                log(_progress(row))
    return rows, probs


def _progress(r: dict) -> str:
    if r.get("latency_ms_median") is None:
        return f"{r['format']} ({r['runtime']}, {r['threads']} threads): {r['error']}"
    loop_text = f", loop {r['loop_fps']:.0f} FPS" if r.get("loop_fps") else ""
    if r.get("loop_fps") and r.get("serial_loop_fps"):
        loop_text += f" ({r['loop_shape']}; one-thread loop {r['serial_loop_fps']:.0f} FPS: {r['loop_vs_serial']:.2f}x)"
    return (f"{r['format']} ({r['runtime']}, {r['threads']} threads): {r['latency_ms_median']:.3f} ms median"
            f"{loop_text}" + (f" [{r['error']}]" if r.get("error") else ""))  # fmt: skip


def _robustness(s: BenchSettings, run: Path, arts: list[ArtifactEntry], x, y) -> tuple[list[dict], dict]:
    """(robustness rows, meta["robustness"]) of every artifact that opens, on --robustness-images test images
    spread evenly over the split, at the most threads asked for (the figures do not depend on threads)."""
    from contracts.runners.classifier import Classifier

    names = robustness.parse_corruptions(s.corruptions)
    if not names:
        return [], {}
    if s.robustness_images and s.robustness_images < len(y):
        keep = np.unique(np.linspace(0, len(y) - 1, s.robustness_images).round().astype(int))
        x, y = x[keep], y[keep]
    opened: dict = {}
    try:
        for a in arts:
            if a.format in FORMATS and a.format not in opened:
                try:
                    opened[a.format] = Classifier.from_model(run / "export" / a.file, a.runtime, max(s.threads))
                except Exception as e:  # its row already says why it could not be opened
                    log(f"robustness: {a.format} left out ({first_line(e)})")
        predictors = {f: (lambda imgs, c=c: accuracy.predict_images(c, imgs).argmax(1)) for f, c in opened.items()}
        quant = {a.format: a.quantization for a in arts}
        rows, summary = robustness.measure_robustness(predictors, x, y, names, s.severities, quant, robustness.SEED)
    finally:
        for clf in opened.values():
            clf.backend.close()
    meta = {"corruptions": list(names), "severities": list(s.severities), "n": int(len(y)), "seed": robustness.SEED,
            "source": "benchmarks.device.corruptions", "summary": summary}  # fmt: skip
    return rows, meta


def _read_merge_files(s: BenchSettings) -> list[tuple[str, list[dict], dict]]:
    """(path, rows, meta) of every --merge file, read before anything is measured so a bad one fails fast."""
    out = []
    for path in s.merge:
        try:
            out.append((path, *load_rows(path)))
        except ValueError as e:
            raise BenchError(f"--merge: {e}") from None
    return out


def _merge(files: list[tuple[str, list[dict], dict]], rows: list[dict], meta: dict) -> list[dict]:
    """Adds other devices' rows; they borrow top-1/agreement from this run's row of the same file (sha256)."""
    host_acc = {(r["format"], r["sha256"]): r for r in rows if r.get("top1") is not None}
    seen = {row_key(r): i for i, r in enumerate(rows)}
    merged = list(rows)
    for path, extra, extra_meta in files:
        meta["devices"].update(extra_meta.get("devices") or {})
        meta.setdefault("merged", []).append(str(path))
        mine = [r for r in extra if r["device"] == meta["host"]]
        if mine:
            log(f"--merge {path}: {len(mine)} rows carry this machine's name ({meta['host']}) and are left out; name "
                 "the other device with --device-name when measuring there")  # fmt: skip
        for r in extra:
            if r["device"] == meta["host"]:
                continue
            acc = host_acc.get((r["format"], r.get("sha256")))
            if acc is not None and r.get("top1") is None:
                for k in ("top1", "agreement", "reference", "n_test", "per_class_top1", *robustness.ROBUST_COLUMNS):
                    r[k] = acc[k]
                r["accuracy_from"] = acc["accuracy_from"]
            elif acc is None:
                log(f"--merge {path}: {r['format']} on {r['device']} is not this run's file (sha256 "
                     f"{r.get('sha256')}): no accuracy figures for it")  # fmt: skip
            if row_key(r) in seen:  # the same device measured twice: the later file wins
                merged[seen[row_key(r)]] = r
            else:
                seen[row_key(r)] = len(merged)
                merged.append(r)
    order = {d: i for i, d in enumerate(devices(merged))}
    return sorted(merged, key=lambda r: (order[r["device"]], _ORDER.get(r["format"], 99), r["runtime"], r["threads"]))


def run_benchmarks(s: BenchSettings) -> list[dict]:
    """Measures, merges and writes everything; returns the rows (this machine's first).

    Raises:
        BenchError: the run, its manifest or test split, a flag or a --merge file is unusable.
    """
    check_settings(s)
    run = Path(s.run)
    if not run.is_dir():
        raise BenchError(f"{run} not found: pass --run runs/NAME (a folder made by `python -m train`)")
    try:
        manifest = load_manifest(run / "export")
    except ManifestError as e:
        raise BenchError(str(e)) from None
    arts, unpublished = _artifacts(s, manifest)
    if not arts:
        raise BenchError(f"{run / 'export'} publishes none of --formats {s.formats}; it has {manifest.formats}")
    x, y = _test_split(run, manifest, s.max_test_images)
    merge_files = _read_merge_files(s)
    out = Path(s.out) if s.out else run / "bench"
    write_json(out / "bench_settings.json", s.to_dict())  # the resolved settings beside the results
    device = s.device_name or default_device_name()
    video = {"frames": s.loop_frames, "repeats": s.loop_repeats, "codec": s.video_codec,
             "size": [s.frame_width, s.frame_height], "source": "test images, stretched",
             "reference": "serial_loop_*: read, preprocess, infer, draw on one thread"}  # fmt: skip
    meta = {"run": manifest.run, "host": device, "devices": {device: device_meta(device)}, "n_test": int(len(y)),
            "manifest_created": manifest.created, "export_tool_versions": manifest.tool_versions,
            "not_published": unpublished, "loop_video": video}  # fmt: skip
    log(f"{manifest.run}: {len(arts)} artifacts x threads {','.join(map(str, s.threads))} on {device}, "
         f"{len(y)} test images" + (f"; not published: {', '.join(unpublished)}" if unpublished else ""))  # fmt: skip

    rows, probs = _measure_host(s, run, manifest, arts, x, y, device)
    meta["load_average_after"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    ref_name, ref_probs = _reference(s, run, x, probs)
    if ref_probs is not None:
        ref_cols = accuracy.accuracy_columns(ref_probs, y, manifest.labels, None)
        meta["reference"] = {"name": ref_name, "top1": ref_cols["top1"], "per_class_top1": ref_cols["per_class_top1"]}
    for r in rows:
        if r["format"] in probs:
            r.update(accuracy.accuracy_columns(probs[r["format"]], y, manifest.labels, ref_probs),
                     reference=ref_name, accuracy_from=device)  # fmt: skip
    robust_rows, meta["robustness"] = _robustness(s, run, arts, x, y)
    if robust_rows:
        robustness.write_robustness(out, robust_rows, {"run": manifest.run, "host": device, **meta["robustness"]})
    for r in rows:
        r.update(robustness.robust_columns(robust_rows, r["format"]))
    rows = _merge(merge_files, rows, meta)
    write_outputs(s, out, manifest.run, rows, meta, robust_rows)
    return rows


def write_outputs(s: BenchSettings, out: Path, run_name: str, rows: list[dict], meta: dict,
                  robust_rows: list[dict] | None = None) -> None:  # fmt: skip
    """results.csv/json, results.md (also printed), the plots (robustness.png from robust_rows) and report.md."""
    from benchmarks.report import render_report

    save_results(out, rows, meta, {"settings": s.to_dict(), "comparisons": comparisons(rows)})
    table = "\n\n".join(f"{dev}\n\n{format_table([r for r in rows if r['device'] == dev], False)}"
                        for dev in devices(rows))  # fmt: skip
    write_text(out / "results.md", table)
    print("\n" + table, flush=True)
    plots = {}
    if s.plots:
        from benchmarks.plots import save_plots

        plots = save_plots(rows, out, meta.get("reference") or {}, meta["host"], robust_rows or [])
    write_text(out / "report.md", render_report(run_name, rows, meta, plots, s.noise, robust_rows))
    log(f"wrote {out}/: results.csv, results.json, results.md, report.md" + (f", {', '.join(plots)}" if plots else ""))


def below_floor(rows: list[dict], floor: float, host: str) -> list[str]:
    """Artifacts measured on `host` whose test top-1 is below `floor` (or could not be measured), one line each.
    Merged devices' rows are left out: their top-1 is the host's."""
    bad: dict[str, str] = {}
    for r in rows:
        if r["device"] != host:
            continue
        if r.get("top1") is None:
            bad.setdefault(r["format"], f"{r['format']}: no top-1 ({r.get('error') or 'not measured'})")
        elif r["top1"] < floor:
            bad[r["format"]] = f"{r['format']}: top-1 {r['top1']:.4f} < --min-accuracy {floor:g}"
    return list(bad.values())
