"""The collect loops and what they share: Collector (the newest frame and the class folders it is saved into),
the headless loop (a photo every N seconds) and the window loop (a key per class).

    collector = Collector("photos", ["cat", "dog"])    # makes photos/cat/ and photos/dog/, counts what is there
    collector.update(frame)                            # the loop, per frame
    collector.save("cat")                              # -> "photos/cat/20261202-183512-123-f000123.jpg"
    collector.counts()                                 # {"cat": 13, "dog": 4}

edge.collect checks the settings and runs one of the loops; edge.serve's live page calls the same Collector
(POST /collect/<label>: save, counts, labels).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from contracts.console import one_line
from edge.app import event_record
from edge.display import QUIT_KEYS, FpsMeter, Window
from edge.frames import Frame
from edge.saver import DiskWarnings, count_images, frame_stem, save_image

log = logging.getLogger("edge")
QUIT = -2  # KeyWindow.show_key: the user quit
FLASH_S = 1.5  # how long the window says "saved cat (13)" after a key


class Collector:
    """The newest frame and the class folders it can be saved into: what the window's keys, the headless loop
    and the live page's buttons (edge.serve's POST /collect/<label>) all call. Safe to call from any thread."""

    def __init__(self, out: str | os.PathLike, labels: list[str], saver=save_image):
        """Makes OUT/<label>/ for every label and counts the images already there.

        Args:
            out: the dataset folder.
            labels: the classes, in key order.
            saver: save_image, or anything with its signature (tests inject failures).
        """
        self.out, self.labels, self._save = Path(out), list(labels), saver
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        for label in self.labels:
            (self.out / label).mkdir(parents=True, exist_ok=True)
        self._counts = {label: count_images(self.out / label) for label in self.labels}
        self.saved = 0  # photos saved by this collect

    def update(self, frame: Frame) -> None:
        """The collect loop hands over each new frame (its image is never changed afterwards)."""
        with self._lock:
            self._frame = frame

    def counts(self) -> dict[str, int]:
        """Images per class folder: those there at the start plus those saved since."""
        with self._lock:
            return dict(self._counts)

    def save(self, label: str) -> str:
        """Saves the newest frame into OUT/<label>/ and returns the file's path.

        Raises:
            ValueError: `label` is not one of the labels, or no frame has come yet.
            OSError: the disk (full, folder not writable); nothing half-written is left.
        """
        if label not in self._counts:
            raise ValueError(f"{label!r} is not one of the labels {', '.join(self.labels)}")
        with self._lock:
            frame = self._frame
        if frame is None:
            raise ValueError("no frame from the source yet: try again in a moment")
        folder = self.out / label
        folder.mkdir(parents=True, exist_ok=True)  # taken away while collecting (to start the class over)
        path = self._save(folder, frame.image, frame_stem(frame.index, frame.time))
        with self._lock:
            self._counts[label] += 1
            self.saved += 1
        return str(path)


def _next_frame(reader, stop: threading.Event, feed=None, idle=None, meter: FpsMeter | None = None) -> Frame | None:
    """The next frame, or None when the source is done, stop is set or idle(1) (called while no frame comes: a
    window's poll, which keeps it alive through an outage) says quit. The reader logs outages itself; the live
    view (feed, edge.live.LiveFeed) gets them as records and each frame, clean (its page draws the buttons), with
    the frame rate `meter` measures (for /health)."""
    while not stop.is_set():
        frame = reader.get(timeout=0.1)
        for event in reader.pop_events():
            if feed is not None:
                feed.publish_event(event_record(event))
        if frame is not None and feed is not None:
            feed.publish(frame.image, None, fps=meter.tick() if meter is not None else None)
        if frame is not None or reader.done:
            return frame
        if idle is not None and idle(1):
            break
    return None


def collect_headless(collector: Collector, reader, stop: threading.Event, label: str | None, every_s: float | None,
                     count: int | None, fps: float | None, stdout, feed=None, clock=time.monotonic) -> int:  # fmt: skip
    """Saves the newest frame into `label` every `every_s` seconds until `count` photos, the source's end or
    stop; prints {"saved": path, "label": ..., "count": photos this collect, "total": in the folder} per photo.
    With every_s None it saves nothing itself (the live page's buttons do) and runs until the source ends or stop.

    Args:
        collector: saves; reader: a started FrameReader (or anything with its get, pop_events and done).
        stop: ends the loop when set (Ctrl-C, SIGTERM).
        fps: a file's frame rate: its frames' times are index / fps, not the wall clock's (None: live).
        stdout: where the JSON lines go.
        feed: the live view's LiveFeed, handed each frame (None: no live view).
        clock: seconds, for live sources (tests inject one).

    Returns:
        photos saved.
    """
    warnings, saved, due, said, meter = DiskWarnings(), 0, -float("inf"), -float("inf"), FpsMeter()
    while count is None or saved < count:
        frame = _next_frame(reader, stop, feed, meter=meter)
        if frame is None:
            break
        collector.update(frame)
        now = frame.index / fps if fps else clock()
        if every_s is None or now < due:
            continue
        due = now + every_s
        try:
            path = collector.save(label)
        except OSError as e:
            warnings.warn(collector.out / label, e)
            continue
        saved += 1
        total = collector.counts()[label]
        stdout.write(json.dumps({"saved": path, "label": label, "count": saved, "total": total}) + "\n")
        stdout.flush()
        if time.monotonic() - said >= 2.0 or saved == count:  # progress for a person, not a line per photo
            said = time.monotonic()
            log.info("saved %d%s into %s (%d there)", saved, f" of {count}" if count else "",
                     collector.out / label, total)  # fmt: skip
    return saved


class KeyWindow(Window):
    """A Window that also says which key was pressed."""

    def show_key(self, img: np.ndarray, wait_ms: int = 1) -> int | None:
        """Shows a frame and waits `wait_ms` (0: until a key); returns the key (0-255), QUIT when the user quit
        (q, Esc, or closed the window), or None when no key was pressed."""
        cv2.imshow(self.title, img)
        key = cv2.waitKey(wait_ms)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return QUIT
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                return QUIT
        except cv2.error:
            return QUIT
        return None if key == -1 else key & 0xFF


def label_for_key(key: int | None, labels: list[str]) -> str | None:
    """The label key 1..9 stands for, or None."""
    if key is None or not ord("1") <= key <= ord("9"):
        return None
    i = key - ord("1")
    return labels[i] if i < len(labels) else None


def _text(img: np.ndarray, text: str, y: int, scale: float, color=(255, 255, 255)) -> None:
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, pad = max(4, int(8 * scale)), max(2, int(4 * scale))
    cv2.rectangle(img, (x - pad, y - h - pad), (x + w + pad, y + base + pad), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_help(img: np.ndarray, labels: list[str], counts: dict[str, int], note: str = "") -> np.ndarray:
    """A copy of the frame with the keys along the bottom, the photos per class at the top and `note` under it."""
    canvas = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
    h, w = canvas.shape[:2]
    scale = max(0.35, min(w, h) / 600.0)
    line = int(26 * scale) + 6
    _text(canvas, "  ".join(f"{label} {counts.get(label, 0)}" for label in labels), line, scale)
    if note:
        _text(canvas, note, 2 * line, scale, (0, 255, 0) if note.startswith("saved") else (0, 200, 255))
    keys = "  ".join(f"{i}: {label}" for i, label in enumerate(labels, 1)) + "  q: quit"
    _text(canvas, keys, h - line // 2, scale)
    return canvas


def collect_window(collector: Collector, reader, window, still: bool, stop: threading.Event, feed=None) -> int:
    """Shows each frame with the keys and counts; key 1..9 saves it into that label, q/Esc quits. A folder of
    pictures waits for a key on each (a number saves it, any other shows the next)."""
    warnings, note, note_until, meter = DiskWarnings(), "", 0.0, FpsMeter()
    if still:
        log.info("press 1-%d to save a picture into its class, any other key for the next, q or Esc to quit",
                 len(collector.labels))  # fmt: skip
    while (frame := _next_frame(reader, stop, feed, window.poll, meter)) is not None:
        collector.update(frame)
        shown = note if time.monotonic() < note_until else ""
        key = window.show_key(draw_help(frame.image, collector.labels, collector.counts(), shown), 0 if still else 1)
        if key == QUIT:
            break
        if (label := label_for_key(key, collector.labels)) is None:
            continue
        try:
            collector.save(label)
            note = f"saved {label} ({collector.counts()[label]})"
        except OSError as e:
            warnings.warn(collector.out / label, e)
            note = f"could not save into {label}: {one_line(e.strerror or e)}"
        note_until = time.monotonic() + FLASH_S
    return collector.saved
