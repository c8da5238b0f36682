"""python -m sweep.run: MobileNetV2 widths x input sizes -> the most accurate model within a latency budget.

python -m sweep.run --data digits --alphas 0.35,0.5 --sizes 96,128 --device pi4 --budget-ms 30
make sweep ARGS="--data ~/photos/flowers --device pi5 --budget-ms 20 --max-minutes 240"

Each grid point is an ordinary run, runs/sweep-NAME/aA-sS/ (e.g. a0.35-s96), made by train's, export's and the
benchmark's own functions on the same data. What is done is reused: train reuses a finished run of the same settings,
export is skipped while its manifest comes from the current model files, and the benchmark while bench/results.json
is newer than the manifest and has the rows asked for. So the same command, run again after an interruption, goes
on from where it stopped. Raspberry Pi latency is predicted (benchmarks/devices.py) unless rows measured on the
board are given with --merge. Writes sweep.csv, sweep.json, pareto.png and sweep.md into the sweep folder.

Exit codes: 0 a pick (sweep.md names it and the `make bundle` command); 2 a flag, the data or a --merge file cannot
be used (one line naming it); 3 nothing fits the budget, or no point produced a usable artifact (sweep.md names the
fastest option and its latency, or says why); 130 interrupted (run the same command again to go on).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.formats import FORMATS, FormatError, resolve_formats
from sweep import devices, pareto

NOTHING_FITS = 3


class SweepError(Exception):
    """The sweep cannot run as asked; the message names the flag or file and the fix."""


@dataclass(frozen=True)
class SweepSettings:
    """Resolved settings of one sweep, saved as sweep_settings.json. Field comments are the documentation."""

    data: str = "digits"  # as in train: "digits", "cats_vs_dogs", or a folder of class sub-folders
    out: str = ""  # sweep folder; "" = runs/sweep-<data name>; each grid point is a run folder inside it
    alphas: tuple[float, ...] = (0.35, 0.5, 1.0)  # MobileNetV2 widths
    sizes: tuple[int, ...] = (96, 128, 160, 224)  # square input sides
    device: str = "pi4"  # target: pi4 or pi5 (latency predicted from devices.DEVICES), or this (measured here)
    budget_ms: float = 33.0  # latency budget on the device, inference only; 33 ms is one frame at 30 FPS
    epochs: int | None = None  # phase 1 epochs of every point; None = train's default (so for the four below)
    fine_tune_epochs: int | None = None  # phase 2 epochs
    qat_epochs: int | None = None  # phase 3 (quantization-aware training) epochs
    weights: str | None = None  # "imagenet", "none" or a local .h5 file
    batch_size: int | None = None  # training batch size
    formats: str = "all"  # export formats (contracts.formats); each int8/fp16/dynamic one brings its float32
    #   counterpart, whose latency here is what a Pi prediction scales by
    threads: int = 0  # interpreter threads here; 0 = the device's cores (pi4, pi5: 4), or this machine's for "this"
    runs: int = 100  # timed inferences per artifact here (the benchmark's --runs)
    warmup: int = 10  # untimed inferences first
    merge: tuple[
        str, ...
    ] = ()  # rows measured on the device (`python -m benchmarks.device.latency --out`): they replace
    #   the predictions for the artifacts they measured (same sha256)
    measured_device: str = (
        ""  # device name those rows carry; "" = --device (`benchmarks.device.latency --device-name pi4`)
    )
    max_minutes: float = 0.0  # stop starting new points when the next one (estimated from the points trained so
    #   far, scaled by MACs) would end past this; 0 = no limit
    plots: bool = True  # write pareto.png

    @property
    def sweep_dir(self) -> Path:
        return Path(self.out)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(alphas=list(self.alphas), sizes=list(self.sizes), merge=list(self.merge))
        return d


def _data_name(data: str) -> str:
    return Path(data).name if data not in ("digits", "cats_vs_dogs") else data


def resolve(s: SweepSettings) -> SweepSettings:
    """Fills the defaults that depend on the target and checks every flag.

    Raises:
        SweepError: a value out of range, an unknown device or format, a width the MACs table lacks (Pi targets).
    """
    if s.data not in ("digits", "cats_vs_dogs") and not Path(s.data).is_dir():
        raise SweepError(f"--data {s.data}: no such folder; pass digits, cats_vs_dogs or a folder of class folders")
    if s.device not in devices.TARGETS:
        raise SweepError(f"--device {s.device!r} is not known: choose from {', '.join(devices.TARGETS)}")
    if not s.alphas or not s.sizes:
        raise SweepError("--alphas and --sizes must each name at least one value, e.g. --alphas 0.35,0.5 --sizes 96")
    if min(s.sizes) < 32 or min(s.alphas) <= 0:
        raise SweepError(f"--sizes {list(s.sizes)} / --alphas {list(s.alphas)}: sizes start at 32, widths above 0")
    if s.budget_ms <= 0 or s.max_minutes < 0 or s.runs < 1 or s.warmup < 0 or s.threads < 0:
        raise SweepError("--budget-ms must be above 0; --max-minutes, --warmup, --threads at least 0; --runs 1")
    try:
        wanted = resolve_formats(s.formats)
    except FormatError as e:
        raise SweepError(f"--formats: {e}") from None
    if s.device != "this":
        try:
            for a in s.alphas:
                devices.macs_m(a, max(s.sizes))
        except devices.DeviceError as e:
            raise SweepError(f"--alphas: {e}") from None
        from benchmarks.compare import float_counterpart

        names = {f.name for f in wanted} | {float_counterpart(f.name).name for f in wanted if float_counterpart(f.name)}
        wanted = [f for f in FORMATS.values() if f.name in names]
    threads = s.threads or (devices.DEVICES[s.device].cores if s.device != "this" else _host_cores())
    out = s.out or f"runs/sweep-{_data_name(s.data)}"
    return dataclasses.replace(s, out=out, threads=threads, formats=",".join(f.name for f in wanted),
                               measured_device=s.measured_device or s.device)  # fmt: skip


def _host_cores() -> int:
    from benchmarks.device.latency import cpu_count

    return cpu_count()


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


def _log(msg: str) -> None:
    print(msg, flush=True)


def point_name(alpha: float, size: int) -> str:
    """a0.35-s96, a1.0-s224: the grid point's run folder name."""
    return f"a{float(alpha)}-s{int(size)}"


