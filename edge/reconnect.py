"""CaptureReader: reads one capture frame by frame, on whichever thread calls it (edge.reader.FrameReader's reader
thread, or the loop's own): numbers the frames, and reopens a live source that stops giving them.

A live source that stops giving frames (read fails, camera unplugged, stream ends, or a stream stalls: the capture
opened by edge.sources gives up on a read after the stall timeout) is reopened with capped exponential backoff; the
outage is reported once, and so is the recovery: a warning each, and a SourceEvent each, handed on in order with
the frames, so the loop sees it between the last frame before it and the first one after it. A file source that
ends, ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge.frames import Frame, SourceEvent
from edge.sources import Capture

log = logging.getLogger("edge")


class CaptureReader:
    """The capture side of a FrameReader: open, read, release, reconnect; one thread at a time owns it."""

    def __init__(
        self,
        open_capture: Callable[[], Capture],
        name: str,
        live: bool,
        loop: bool,
        retry_initial_s: float,
        retry_max_s: float,
        warn: Callable[[str], None] | None,
        stall_timeout_s: float | None,
        stop: threading.Event,
    ):
        """Args: as FrameReader's; `stop` ends a reconnect's backoff."""
        self._open, self.name, self.live, self.loop = open_capture, name, live, loop
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._warn = warn or log.warning
        self.stall_timeout_s, self._stop = stall_timeout_s, stop
        self._cap: Capture | None = None
        self._last_frame: tuple[int, float] | None = None  # (index, time.time()) of the last frame read
        self._slow_read: tuple[float, float] | None = None  # the last read that waited long: its start
        # (time.time()) and end (time.monotonic())
        self._started = time.time()  # when reading began
        self._index = self._since_open = 0  # the next frame's index; frames read since the capture was opened
        self.frames_read = 0
        self.outages = 0

    def _frame_name(self) -> str:
        name = getattr(self._cap, "name", None)
        return name if isinstance(name, str) and name else self.name

    def _try_open(self) -> Capture | None:
        try:
            return self._open()
        except Exception:  # a live source that cannot be opened now is an outage, not an error
            return None

    def _read(self) -> tuple[bool, np.ndarray | None]:
        if self._cap is None:
            return False, None
        started, started_wall = time.monotonic(), time.time()
        try:
            ok, img = self._cap.read()
        except Exception:  # drivers raise on unplug; for a live source this is an outage like any failed read
            if not self.live:
                raise
            return False, None
        finally:
            ended = time.monotonic()
            if self.stall_timeout_s and ended - started >= self.stall_timeout_s / 2:
                self._slow_read = (started_wall, ended)  # a stall in the making: see _outage()
        if not ok or img is None or img.size == 0:
            return False, None
        return True, img

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception:  # releasing a dead device can fail too; it is gone either way
                pass

    def _outage(self) -> SourceEvent:
        """The event for an outage noticed now: since when there were no frames, and why."""
        last_index, last_time = self._last_frame if self._last_frame is not None else (None, self._started)
        # A read that waited half the stall timeout or more and ended just before this failure: the stream went
        # quiet when that read began. (After FFmpeg's read timeout fires, OpenCV still hands over the frames left in
        # its decoder, at once, so the last frame read is up to a stall timeout later than the stall.)
        slow, stall = self._slow_read, self.stall_timeout_s
        stalled = slow is not None and stall is not None and time.monotonic() - slow[1] <= stall
        since = min(slow[0], last_time) if stalled else last_time
        self._slow_read = None  # spent: a failure soon after the recovery is not this stall again
        return SourceEvent("outage", self.name, time.time(), since, "stalled" if stalled else "failed", last_index)

    def _reconnect(self, put: Callable[[Frame | SourceEvent], None]) -> bool:
        """Reopens a live source until it gives a frame; puts the outage, the recovery and that frame (in that
        order); False if stopped first."""
        self.outages += 1
        outage = self._outage()
        delay, tries = self.retry_initial_s, 0
        why = "read failed: device gone, stream ended or not reachable"
        if outage.reason == "stalled":  # only with a stall timeout
            why = f"stalled: no new frame within the {self.stall_timeout_s:g} s stall timeout"
        since = time.strftime("%H:%M:%S", time.localtime(outage.since))
        self._warn(f"{self.name}: no frames since {since} ({why}); reconnecting, backoff up to {self.retry_max_s:g} s")
        put(outage)
        while not self._stop.wait(delay):
            tries += 1
            self._release()
            self._cap = self._try_open()
            ok, img = self._read()
            if ok:
                back = replace(outage, kind="recovered", time=time.time(), tries=tries)
                self._warn(f"{self.name}: frames are back after {back.outage_s:.1f} s ({tries} tries)")
                put(back)
                put(self._frame(img))
                return True
            delay = min(delay * 2, self.retry_max_s)
        return False

    def _frame(self, img: np.ndarray) -> Frame:
        """The frame just read, numbered next (on whichever thread reads now)."""
        index, now = self._index, time.time()
        self._index, self._since_open, self.frames_read = index + 1, self._since_open + 1, self.frames_read + 1
        self._last_frame = (index, now)
        return Frame(index, img, self._frame_name(), now)
