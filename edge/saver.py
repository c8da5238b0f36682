"""Saving camera frames as JPEG files that appear whole or not at all, and never over another file.

    path = save_image("photos/cat", frame.image, frame_stem(frame.index, frame.time))   # photos/cat/2026...jpg
    saver = FrameSaver()                                       # the same on a thread: the loop never waits
    saver.submit("photos/_unsorted", frame.image.copy(), stem, sidecar={"score": 0.41})   # False: busy, dropped

A write that fails once running (disk full, folder removed, permission) is a logged warning, once per kind of
error per WARN_EVERY_S, and the run goes on; nothing half-written is ever left under an image's name.
edge.collect saves photos with save_image; edge.uncertain keeps the frames the model is unsure of with a FrameSaver.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from contracts.atomic import write_json
from contracts.preprocess import IMAGE_SUFFIXES

log = logging.getLogger("edge")
JPEG_QUALITY = 95  # photos for training: near-lossless, about 60 kB for a 640x480 frame
WARN_EVERY_S = 30.0  # a disk that stays full is said again this often, not once per frame
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP}  # FAT and exFAT USB sticks
_FIXES = {
    errno.ENOSPC: "the disk is full: free some space (df -h {folder})",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EFBIG: "a file size limit was reached (ulimit -f): raise it",
    errno.EROFS: "the disk is read-only: remount it read-write, or save elsewhere",
    errno.EACCES: "permission denied: make the folder writable for this user, or save elsewhere",
    errno.EPERM: "permission denied: make the folder writable for this user, or save elsewhere",
    errno.ENOENT: "the folder is gone: make it again (mkdir -p {folder})",
}


def frame_stem(index: int, t: float | None = None) -> str:
    """A file name (no suffix) that sorts by time: local time to the millisecond, then the frame index,
    e.g. 20261202-183512-123-f000123."""
    t = time.time() if t is None else t
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(t))}-{int(t * 1000) % 1000:03d}-f{index:06d}"


def label_problem(label: str) -> str | None:
    """Why `label` cannot be a class folder that `python -m train` reads, or None if it can."""
    if not label or label.strip() != label:
        return "is empty or has spaces at its ends"
    if any(c in label for c in "/\\\0") or label in (".", ".."):
        return "is not a folder name (no /, \\ or dots alone)"
    if label.startswith((".", "_")):
        return "starts with . or _: train would not take the folder for a class"
    if len(label.encode()) > 200:
        return "is too long for a folder name"
    return None


def _claim(tmp: str, folder: Path, stem: str) -> Path:
    """Gives the finished temporary file its first free name, stem.jpg, stem-2.jpg, ...: os.link fails on a name
    that exists, so nothing is ever replaced, not even by another process saving at the same moment."""
    for n in range(1, 10_000):
        final = folder / (f"{stem}.jpg" if n == 1 else f"{stem}-{n}.jpg")
        try:
            os.link(tmp, final)
            return final
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
        # No hard links here: claim the name (O_EXCL fails if it exists), then rename the whole file onto the
        # claim. Between the two the name holds an empty file, which no reader takes for an image.
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        try:
            os.replace(tmp, final)
        except OSError:
            os.unlink(final)
            raise
        return final
    raise FileExistsError(errno.EEXIST, f"no free name for {stem}.jpg", str(folder))


def save_image(folder: str | os.PathLike, image: np.ndarray, stem: str, sidecar: dict | None = None) -> Path:
    """Writes `image` as folder/stem.jpg (or stem-2.jpg, ... if that exists) and returns the path.

    The JPEG is written to a hidden temporary file in the folder and synced, then linked to its final name, so the
    name only ever holds a whole image and never replaces a file. `sidecar`, if given, is written after the image
    as <final stem>.json (atomically).

    Raises:
        OSError: the folder cannot be written (full, missing, read-only): no image is left under the final name.
        ValueError: OpenCV cannot encode the image.
    """
    folder = Path(folder)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.shape} {image.dtype} image as JPEG")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".partial", dir=folder)  # no .jpg: no reader takes it
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.data)
            f.flush()
            try:
                os.fsync(f.fileno())  # on disk before it gets its name: a power cut leaves no empty .jpg
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: a filesystem without fsync; a full disk still raises
                    raise
        final = _claim(tmp, folder, stem)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:  # renamed onto its claim (no hard links)
            pass
    if sidecar is not None:
        write_json(folder / f"{final.stem}.json", sidecar)
    return final


class DiskWarnings:
    """Logs a failed save as one warning naming the folder and the fix, at most once per kind of error (errno)
    per `every_s` seconds: a disk that stays full is not a line per frame."""

    def __init__(self, every_s: float = WARN_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s, self._clock = every_s, clock
        self._last: dict[int | None, float] = {}
        self.failed = 0  # saves that failed, all kinds

    def warn(self, folder: str | os.PathLike, e: OSError) -> None:
        self.failed += 1
        now = self._clock()
        if now - self._last.get(e.errno, -float("inf")) < self.every_s:
            return
        self._last[e.errno] = now
        fix = _FIXES.get(e.errno, "check the disk and the folder").format(folder=folder)
        log.warning("could not save an image in %s (%s): %s; still running (%d not saved so far)",
                    folder, e.strerror or e, fix, self.failed)  # fmt: skip


class FrameSaver:
    """Saves images on a daemon thread, so the camera loop never waits for the disk. submit() drops the image
    (returns False) when `queue_size` are already waiting: a slow card loses frames, not the loop's pace."""

    def __init__(self, queue_size: int = 3, warnings: DiskWarnings | None = None, save=save_image):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._warnings = warnings or DiskWarnings()
        self._save = save
        self.saved = 0  # files written
        self.dropped = 0  # submitted while the queue was full
        self._thread = threading.Thread(target=self._run, name="frame saver", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> int:
        """Saves that failed (each warned about, a kind at a time)."""
        return self._warnings.failed

    def submit(self, folder: str | os.PathLike, image: np.ndarray, stem: str, sidecar: dict | None = None) -> bool:
        """Queues save_image(folder, image, stem, sidecar); the image must not change afterwards (pass a copy).
        Returns False, at once, if the queue is full (the image is dropped)."""
        try:
            self._queue.put_nowait((folder, image, stem, sidecar))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._save(*item)
                self.saved += 1
            except OSError as e:
                self._warnings.warn(item[0], e)
            except Exception as e:  # an image OpenCV cannot encode: that frame only
                self._warnings.failed += 1
                log.warning("could not save an image in %s (%s); still running", item[0], e)

    def close(self, timeout: float = 5.0) -> None:
        """Saves what is queued (waiting up to `timeout` s), then stops the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the disk hangs; the thread is a daemon
        self._thread.join(timeout)


def count_images(folder: str | os.PathLike) -> int:
    """Image files in a folder and its sub-folders, as train counts them (not hidden ones); 0 if it is missing."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    return sum(1 for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