def new_row(s: SweepSettings, alpha: float, size: int, fmt: str, device: str, **fields) -> dict:
    """A sweep row with every column present."""
    try:
        macs, how = devices.macs_m(alpha, size)
    except devices.DeviceError:  # --device this with a width the table lacks: MACs are only informative there
        macs, how = None, "unknown width"
    row = dict.fromkeys(pareto.COLUMNS)
    row.update(point=point_name(alpha, size), alpha=alpha, size=size, format=fmt, threads=s.threads, macs_m=macs,
               macs_source=how, device=device, run=str(s.sweep_dir / point_name(alpha, size)), error="",
               runtime=FORMATS[fmt].runtime if fmt in FORMATS else None)  # fmt: skip
    row.update(fields)
    return row


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _export(s: SweepSettings, run: Path, formats: list[str]) -> dict[str, str]:
    """Exports what is not current; returns {format: why it was refused} for the asked formats.

    Export itself skips artifacts that are up to date, but it still rewrites the manifest, which would make every
    benchmark stale; so it is not called at all while every asked format is published from the current model
    files (or was refused for these same files, as recorded in sweep_export.json)."""
    from contracts.atomic import write_json
    from contracts.manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_file
    from export.run import export_run
    from export.settings import ExportSettings
    from train.run import FLOAT_MODEL, QAT_MODEL

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
        _log(f"{run.name}: export up to date (manifest from the current model files), skipped")
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
        if all((f, s.threads) in have for f in published):
            _log(f"{run.name}: benchmark up to date (bench/results.json newer than the manifest), skipped")
            return rows, meta.get("host")
    # No camera loop and no per-point plots: the sweep needs accuracy and inference latency only.
    bench = BenchSettings(run=str(run), formats=",".join(formats), threads=(s.threads,), runs=s.runs,
                          warmup=s.warmup, rounds=min(5, s.runs), loop_frames=0, plots=False)  # fmt: skip
    rows = run_benchmarks(bench)
    return rows, rows[0]["device"]


