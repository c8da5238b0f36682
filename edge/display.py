"""What the classifier shows: the overlay drawn on frames, the window, the recording and the FPS meter.

canvas = draw_overlay(frame, result, fps=29.7)     # draws on the frame itself
with recording("out.mp4", fps=None) as rec:    # written atomically: the file appears whole, or not at all
    rec.write(canvas)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from contracts.atomic import atomic_path, why_unwritable
from contracts.errors import EdgeError
from contracts.runners.classifier import Result

log = logging.getLogger("edge")
RECORD_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}  # codecs every OpenCV build has
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc
UNKNOWN = "unknown"  # shown when the best score is below --min-score


class FpsMeter:
    """Frames per second of the loop, over the last `window` frames."""

    def __init__(self, window: int = 30):
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float | None:
        """Records a frame now; returns the rate so far, or None after the first frame."""
        self._times.append(time.perf_counter())
        if len(self._times) < 2:
            return None
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thickness: int) -> int:
    """Draws text on a dark box so it reads on any picture; returns the box's bottom edge."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = org
    pad = max(2, int(4 * scale))
    cv2.rectangle(img, (x - pad, y - h - pad), (x + w + pad, y + base + pad), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return y + base + pad


def draw_overlay(img: np.ndarray, result: Result, fps: float | None) -> np.ndarray:
    """Draws the top label and score (large), the other top-k (small) and FPS and inference time onto `img`
    itself (no copy: the loop owns its frames), or onto a BGR copy of a gray, read-only or strided one."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif not (img.flags.c_contiguous and img.flags.writeable):  # OpenCV draws only into whole, writable arrays
        img = img.copy()
    h, w = img.shape[:2]
    scale = max(0.35, min(w, h) / 480.0)  # readable from 160 px wide thumbnails to 1080p
    thick = max(1, round(2 * scale))
    margin = max(4, int(10 * scale))
    best = float(result.scores.max()) if result.scores.size else 0.0
    head = f"{result.top.label} {result.top.score:.2f}" if result.top else f"{UNKNOWN} ({best:.2f})"
    y = _text(
        img, head, (margin, margin + int(30 * scale)), 1.0 * scale, (0, 255, 0) if result.top else (0, 200, 255), thick
    )
    for c in result.categories[1:]:
        y = _text(img, f"{c.label} {c.score:.2f}", (margin, y + int(22 * scale)), 0.6 * scale, (255, 255, 255), 1)
    stats = f"{fps:.1f} FPS  {result.inference_ms:.1f} ms" if fps else f"{result.inference_ms:.1f} ms"
    _text(img, stats, (margin, h - margin), 0.6 * scale, (255, 255, 255), 1)
    return img


def _no_gui_error() -> EdgeError:
    try:
        from importlib.metadata import version

        pin = f"=={version('opencv-python-headless')}"
    except Exception:  # not a pip install (apt, source build): any version will do
        pin = ""
    return EdgeError(
        f"this OpenCV ({cv2.__version__}) was built without windows (opencv-python-headless): pass --headless or "
        f"--record out.mp4, or swap it for the GUI build: pip uninstall -y opencv-python-headless && pip install "
        f"opencv-python{pin} (a bundle's ./install.sh --gui does this)"
    )


def check_display() -> None:
    """Fails early where no window can be shown, before the model is loaded or a camera opened.

    Raises:
        EdgeError: no display (e.g. over SSH), or an OpenCV built without GUI (opencv-python-headless).
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise EdgeError("no display to show a window on (DISPLAY is not set): pass --headless, or --record out.mp4")
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI" and value.strip().upper() == "NONE":
            raise _no_gui_error()


class Window:
    """An OpenCV window that q or Esc (or closing it) quits."""

    def __init__(self, title: str):
        """Opens the window (check_display() says beforehand whether it can).

        Raises:
            EdgeError: OpenCV cannot open a window.
        """
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise _no_gui_error() from None

    def show(self, img: np.ndarray, wait_ms: int = 1) -> bool:
        """Shows a frame and handles keys for `wait_ms` (0: until a key); True if the user quit."""
        cv2.imshow(self.title, img)
        return self.poll(wait_ms)

    def poll(self, wait_ms: int = 1) -> bool:
        key = cv2.waitKey(wait_ms)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return True
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1  # closed with the mouse
        except cv2.error:
            return True

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def _check_record_suffix(path: str | os.PathLike) -> None:
    """Raises EdgeError for a --record name whose container OpenCV cannot be relied on to write."""
    if Path(path).suffix.lower() not in RECORD_FOURCC:
        raise EdgeError(f"--record {path}: name the file .mp4 (mp4v) or .avi (MJPG)")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two names reach one file: the same resolved path (symlinks, "..") or, both existing, one inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_record_path(
    path: str | os.PathLike, source: str | os.PathLike | None = None, overwrite: bool = False
) -> None:
    """Fails early, before the model is loaded or the source opened, on a --record name that would lose a file or
    that cannot be written (otherwise that is found only when the recording is saved, after the whole run).

    Args:
        path: the --record file name.
        source: the file or folder --source reads, if it is one: never written over, not even with `overwrite`.
        overwrite: whether an existing file at `path` may be replaced (atomically, once the recording is whole).

    Raises:
        EdgeError: a suffix other than .mp4 or .avi; `path` is the source, a folder, or an existing file without
            `overwrite`; its folder is missing, not a folder or not writable. The message names the path and the fix.
    """
    final = Path(path)
    _check_record_suffix(final)
    if source is not None and _same_file(final, Path(source).expanduser()):
        raise EdgeError(f"--record {path} is the --source: record to another name (--overwrite never replaces it)")
    why = why_unwritable(final)  # the recording is written beside it, then renamed onto it
    if why == "is a folder":
        raise EdgeError(f"--record {path} is a folder: name an .mp4 or .avi file")
    if why:
        folder = final.absolute().parent
        fix = f"mkdir -p {folder}, or record elsewhere" if not folder.exists() else "record to a folder you can write"
        raise EdgeError(f"--record {path} {why}: {fix}")
    if final.exists() and not overwrite:
        raise EdgeError(f"--record {path} exists: pass --overwrite to replace it, or another name")


class _Recorder:
    """Writes frames with cv2.VideoWriter, opened on the first frame (its size) or once the frame rate is known."""

    ESTIMATE_FRAMES = 30  # live sources: frames buffered to measure the real rate, so playback runs at real speed

    def __init__(self, tmp: Path, final: Path, fps: float | None):
        self.tmp, self.final, self.fps = tmp, final, fps
        self.fourcc = RECORD_FOURCC[final.suffix.lower()]
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._buffer: list[tuple[float, np.ndarray]] = []
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        if self._writer is None and self.fps is None:
            self._buffer.append((time.perf_counter(), img))
            if len(self._buffer) >= self.ESTIMATE_FRAMES:
                self._flush()
            return
        self._write(img)

    def _flush(self) -> None:
        if self.fps is None:
            times = [t for t, _ in self._buffer]
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            self.fps = min(max((len(times) - 1) / span, 1.0), 60.0) if span > 0 else 10.0
        buffered, self._buffer = self._buffer, []
        for _, img in buffered:
            self._write(img)

    def _write(self, img: np.ndarray) -> None:
        if self._writer is None:
            h, w = img.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                raise EdgeError(f"OpenCV cannot write {self.final} with codec {self.fourcc}: try an .avi file name")
        if (img.shape[1], img.shape[0]) != self._size:  # a camera that came back at another resolution
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._buffer:
            self._flush()
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class _NothingRecorded(Exception):
    pass


@contextlib.contextmanager
def recording(path: str | os.PathLike, fps: float | None):
    """Yields a recorder whose write(frame) adds a frame; the video appears at `path` when the block ends
    (Ctrl-C included, if caught inside), never half-written. With no frames, no file is written.

    Args:
        path: an .mp4 or .avi file name; a file already there is replaced (check_record_path, called before the
            run, decides whether it may be).
        fps: the source's frame rate (video files); None measures the loop's real rate from the first frames.
    """
    final = Path(path)
    _check_record_suffix(final)
    try:
        with atomic_path(final) as tmp:
            rec = _Recorder(tmp, final, fps)
            try:
                yield rec
            finally:
                rec.close()
            if rec.frames == 0:
                raise _NothingRecorded
        log.info("recorded %d frames to %s (%.3g FPS)", rec.frames, final, rec.fps)
    except _NothingRecorded:
        log.warning("no frames were classified, so %s was not written", final)
