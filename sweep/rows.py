"""A sweep row: one grid point x one artifact, flat, with every column of sweep.csv present.

    point_name(0.35, 96)                                    # "a0.35-s96": the point's run folder
    new_row(s, 0.35, 96, "tflite_int8", "pi4", top1=0.91)   # the other columns None (error "")

sweep.run makes the rows, sweep.devices fills their device latency, sweep.pareto ranks them and sweep.report
writes them.
"""

from __future__ import annotations

from benchmarks.robustness import ROBUST_COLUMNS
from contracts.formats import FORMATS
from sweep import devices
from sweep.settings import SweepSettings

# sweep.csv: one row per grid point x artifact, in this column order.
COLUMNS = (
    "point",  # grid point, aA-sS: the run folder's name inside the sweep folder
    "alpha",  # MobileNetV2 width
    "size",  # input side, pixels
    "format",  # key in contracts.formats.FORMATS
    "runtime",  # litert or onnxruntime
    "threads",  # interpreter threads of latency_ms_here (and of the device figure it is scaled from)
    "macs_m",  # multiply-accumulates, millions (devices.macs_m)
    "macs_source",  # "table" (MobileNetV2 paper) or "derived: ..." (scaled by input area from the 224 figure)
    "size_mb",  # artifact file size, 10^6 bytes
    "top1",  # test top-1 of this artifact, measured here
    "agreement",  # fraction of test images whose top-1 equals the float Keras model's
    # top-1 under camera corruptions at severity 3, as the benchmark's results rows (benchmarks.device.rows):
    *ROBUST_COLUMNS,  # robust_clean, robust_n, robust_<corruption>, robust_mean, robust_worst
    "latency_ms_here",  # median inference latency on this machine
    "device",  # the target: pi4, pi5, or this machine's name
    "latency_ms_device",  # latency on the target: predicted, or measured (latency_source says which)
    "latency_source",  # "predicted: <what it rests on>" or "measured: <device>"
    "within_budget",  # latency_ms_device <= --budget-ms
    "run",  # the point's run folder: `make bundle RUN=<run> FORMAT=<format>`
    "sha256",  # first 12 hex digits of the artifact's sha256 (what --merge rows are matched on)
    "error",  # why the row cannot be ranked (train, export, bench, predict, not run); empty when it can
)


def point_name(alpha: float, size: int) -> str:
    """a0.35-s96, a1.0-s224: the grid point's run folder name."""
    return f"a{float(alpha)}-s{int(size)}"


def new_row(s: SweepSettings, alpha: float, size: int, fmt: str, device: str, **fields) -> dict:
    """A sweep row with every column present.

    Args:
        s: the resolved settings (threads, sweep folder).
        alpha: the point's width.
        size: the point's input side.
        fmt: the artifact's format (a key of FORMATS).
        device: the `device` column: the target, or this machine's name for --device this.
        **fields: columns measured or known (top1, latency_ms_here, error, ...); they win over the defaults.
    """
    try:
        macs, how = devices.macs_m(alpha, size)
    except devices.DeviceError:  # --device this with a width the table lacks: MACs are only informative there
        macs, how = None, "unknown width"
    row = dict.fromkeys(COLUMNS)
    row.update(point=point_name(alpha, size), alpha=alpha, size=size, format=fmt, threads=s.threads, macs_m=macs,
               macs_source=how, device=device, run=str(s.sweep_dir / point_name(alpha, size)), error="",
               runtime=FORMATS[fmt].runtime if fmt in FORMATS else None)  # fmt: skip
    row.update(fields)
    return row