def run_point(s: SweepSettings, base, alpha: float, size: int, host: str) -> tuple[list[dict], bool]:
    """Trains, exports and benchmarks one grid point with the stages' own functions, each skipped when done.

    Returns:
        (one row per asked format, whether this call trained). A stage that fails makes rows with an error.
    """
    from train.run import run_training

    run = s.sweep_dir / point_name(alpha, size)
    formats = s.formats.split(",")
    device = s.device if s.device != "this" else host
    fresh = not (run / "metrics.json").is_file()
    _log(f"--- {run.name}: " + ("training" if fresh else "trained already"))

    def failed(stage: str, e: BaseException, only=formats) -> list[dict]:
        _log(f"{run.name}: {stage} failed: {_first_line(e)}")
        return [new_row(s, alpha, size, f, device, error=f"{stage}: {_first_line(e)}") for f in only]

    try:
        run_training(dataclasses.replace(base, alpha=alpha, image_size=size, out=str(run)))
    except Exception as e:  # a point that cannot train is rows with an error; the other points go on
        return failed("train", e), fresh
    try:
        refused = _export(s, run, formats)
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
                            latency_ms_here=b.get("latency_ms_median"), error=b.get("error") or ""))  # fmt: skip
    return rows, fresh


def run_sweep(s: SweepSettings, train_base=None) -> dict:
    """Trains, exports and benchmarks every grid point (reusing what is done) and writes the sweep's outputs.

    Args:
        s: the sweep's settings (resolved here).
        train_base: a train.settings.TrainSettings holding the training choices the sweep neither varies nor
            passes through (learning rate, patience, ...); default TrainSettings().

    Returns:
        {"rows", "pick", "runner_up", "message", "not_run", "exit_code", ...}: see pareto.write_report.

    Raises:
        SweepError: a flag or a --merge file is unusable.
    """
    from benchmarks.device.latency import default_device_name
    from benchmarks.device.rows import load_rows
    from contracts.atomic import write_json
    from train.settings import TrainSettings

    s = resolve(s)
    measured = []
    for path in s.merge:
        try:
            measured += load_rows(path)[0]
        except ValueError as e:
            raise SweepError(f"--merge: {e}") from None
    knobs = {k: getattr(s, k) for k in ("epochs", "fine_tune_epochs", "qat_epochs", "weights", "batch_size")}
    base = dataclasses.replace(train_base or TrainSettings(), data=s.data,
                               **{k: v for k, v in knobs.items() if v is not None})  # fmt: skip
    out = s.sweep_dir
    write_json(out / "sweep_settings.json", {**s.to_dict(), "train_base": base.to_dict()})
    host = default_device_name()
    grid = sorted(((a, z) for a in s.alphas for z in s.sizes), key=lambda p: (point_cost(*p), p))
    _log(f"sweep: {len(grid)} points, cheapest first ({', '.join(point_name(a, z) for a, z in grid)}) into {out}/; "
         f"target {s.device}, budget {s.budget_ms:g} ms, {s.threads} threads here on {host}")  # fmt: skip
    t0, trained, rows, not_run = time.monotonic(), [], [], []
    for alpha, size in grid:
        name, cost = point_name(alpha, size), point_cost(alpha, size)
        est, used = estimate_seconds(trained, cost), time.monotonic() - t0
        fresh = not (out / name / "metrics.json").is_file()
        if s.max_minutes and fresh and (used >= s.max_minutes * 60 or (est and used + est > s.max_minutes * 60)):
            why = (f"not run: --max-minutes {s.max_minutes:g} would be exceeded ({used / 60:.1f} min used, this "
                   f"point estimated at {(est or 0) / 60:.1f} min)")  # fmt: skip
            not_run.append({"point": name, "reason": why})
            device = s.device if s.device != "this" else host
            rows += [new_row(s, alpha, size, f, device, error=why) for f in s.formats.split(",")]
            _log(f"--- {name}: {why}")
            continue
        t = time.monotonic()
        point_rows, did_train = run_point(s, base, alpha, size, host)
        if did_train:
            trained.append((cost, time.monotonic() - t))
        rows += point_rows
    devices.add_device_latency(rows, s.device, measured, s.measured_device)
    for r in rows:
        r["within_budget"] = None if r.get("latency_ms_device") is None else r["latency_ms_device"] <= s.budget_ms
    order = {f: i for i, f in enumerate(FORMATS)}
    rows.sort(key=lambda r: (r["alpha"], r["size"], order.get(r["format"], 99)))
    best, other, message = pareto.verdict(rows, s.budget_ms, s.device)
    result = {"rows": rows, "pick": best, "runner_up": other, "message": message, "not_run": not_run, "host": host,
              "exit_code": 0 if best else NOTHING_FITS}  # fmt: skip
    pareto.write_report(out, result, s.to_dict(), s.plots)
    return result


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(dict.fromkeys(float(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise SweepError(f"{flag} {text!r}: pass comma-separated numbers, e.g. {flag} 0.35,0.5") from None


def build_parser() -> argparse.ArgumentParser:
    d = SweepSettings()
    p = argparse.ArgumentParser(prog="python -m sweep.run", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--data", default=d.data, help="digits (bundled), cats_vs_dogs, or a folder of class folders (as in train)")
    a("--out", default=d.out, help="sweep folder (default runs/sweep-<data name>)")
    a("--alphas", default=",".join(f"{x:g}" for x in d.alphas), help="MobileNetV2 widths (default 0.35,0.5,1.0)")
    a("--sizes", default=",".join(map(str, d.sizes)), help="input sides (default 96,128,160,224)")
    a("--device", default=d.device, choices=devices.TARGETS, help="target: pi4, pi5 (predicted) or this (measured)")
    a("--budget-ms", type=float, default=d.budget_ms, help=f"latency budget on the device (default {d.budget_ms:g})")
    a("--epochs", type=int, help="phase 1 epochs of every point (default: train's)")
    a("--fine-tune-epochs", type=int, help="phase 2 epochs (default: train's)")
    a("--qat-epochs", type=int, help="phase 3 epochs (default: train's)")
    a("--weights", help="imagenet, none, or a local .h5 file (default: train's)")
    a("--batch-size", type=int, help="(default: train's)")
    a("--formats", default=d.formats, help=f"all, or a comma-separated list of: {', '.join(FORMATS)}")
    a("--threads", type=int, default=d.threads, help="threads here (default: the device's cores; 'this': all)")
    a("--runs", type=int, default=d.runs, help=f"timed runs per artifact here (default {d.runs})")
    a("--warmup", type=int, default=d.warmup, help=f"untimed runs first (default {d.warmup})")
    a(
        "--merge",
        nargs="+",
        default=[],
        metavar="ROWS.json",
        help="rows measured on the device (benchmarks.device.latency)",
    )
    a("--measured-device", default=d.measured_device, help="device name in the --merge rows (default: --device)")
    a("--max-minutes", type=float, default=d.max_minutes, help="time budget of the whole sweep (default 0: none)")
    a("--no-plots", dest="plots", action="store_false", help="skip pareto.png")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses flags, runs the sweep; returns the exit code (see the module docstring)."""
    args = vars(build_parser().parse_args(argv))
    try:
        sizes = tuple(int(v) for v in _floats(args["sizes"], "--sizes"))
        args.update(alphas=_floats(args["alphas"], "--alphas"), sizes=sizes, merge=tuple(args["merge"]))
        result = run_sweep(SweepSettings(**{f.name: args[f.name] for f in dataclasses.fields(SweepSettings)}))
    except SweepError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what is done stays done: the same command goes on from there
        print("\ninterrupted: run the same command again to go on where the sweep stopped", file=sys.stderr)
        return 130
    print("\n" + result["message"], flush=True)
    return result["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
