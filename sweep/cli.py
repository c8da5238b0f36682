"""python -m sweep --help: the sweep's flags, parsed into SweepSettings and handed to sweep.run.run_sweep.

python -m sweep --data digits --alphas 0.35,0.5 --sizes 96,128 --device pi4 --budget-ms 30
python -m sweep --data digits --alphas 0.35,0.5 --sizes 96,128 --pick-by gaussian_blur   # top-1 under blur

Exit codes are the sweep's (sweep/__init__.py): 0 a pick, 2 an unusable flag, data or --merge file, 3 nothing fits,
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import sweep
from contracts.console import log, one_line
from contracts.formats import FORMATS
from sweep import devices
from sweep.pareto import PICK_BY
from sweep.run import run_sweep
from sweep.settings import ENGINES, SweepError, SweepSettings


def _floats(text: str, flag: str) -> tuple[float, ...]:
    """Comma-separated numbers, duplicates dropped, in the order given."""
    try:
        return tuple(dict.fromkeys(float(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise SweepError(f"{flag} {text!r}: pass comma-separated numbers, e.g. {flag} 0.35,0.5") from None


def build_parser() -> argparse.ArgumentParser:
    d = SweepSettings()
    p = argparse.ArgumentParser(prog="python -m sweep", description=sweep.__doc__.split("\n\n")[0])
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
    a("--merge", nargs="+", default=[], metavar="ROWS.json", help="rows measured on the device "
      "(python -m benchmarks.device.latency --out ROWS.json)")  # fmt: skip
    a("--measured-device", default=d.measured_device, help="device name in the --merge rows (default: --device)")
    a("--max-minutes", type=float, default=d.max_minutes, help="time budget of the whole sweep (default 0: none)")
    a("--no-plots", dest="plots", action="store_false", help="skip pareto.png")
    a("--pick-by", default=d.pick_by, choices=PICK_BY, help="accuracy the front and the pick use: top1 (clean, "
      "default), robust_mean / robust_worst over the camera corruptions, or one corruption's top-1 "
      "(severity 3)")  # fmt: skip
    a("--engine", default=d.engine, choices=ENGINES, help="local: the points one after another here (default); "
      "dask: spread over a Dask cluster's workers (requirements/distributed.txt, --scheduler)")  # fmt: skip
    a("--scheduler", default=d.scheduler, metavar="tcp://HOST:8786", help="--engine dask: the address `dask "
      "scheduler` prints; workers reach --out and --data at the same paths (sweep/engines.py)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses flags, runs the sweep; returns the exit code (see the module docstring)."""
    args = vars(build_parser().parse_args(argv))
    try:
        sizes = tuple(int(v) for v in _floats(args["sizes"], "--sizes"))
        args.update(alphas=_floats(args["alphas"], "--alphas"), sizes=sizes, merge=tuple(args["merge"]))
        result = run_sweep(SweepSettings(**{f.name: args[f.name] for f in dataclasses.fields(SweepSettings)}))
    except SweepError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what is done stays done: the same command goes on from there
        print("\ninterrupted: run the same command again to go on where the sweep stopped", file=sys.stderr)
        return 130
    log("\n" + result["message"])
    return result["exit_code"]
