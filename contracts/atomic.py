"""Atomic file writes: a reader never sees half a file, whatever kills the writer.

Every stage writes its outputs through these, so an interrupted step leaves either the old file or the
new one, never one that looks whole and is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds.

    The temporary name keeps the real suffix (some writers, e.g. Keras and matplotlib, pick the
    format from it) and starts with a dot and ends in ".partial" before the suffix, so it never looks
    like a finished output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers refuse to overwrite; they create it themselves
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):  # fsync is best effort (not every filesystem allows it)
            fd = os.open(tmp, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def why_unwritable(path: str | os.PathLike, kind: str = "file") -> str | None:
    """Why an output at `path` could not be written, checked before the work that makes it; None if it can.

    Args:
        path: where the output goes.
        kind: "file" (its folder must exist and be writable, and the path must not be a folder) or "folder" (made
            with its parents: the nearest one that exists must be a writable folder, and the path must not be a file).

    Returns:
        The reason, worded to follow the path in a message ("is a folder", "cannot be written (/x is not a writable
        folder)"), or None.
    """
    p = Path(path).absolute()
    if kind == "file":
        if p.is_dir():
            return "is a folder"
        if not p.parent.is_dir() or not os.access(p.parent, os.W_OK | os.X_OK):
            return f"cannot be written ({p.parent} is not a writable folder)"
        return None
    if p.exists() and not p.is_dir():
        return "is a file, not a folder"
    nearest = next(q for q in (p, *p.parents) if q.exists())
    if not nearest.is_dir():
        return f"cannot be written ({nearest} is a file)"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"cannot be written ({nearest} is not writable)"
    return None
