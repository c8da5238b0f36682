"""Frame sources: what --source names, and the capture objects that read it.

    spec = parse_source("0")            # camera index; also /dev/video2, picamera, a video, an image, a folder, a URL
    check_source(spec)                  # SourceError now for what can never work (no picamera2, no readable image)
    cap = open_capture(spec)            # read() -> (ok, BGR frame), release(), like cv2.VideoCapture

Live sources (cameras, streams) are read by edge.reader.FrameReader, which reconnects when they drop out.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from contracts.preprocess import IMAGE_SUFFIXES
from edge.errors import SourceError

STREAM_OPEN_MIN_S = 10.0  # opening a stream may take this long whatever the stall timeout: FFmpeg reads its first
# packets to learn the codec and frame rate before open returns (2.3 s for a 10 fps MPEG-2 stream on loopback)
PICAMERA_SIZE = (640, 480)  # what the Pi camera is asked for: plenty for a small model, cheap to convert


class Capture(Protocol):
    """What FrameReader reads: cv2.VideoCapture's read() and release(). `name`, if set, names the last frame."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    """A parsed --source."""

    kind: str  # "camera", "picamera", "stream", "video", "image" or "folder"
    target: int | str  # camera index or device path, URL, or file/folder path

    @property
    def live(self) -> bool:
        """Live sources run on, reconnecting when they drop out; files end."""
        return self.kind in ("camera", "picamera", "stream")

    def __str__(self) -> str:
        if self.kind == "camera":
            return f"camera {self.target}"
        return "picamera" if self.kind == "picamera" else str(self.target)


def parse_source(text: str | int) -> SourceSpec:
    """Interprets --source: camera index, /dev/videoN, picamera, URL, image, folder of images, or video file.

    Raises:
        SourceError: a path that does not exist.
    """
    t = str(text).strip()
    if t.lower() in ("picamera", "picamera2"):
        return SourceSpec("picamera", "picamera")
    if t.isdigit():
        return SourceSpec("camera", int(t))
    if "://" in t:
        return SourceSpec("stream", t)
    if t.startswith("/dev/video"):
        return SourceSpec("camera", t)
    p = Path(t).expanduser()
    if p.is_dir():
        return SourceSpec("folder", str(p))
    if p.is_file():
        return SourceSpec("image" if p.suffix.lower() in IMAGE_SUFFIXES else "video", str(p))
    raise SourceError(
        f"source {t} not found: pass a camera index (0), /dev/videoN, picamera, a video file, an image, "
        "a folder of images, or an rtsp:// or http:// URL"
    )


def list_images(folder: str | Path) -> list[Path]:
    """The image files in a folder (not its subfolders), sorted by name; hidden ones are not pictures (an
    interrupted write's .NAME.partial.jpg, macOS's ._NAME.jpg), as train skips them too."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.name[0] != "."
    )


def check_source(spec: SourceSpec) -> None:
    """Fails early, without opening any camera, on a source that cannot work.

    Raises:
        SourceError: picamera2 missing, a folder without a readable image, an unreadable image or video; the message
            says what to do.
    """
    if spec.kind == "picamera":
        _import_picamera2()
    elif spec.kind == "folder":
        images = list_images(spec.target)
        if not images:
            raise SourceError(f"{spec.target} has no images ({' '.join(IMAGE_SUFFIXES)}): pass a folder of pictures")
        # Stops at the first readable picture (usually the first): unreadable ones among good ones are skipped
        # with a warning as they come, but a folder of nothing but them would be a run that classifies nothing.
        if not any(cv2.imread(str(path), cv2.IMREAD_COLOR) is not None for path in images):
            raise SourceError(
                f"{spec.target} has no readable images: none of its {len(images)} image files can be decoded "
                "(corrupt, empty or not what their names say): pass a folder of JPEG or PNG pictures"
            )
    elif spec.kind == "image" and cv2.imread(str(spec.target)) is None:
        raise SourceError(f"{spec.target} is not a readable image: pass a JPEG or PNG file")
    elif spec.kind == "video":
        open_capture(spec).release()  # a file, not a camera: opening it once is harmless and fails early


def _unreadable_video(path) -> SourceError:
    return SourceError(
        f"{path} is not a video OpenCV can read: convert it (e.g. ffmpeg -i IN -c:v libx264 out.mp4) "
        "or pass a folder of images"
    )


def quiet_opencv() -> None:
    """Stops OpenCV's and FFmpeg's own messages (one per failed camera open or stream reconnect) from flooding
    stderr: edge reports outages itself, once. OPENCV_FFMPEG_LOGLEVEL set by the user wins."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read by OpenCV at each open
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the utils.logging binding
        pass


