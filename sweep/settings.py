"""The sweep's settings: one frozen dataclass, saved as sweep_settings.json, and resolve(), which fills in what
depends on the target and checks every flag before any work starts.

    s = resolve(SweepSettings(data="digits", alphas=(0.35, 0.5), sizes=(96,), device="pi4", formats="tflite_int8"))
    s.out, s.threads, s.formats   # "runs/sweep-digits", 4, "tflite_fp32,tflite_int8" (float32 counterpart added)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare import float_counterpart
from contracts.formats import FORMATS, FormatError, resolve_formats
from sweep import devices
from sweep.pareto import PICK_BY

BUILTIN_DATA = ("digits", "cats_vs_dogs")  # train's bundled / downloaded datasets; anything else is a folder
ENGINES = ("local", "dask")  # where the points run (sweep/engines.py): here one by one, or on a Dask cluster


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
    # Rows measured on the device (`python -m benchmarks.device.latency --out`): they replace the predictions for
    # the artifacts they measured (same sha256).
    merge: tuple[str, ...] = ()
    measured_device: str = ""  # device name those rows carry; "" = --device (`latency --device-name pi4`)
    max_minutes: float = 0.0  # stop starting new points when the next one (estimated from the points trained so
    #   far, scaled by MACs) would end past this; 0 = no limit
    plots: bool = True  # write pareto.png
    pick_by: str = "top1"  # the accuracy the front, the pick and the plot use: top1 (clean), robust_mean or
    #   robust_worst (over the camera corruptions), or one corruption's name (its top-1), each at severity 3
    engine: str = "local"  # local: the points one after another here; dask: spread over a Dask cluster's workers
    scheduler: str = ""  # --engine dask: the scheduler's address, tcp://HOST:8786 (what `dask scheduler` prints)

    @property
    def sweep_dir(self) -> Path:
        return Path(self.out)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (tuples as lists)."""
        d = dataclasses.asdict(self)
        d.update(alphas=list(self.alphas), sizes=list(self.sizes), merge=list(self.merge))
        return d


def data_name(data: str) -> str:
    """digits, cats_vs_dogs, or a folder's own name: what the default sweep folder is called after."""
    return data if data in BUILTIN_DATA else Path(data).name


def resolve(s: SweepSettings) -> SweepSettings:
    """Fills the defaults that depend on the target and checks every flag.

    Args:
        s: the settings as given; empty `out`, `threads` 0 and empty `measured_device` are filled in, and for a Pi
            target `formats` gains the float32 counterpart of each reduced-precision format.

    Returns:
        The settings the sweep runs with (and saves).

    Raises:
        SweepError: a value out of range, an unknown device or format, a width the MACs table lacks (Pi targets).
    """
    if s.data not in BUILTIN_DATA and not Path(s.data).is_dir():
        raise SweepError(f"--data {s.data}: no such folder; pass digits, cats_vs_dogs or a folder of class folders")
    if s.device not in devices.TARGETS:
        raise SweepError(f"--device {s.device!r} is not known: choose from {', '.join(devices.TARGETS)}")
    if not s.alphas or not s.sizes:
        raise SweepError("--alphas and --sizes must each name at least one value, e.g. --alphas 0.35,0.5 --sizes 96")
    if min(s.sizes) < 32 or min(s.alphas) <= 0:
        raise SweepError(f"--sizes {list(s.sizes)} / --alphas {list(s.alphas)}: sizes start at 32, widths above 0")
    if s.budget_ms <= 0 or s.max_minutes < 0 or s.runs < 1 or s.warmup < 0 or s.threads < 0:
        raise SweepError("--budget-ms must be above 0; --max-minutes, --warmup, --threads at least 0; --runs 1")
    if s.pick_by not in PICK_BY:
        raise SweepError(f"--pick-by {s.pick_by!r} is not one of {', '.join(PICK_BY)}")
    _check_engine(s.engine, s.scheduler)
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
        wanted = _with_float_counterparts(wanted)
    threads = s.threads or (devices.DEVICES[s.device].cores if s.device != "this" else _host_cores())
    out = s.out or f"runs/sweep-{data_name(s.data)}"
    return dataclasses.replace(s, out=out, threads=threads, formats=",".join(f.name for f in wanted),
                               measured_device=s.measured_device or s.device)  # fmt: skip


def _check_engine(engine: str, scheduler: str) -> None:
    """--engine is known, and dask has its package and a --scheduler (find_spec: nothing is imported here)."""
    from importlib.util import find_spec

    if engine not in ENGINES:
        raise SweepError(f"--engine {engine!r} is not known: choose from {', '.join(ENGINES)}")
    if engine == "dask" and find_spec("distributed") is None:
        raise SweepError("--engine dask needs Dask's distributed package: pip install -r requirements/distributed.txt")
    if engine == "dask" and not scheduler:
        raise SweepError("--engine dask needs --scheduler tcp://HOST:8786, the address `dask scheduler` prints")
    if engine != "dask" and scheduler:
        raise SweepError(f"--scheduler {scheduler} is for --engine dask: add --engine dask, or drop --scheduler")


def _with_float_counterparts(wanted: list) -> list:
    """The formats plus the float32 counterpart of each (a Pi prediction scales by it), in the table's order."""
    names = {f.name for f in wanted} | {c.name for f in wanted if (c := float_counterpart(f.name))}
    return [f for f in FORMATS.values() if f.name in names]


def _host_cores() -> int:
    from benchmarks.device.machine import cpu_count

    return cpu_count()
