"""Debian packages a test needs (chromium, ffmpeg, dataset-fashion-mnist), installed by the test itself when missing
and it runs as root (CI on a fresh machine). One install at a time: `make test` runs tests in two processes, and two
apt-gets at once fail on dpkg's lock, so every install here waits for a file lock first."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "edge-toolkit-apt.lock"


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str, timeout: float = 900) -> str | None:
    """apt-get update, then install packages (no recommends); None when it worked, else the failing command's error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
        for cmd in (["apt-get", "update", "-qq"], install):
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if p.returncode != 0:
                return f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}"
    return None
