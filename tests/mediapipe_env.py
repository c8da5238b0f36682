"""A virtual environment with MediaPipe Tasks, built once and cached, for tests that check other tools read our files.

    python tests/mediapipe_env.py            # builds it (a few minutes the first time), prints its python

MediaPipe cannot share the training venv (it pins protobuf<5; TensorFlow 2.21 and onnx need protobuf>=6.31), so it
gets a clean venv of its own with requirements/mediapipe.txt, under ~/.cache/edge-toolkit/venvs/mediapipe-KEY where
KEY is the requirements file's hash: editing the pins builds a new one (older ones are removed). A file lock lets two
test sessions ask at once; a ".complete" marker, written last, tells a finished venv from one a killed build left.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements" / "mediapipe.txt"
VENVS = Path.home() / ".cache" / "edge-toolkit" / "venvs"
CHECK = "import mediapipe; from mediapipe.tasks.python import vision; print(mediapipe.__version__)"
INSTALL_TIMEOUT_S = 1800  # mediapipe, jax and OpenCV are some 400 MB of wheels


def venv_key() -> str:
    """The first 12 hex digits of requirements/mediapipe.txt's sha256: which venv these pins build."""
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]


def _clean_env() -> dict[str, str]:
    """This process's environment without what would leak the repository's venv into another one."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # what a killed build left
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter under .venv, not .venv itself
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120, env=_clean_env())
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    for cmd in (pip, [python, "-c", CHECK]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=_clean_env())
        if p.returncode != 0:
            tail = [line for line in p.stderr.splitlines() if "is ignored: it is neither" not in line][-5:]
            raise RuntimeError(f"cannot build the MediaPipe venv {venv} ({' '.join(cmd[2:4])}): {' | '.join(tail)}")


def mediapipe_python() -> Path:
    """The python of the cached MediaPipe venv, built first when these pins have none (minutes, once).

    Raises:
        RuntimeError: pip or the import check failed (the message ends with pip's last lines).
    """
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / f"mediapipe-{venv_key()}"
    with open(VENVS / "mediapipe.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same venv: wait for it, then reuse it
        if not (venv / ".complete").is_file():
            _build(venv)
            (venv / ".complete").write_text(REQUIREMENTS.read_text())
            for stale in VENVS.glob("mediapipe-*"):  # venvs of older pins
                if stale != venv:
                    shutil.rmtree(stale, ignore_errors=True)
    return venv / "bin" / "python"


def run_in_mediapipe(script: str, *args: str | Path, timeout: float = 300, cwd: str | Path | None = None):
    """Runs a Python snippet in the MediaPipe venv: `python -I -c SCRIPT ARGS` (sys.argv[1:] are ARGS), text output.

    Isolated (-I): neither the working folder nor PYTHONPATH is on its path, so the snippet sees MediaPipe and its
    own dependencies only, never the repository's packages.

    Returns:
        the subprocess.CompletedProcess (check returncode and stderr yourself).
    """
    cmd = [str(mediapipe_python()), "-I", "-c", script, *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    print(mediapipe_python())
