"""The sweep's work: train, export and benchmark every grid point with the stages' own functions, then rank.

    result = run_sweep(SweepSettings(data="digits", alphas=(0.35, 0.5), sizes=(96, 128), budget_ms=30))
    result["pick"], result["runner_up"], result["exit_code"]   # rows (dicts), and 0 or NOTHING_FITS

Steps of one point (run_point): train (train.run.run_training, which reuses a finished run of the same
settings), export (_export: skipped while the manifest comes from the current model files), benchmark (_bench:
skipped while bench/results.json is newer than the manifest and has the rows asked for). A step that fails
makes rows with an error and the sweep goes on with the next point. The points run, cheapest first, on the
engine --engine names (_run_grid, sweep.engines: one by one here, or on a Dask cluster's workers). Then for the
whole grid: device latency (sweep.devices), the pick (sweep.pareto) and the files (sweep.report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

from benchmarks.device.corruptions import MIDDLE
from benchmarks.robustness import ROBUST_COLUMNS
from contracts.console import first_line, log
from contracts.formats import FORMATS
from sweep import devices, engines, pareto, report
from sweep.rows import new_row, point_name
from sweep.settings import SweepError, SweepSettings, resolve

NOTHING_FITS = 3  # exit code: no usable artifact within the budget (sweep.md names the fastest option)


def point_cost(alpha: float, size: int) -> float:
    """MACs (millions) of a point, from the table or derived; a rough stand-in for widths the table lacks."""
    try:
        return devices.macs_m(alpha, size)[0]
    except devices.DeviceError:
        return devices.MACS_M[(1.0, 224)] * alpha * alpha * (size / 224) ** 2


def estimate_seconds(done: list[tuple[float, float]], cost: float) -> float | None:
    """Seconds the next point should take: the seconds per MAC of the points trained so far x its MACs.
    Fixed costs make this over-estimate large points, which is the safe side of a time budget. None: no data."""
    total_cost = sum(c for c, _ in done)
    return sum(sec for _, sec in done) / total_cost * cost if done and total_cost > 0 else None


def _export(run: Path, formats: list[str]) -> dict[str, str]:
    """Exports what is not current; returns {format: why it was refused} for the asked formats.

    Export itself skips artifacts that are up to date, but it still rewrites the manifest, which would make every
    benchmark stale; so it is not called at all while every asked format is published from the current model
    files (or was refused for these same files, as recorded in sweep_export.json)."""
    from contracts.atomic import write_json
    from contracts.manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_file
    from export.run import export_run
    from export.settings import ExportSettings
    from train.runfolder import FLOAT_MODEL, QAT_MODEL

    record_path = run / "sweep_export.json"
    shas = {k: sha256_file(run / f) for k, f in (("float", FLOAT_MODEL), ("qat", QAT_MODEL)) if (run / f).is_file()}
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    refused = record.get("refused", {}) if record.get("source_sha256") == shas else {}
    try:
        published = {a.format: a for a in load_manifest(run / "export" / MANIFEST_NAME).artifacts}
    except ManifestError:
        published = {}

    def current(f: str) -> bool:
        a = published.get(f)
        ok = a is not None and a.source_sha256 == shas.get(FORMATS[f].source) and (run / "export" / a.file).is_file()
        return ok or f in refused

    if not all(current(f) for f in formats):
        result = export_run(ExportSettings(run=str(run), formats=",".join(formats)))
        refused = {k: v for k, v in refused.items() if k not in result["published"] + result["up_to_date"]}
        refused.update({**result["failed"], **result["skipped"]})
        write_json(record_path, {"source_sha256": shas, "refused": refused})
    else:
        log(f"{run.name}: export up to date (manifest from the current model files), skipped")
    return {f: refused[f] for f in formats if f in refused}


def _bench(s: SweepSettings, run: Path, formats: list[str]) -> tuple[list[dict], str]:
    """(benchmark rows, the device name they were measured on), reusing bench/results.json when it is newer than
    the manifest and holds a row for every published asked format at --threads."""
    from benchmarks.device.rows import load_rows
    from benchmarks.run import run_benchmarks
    from benchmarks.settings import BenchSettings
    from contracts.manifest import MANIFEST_NAME, load_manifest

    results, manifest = run / "bench" / "results.json", run / "export" / MANIFEST_NAME
    if results.is_file() and manifest.is_file() and results.stat().st_mtime > manifest.stat().st_mtime:
        rows, meta = load_rows(results)
        have = {(r["format"], r["threads"]) for r in rows if r["device"] == meta.get("host")}
        published = [f for f in formats if f in load_manifest(manifest).formats]
        key = pareto.metric(s.pick_by)
        lacking = [f for f in published if s.pick_by != "top1" and not any(
            r.get(key) is not None for r in rows if r["device"] == meta.get("host") and r["format"] == f)]  # fmt: skip
        if all((f, s.threads) in have for f in published) and not lacking:
            log(f"{run.name}: benchmark up to date (bench/results.json newer than the manifest), skipped")
            return rows, meta.get("host")
        if lacking:
            log(f"{run.name}: bench/results.json has no {key} for {', '.join(lacking)} (--pick-by {s.pick_by}): "
                "benchmarking again")  # fmt: skip
    # No camera loop and no per-point plots: the sweep needs accuracy and inference latency only. Robustness at
    # the one severity the robust_* columns hold (MIDDLE), not all five: 7 passes over the images, not 31.
    bench = BenchSettings(run=str(run), formats=",".join(formats), threads=(s.threads,), runs=s.runs,
                          warmup=s.warmup, rounds=min(5, s.runs), loop_frames=0, plots=False,
                          severities=(MIDDLE,))  # fmt: skip
    rows = run_benchmarks(bench)
    return rows, rows[0]["device"]


def run_point(s: SweepSettings, base, alpha: float, size: int, host: str) -> tuple[list[dict], bool]:
    """Trains, exports and benchmarks one grid point with the stages' own functions, each skipped when done.

    Args:
        s: the resolved settings.
        base: the train.settings.TrainSettings every point starts from (width, size and folder are set here).
        alpha: the point's width.
        size: the point's input side.
        host: this machine's device name (the `device` column of --device this rows that were not measured).

    Returns:
        (one row per asked format, whether this call trained). A stage that fails makes rows with an error.
    """
    from train.run import run_training

    run = s.sweep_dir / point_name(alpha, size)
    formats = s.formats.split(",")
    device = s.device if s.device != "this" else host
    fresh = not (run / "metrics.json").is_file()
    log(f"--- {run.name}: " + ("training" if fresh else "trained already"))

    def failed(stage: str, e: BaseException, only=formats) -> list[dict]:
        log(f"{run.name}: {stage} failed: {first_line(e)}")
        return [new_row(s, alpha, size, f, device, error=f"{stage}: {first_line(e)}") for f in only]

    try:
        run_training(dataclasses.replace(base, alpha=alpha, image_size=size, out=str(run)))
    except Exception as e:  # a point that cannot train is rows with an error; the other points go on
        return failed("train", e), fresh
    try:
        refused = _export(run, formats)
    except Exception as e:  # e.g. a model file that will not load
        return failed("export", e), fresh
    rows = [new_row(s, alpha, size, f, device, error=f"export: {why}") for f, why in refused.items()]
    measured = [f for f in formats if f not in refused]
    if not measured:
        return rows, fresh
    try:
        bench_rows, bench_host = _bench(s, run, measured)
    except Exception as e:  # BenchError, or anything else: the rows say so and the sweep goes on
        return rows + failed("bench", e, measured), fresh
    device = s.device if s.device != "this" else bench_host
    for f in measured:
        b = next((r for r in bench_rows if r["device"] == bench_host and r["format"] == f
                  and r["threads"] == s.threads), None)  # fmt: skip
        if b is None:
            rows.append(new_row(s, alpha, size, f, device, error="bench: not measured (not published by export)"))
            continue
        rows.append(new_row(s, alpha, size, f, device, runtime=b["runtime"], size_mb=b.get("size_mb"),
                            top1=b.get("top1"), agreement=b.get("agreement"), sha256=b.get("sha256"),
                            latency_ms_here=b.get("latency_ms_median"), error=b.get("error") or "",
                            **{k: b.get(k) for k in ROBUST_COLUMNS}))  # fmt: skip
    return rows, fresh


def check_metric(rows: list[dict], pick_by: str) -> None:
    """Raises SweepError when a row that could be ranked by top-1 lacks the --pick-by figure (benchmark results
    from before the robustness pass, or measured with --corruptions leaving that corruption out)."""
    key = pareto.metric(pick_by)
    lacking = [pareto.name(r) for r in rows if pareto.usable(r) and r.get(key) is None]
    if key != pareto.Y and lacking:
        shown = ", ".join(lacking[:4]) + (f" and {len(lacking) - 4} more" if len(lacking) > 4 else "")
        raise SweepError(f"--pick-by {pick_by}: no {key} for {shown} (benchmark results without robustness "
                         "figures): re-run `python -m benchmarks --run <point folder>` on those points, or pick "
                         "by top1")  # fmt: skip


def _measured_rows(s: SweepSettings) -> list[dict]:
    """The rows of every --merge file (any device; add_device_latency picks the target's)."""
    from benchmarks.device.rows import load_rows

    measured = []
    for path in s.merge:
        try:
            measured += load_rows(path)[0]
        except ValueError as e:
            raise SweepError(f"--merge: {e}") from None
    return measured


def _train_base(s: SweepSettings, train_base=None):
    """The TrainSettings every point starts from: train_base (default TrainSettings()) with the sweep's data and
    the training flags it was given."""
    from train.settings import TrainSettings

    knobs = {k: getattr(s, k) for k in ("epochs", "fine_tune_epochs", "qat_epochs", "weights", "batch_size")}
    return dataclasses.replace(train_base or TrainSettings(), data=s.data,
                               **{k: v for k, v in knobs.items() if v is not None})  # fmt: skip


def _out_of_time(s: SweepSettings, used: float, estimate: float | None) -> str:
    """Why a point that still has to train is not started under --max-minutes, or "" when it may start."""
    limit = s.max_minutes * 60
    if not s.max_minutes or (used < limit and not (estimate and used + estimate > limit)):
        return ""
    return (f"not run: --max-minutes {s.max_minutes:g} would be exceeded ({used / 60:.1f} min used, this "
            f"point estimated at {(estimate or 0) / 60:.1f} min)")  # fmt: skip


def _rank(s: SweepSettings, rows: list[dict], measured: list[dict]) -> None:
    """Device latency and within_budget on every row, then the rows in grid and formats-table order, in place."""
    devices.add_device_latency(rows, s.device, measured, s.measured_device)
    for r in rows:
        r["within_budget"] = None if r.get("latency_ms_device") is None else r["latency_ms_device"] <= s.budget_ms
    order = {f: i for i, f in enumerate(FORMATS)}
    rows.sort(key=lambda r: (r["alpha"], r["size"], order.get(r["format"], 99)))


def _run_grid(s: SweepSettings, base, grid: list[tuple[float, int]], host: str) -> tuple[list, list, dict]:
    """Runs the grid's points, cheapest first, on the engine --engine names (sweep.engines), keeping each of its
    slots busy and starting no point that --max-minutes rules out. Returns (rows in the order points finished,
    not_run, {point: {"worker", "trained", "seconds"}})."""
    t0, trained, rows, not_run, placed, todo = time.monotonic(), [], [], [], {}, list(grid)
    device = s.device if s.device != "this" else host

    def blank(alpha: float, size: int, why: str) -> list[dict]:
        log(f"--- {point_name(alpha, size)}: {why}")
        return [new_row(s, alpha, size, f, device, error=why) for f in s.formats.split(",")]

    with contextlib.closing(engines.open_engine(s)) as engine:
        while todo or engine.running:
            while todo and engine.running < engine.slots():
                alpha, size = todo.pop(0)
                fresh = not (s.sweep_dir / point_name(alpha, size) / "metrics.json").is_file()
                est = estimate_seconds(trained, point_cost(alpha, size))
                if why := _out_of_time(s, time.monotonic() - t0, est) if fresh else "":
                    not_run.append({"point": point_name(alpha, size), "reason": why})
                    rows += blank(alpha, size, why)
                else:
                    engine.submit(run_point, s, base, alpha, size, host)
            if not engine.running:
                continue
            d = engine.next_done()  # an "engine:" error: the point raised (its workers died), rows say so
            rows += blank(d.alpha, d.size, d.error) if d.error else d.rows
            if d.trained:
                trained.append((point_cost(d.alpha, d.size), d.seconds))
            where = {"worker": d.worker, "trained": d.trained, "seconds": round(d.seconds, 1)}
            placed[point_name(d.alpha, d.size)] = where
            if engine.name != "local" and not d.error:
                log(f"--- {point_name(d.alpha, d.size)}: done on {d.worker} in {d.seconds:.0f} s"
                    + (", trained" if d.trained else ", reused"))  # fmt: skip
    return rows, not_run, placed


def run_sweep(s: SweepSettings, train_base=None) -> dict:
    """Trains, exports and benchmarks every grid point (reusing what is done) and writes the sweep's outputs.

    Args:
        s: the sweep's settings (resolved here).
        train_base: a train.settings.TrainSettings holding the training choices the sweep neither varies nor
            passes through (learning rate, patience, ...); default TrainSettings().

    Returns:
        {"rows", "pick", "runner_up", "message", "not_run", "host", "exit_code"}: pick and runner_up are rows (or
        None), not_run is [{"point", "reason"}], exit_code 0 or NOTHING_FITS. sweep.report.write_report writes it.

    Raises:
        SweepError: a flag or a --merge file is unusable.
    """
    from benchmarks.device.machine import default_device_name
    from contracts.atomic import write_json

    s = resolve(s)
    measured = _measured_rows(s)
    base = _train_base(s, train_base)
    out = s.sweep_dir
    write_json(out / "sweep_settings.json", {**s.to_dict(), "train_base": base.to_dict()})
    host = default_device_name()
    grid = sorted(((a, z) for a in s.alphas for z in s.sizes), key=lambda p: (point_cost(*p), p))
    log(f"sweep: {len(grid)} points, cheapest first ({', '.join(point_name(a, z) for a, z in grid)}) into {out}/; "
        f"target {s.device}, budget {s.budget_ms:g} ms, {s.threads} threads here on {host}")  # fmt: skip
    rows, not_run, placed = _run_grid(s, base, grid, host)
    write_json(out / "sweep_engine.json", {"engine": s.engine, "scheduler": s.scheduler, "points": placed})
    _rank(s, rows, measured)
    check_metric(rows, s.pick_by)
    best, other, message = pareto.verdict(rows, s.budget_ms, s.device, pareto.metric(s.pick_by))
    result = {"rows": rows, "pick": best, "runner_up": other, "message": message, "not_run": not_run, "host": host,
              "exit_code": 0 if best else NOTHING_FITS}  # fmt: skip
    report.write_report(out, result, s.to_dict(), s.plots)
    return result