def open_capture(spec: SourceSpec, stall_timeout_s: float | None = None) -> Capture:
    """Opens a source for reading. A live source that cannot be opened yet is returned anyway: its reads fail,
    and FrameReader reconnects.

    Args:
        spec: the source.
        stall_timeout_s: streams: a read that gets no new frame for this long fails (returns False) instead of
            waiting forever on a server that stalled, and an open gives up after max(this, STREAM_OPEN_MIN_S).
            V4L2 cameras: the same for reads, in whole seconds. None: OpenCV's own timeouts (streams 30 s,
            V4L2 10 s).

    Raises:
        SourceError: a video file OpenCV cannot decode.
    """
    if spec.kind == "stream":
        return _open_stream(str(spec.target), stall_timeout_s)
    if spec.kind == "camera":
        _bound_camera_reads(stall_timeout_s)
        cap = cv2.VideoCapture(spec.target)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2 queues frames otherwise; we want the newest
        return cap
    if spec.kind == "video":
        cap = cv2.VideoCapture(spec.target)
        if not cap.isOpened():
            raise _unreadable_video(spec.target)
        return cap
    if spec.kind == "picamera":
        return PiCamera2Capture()
    paths = [Path(spec.target)] if spec.kind == "image" else list_images(spec.target)
    return ImageCapture(paths)


def stream_timeouts(stall_timeout_s: float | None) -> list[int]:
    """The VideoCapture params that bound an FFmpeg stream's open and reads, or [] where this OpenCV has none."""
    if stall_timeout_s is None or not hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):  # OpenCV before 4.5.2
        return []
    open_ms = round(max(stall_timeout_s, STREAM_OPEN_MIN_S) * 1000)
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(stall_timeout_s * 1000)]


def _open_stream(url: str, stall_timeout_s: float | None) -> Capture:
    """A network stream through FFmpeg, whose interrupt callback makes a read that waits longer than the read
    timeout return False: the reader then reconnects, as after any failed read, on its own thread (the one thread
    that ever touches the capture). Without the FFmpeg backend, whatever OpenCV picks, with its own timeouts."""
    params = stream_timeouts(stall_timeout_s)
    if params and cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(url)


def _bound_camera_reads(stall_timeout_s: float | None) -> None:
    """OpenCV's V4L2 backend waits OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT seconds (default 10) for each frame, read from
    the environment at the first camera read of the process (it takes no VideoCapture param for it); a value the
    user set wins."""
    if stall_timeout_s is not None:
        os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, math.ceil(stall_timeout_s))))


def source_fps(cap: Capture) -> float | None:
    """The frame rate a capture reports (video files: their own), or None if it reports none that is sane."""
    get = getattr(cap, "get", None)
    if get is None:
        return None
    try:
        fps = float(get(cv2.CAP_PROP_FPS))
    except (cv2.error, TypeError, ValueError):
        return None
    return fps if 1.0 <= fps <= 240.0 else None


class ImageCapture:
    """Image files read like a video: one per read(), in order, then (False, None). Unreadable files are skipped
    with a warning; `name` is the file name of the frame last returned."""

    def __init__(self, paths: list[Path], warn=None):
        self.paths, self.pos, self.name = list(paths), 0, None
        self._warn = warn

    def read(self) -> tuple[bool, np.ndarray | None]:
        while self.pos < len(self.paths):
            p = self.paths[self.pos]
            self.pos += 1
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                self.name = p.name
                return True, img
            if self._warn is None:
                import logging

                logging.getLogger("edge").warning("%s is not a readable image (skipped)", p)
            else:
                self._warn(f"{p} is not a readable image (skipped)")
        return False, None

    def release(self) -> None:
        self.pos = len(self.paths)


def _import_picamera2():
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise SourceError(
            "--source picamera needs picamera2, which is not installed: on Raspberry Pi OS run "
            "`sudo apt install python3-picamera2` and make the venv with --system-site-packages "
            "(`./install.sh --picamera` does both), or use --source 0 for a USB camera"
        ) from None
    return Picamera2


class PiCamera2Capture:
    """The Raspberry Pi camera (libcamera) through picamera2, read like a cv2.VideoCapture."""

    def __init__(self, size: tuple[int, int] = PICAMERA_SIZE):
        picamera2 = _import_picamera2()
        self._cam = None
        try:
            cam = picamera2()
            # "RGB888" is stored B, G, R per pixel, which is OpenCV's order: no conversion needed.
            cam.configure(cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
            cam.start()
            self._cam = cam
        except Exception:  # no camera attached, or busy: reads fail and the reader reconnects
            self._cam = None

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._cam is None:
            return False, None
        try:
            frame = self._cam.capture_array()
        except Exception:  # picamera2 raises various errors when the camera goes away
            return False, None
        return True, cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR) if frame.ndim == 3 and frame.shape[2] == 4 else frame

    def release(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
