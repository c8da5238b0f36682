"""What the frame reader hands on, and how: Frame and SourceEvent, passed from thread to thread by a Handoff.

    handoff = Handoff(every_frame=True, size=4, stop=threading.Event())
    handoff.put(Frame(0, image, "clip.mp4", time.time()))   # producer thread; close() when it has no more
    item = handoff.get(timeout=0.1)                          # consumer thread: a Frame, a SourceEvent or None

edge.reader.FrameReader chains two of them (reader -> preparer -> loop), in one of two modes:
- latest frame (live cameras and streams): each stage keeps only the newest frame, so a model slower than the
  camera never builds up lag; frame indices then skip the frames that were dropped.
- every frame (files, folders, test input): each frame is handed over, in order; the producer waits for room.

Events are never dropped and keep their place among the frames, so the loop sees an outage between the last frame
before it and the first one after it. So is PAUSE, which ends a run of frames read on threads (edge.shape).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

_END = object()  # every-frame mode: the stage before has ended


class _Pause:
    def __repr__(self) -> str:
        return "PAUSE"


PAUSE = _Pause()  # every-frame mode: the stage before has read its run of frames and handed the capture back; it
#   travels like a frame (in order, never dropped) and the stages after it stop, without ending the source


@dataclass(frozen=True)
class Frame:
    """One frame as read."""

    index: int  # position in the source from 0; gaps are frames the latest-frame mode dropped
    image: np.ndarray  # BGR, as OpenCV gives it
    name: str  # the image file's name when reading images, else the source's description
    time: float  # time.time() when it was read
    input: np.ndarray | None = None  # prepare(image), made on the preparing thread; None without prepare


@dataclass(frozen=True)
class SourceEvent:
    """A live source's outage beginning ("outage") or ending ("recovered")."""

    kind: str  # "outage": no frames, reconnecting; "recovered": a frame came again
    source: str  # the source as messages name it
    time: float  # time.time() when it was noticed: the outage detected, or the first frame after it read
    since: float  # time.time() when the frames stopped: the last frame before the outage (or when reading began)
    reason: str  # "stalled": no new frame within the stall timeout; "failed": a read failed, or the open did
    last_frame: int | None  # index of the last frame before the outage; None if none was read yet
    tries: int = 0  # "recovered": how many reopens it took

    @property
    def outage_s(self) -> float:
        """Seconds without frames: from `since` to `time`."""
        return max(0.0, self.time - self.since)


class Handoff:
    """Frames from one thread to the next: every frame in order through a bounded queue, or only the newest.

    The producer calls put() per frame (or SourceEvent) and close() when it has no more; the consumer calls get()
    until ended. Events are never dropped and keep their place: in latest-frame mode a new frame replaces only a
    frame that is still waiting after the last event, never one from before it.
    """

    def __init__(self, every_frame: bool, size: int, stop: threading.Event):
        self.every_frame, self._stop = every_frame, stop
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._cond = threading.Condition()
        self._items: deque = deque()  # latest-frame mode: events, and at most one frame after the last of them
        self._closed = False  # the producer has finished
        self._ended = False  # every-frame mode: the end marker was taken
        self.dropped = 0  # latest-frame mode: frames replaced before the consumer took them

    @property
    def ended(self) -> bool:
        """True once the producer has finished and every frame it put was taken."""
        if self.every_frame:
            return self._ended
        with self._cond:
            return self._closed and not self._items

    def put(self, item: Frame | SourceEvent) -> None:
        """Hands a frame or an event over; every-frame mode waits for room (until stopped)."""
        if self.every_frame:
            self._put(item)
            return
        with self._cond:
            if isinstance(item, Frame) and self._items and isinstance(self._items[-1], Frame):
                self._items[-1] = item
                self.dropped += 1
            else:
                self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.every_frame:
            self._put(_END, force=True)

    def get(self, timeout: float | None) -> Frame | SourceEvent | None:
        """The next frame or event, or None if none came within `timeout` seconds or the producer has ended."""
        if self.every_frame:
            if self._ended:
                return None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if item is _END:
                self._ended = True
                return None
            return item
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout)
            return self._items.popleft() if self._items else None

    def drain(self) -> None:
        """Empties the queue, so a producer waiting for room sees the stop."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _put(self, item, force: bool = False) -> None:
        while force or not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if force and self._stop.is_set():  # nobody will read: make room for the end marker
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
