"""The machine that measured: a short device name for the rows, and what else made them (CPU, packages, load).

Runs on the Raspberry Pi too (standard library and the LiteRT loader only). The board's name comes from the
device tree (/proc/device-tree/model), so Pi rows name the Pi, not "aarch64".
"""

from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from contracts.manifest import package_versions
from contracts.runners.litert import load_litert_interpreter

_PACKAGES = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "numpy", "opencv-python-headless", "opencv-python",
             "tensorflow")  # fmt: skip


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, the Pi's "Model" line, else platform.processor())."""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, which containers narrow), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_device_name() -> str:
    """A short name for this machine: the board (raspberry-pi-4-model-b-rev-1.4), else arch-cpu-cores."""
    board = _read("/proc/device-tree/model")
    text = board or f"{platform.machine()} {cpu_model()} {cpu_count()}c"
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def device_meta(device: str) -> dict:
    """What made the rows: machine, CPU, Python and runtime versions, load at the time."""
    versions = package_versions(_PACKAGES)
    try:
        litert = load_litert_interpreter().__module__.split(".")[0]
    except Exception as e:  # reported, not fatal: ONNX-only devices exist
        litert = f"none ({e})"
    return {
        "device": device,
        "board": _read("/proc/device-tree/model") or None,
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "litert_package": litert,
        "packages": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
