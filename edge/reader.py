"""FrameReader: reads, and optionally preprocesses, a source on threads of its own, so capture, preprocessing
and inference overlap. What it hands on (Frame, SourceEvent) and how (Handoff) are in edge.frames.

    reader = FrameReader(lambda: open_capture(spec), name="camera 0", live=True, every_frame=False,
                         prepare=classifier.preprocess).start()
    while not reader.done:
        frame = reader.get(timeout=0.1)   # Frame(index, image, name, time, input), or None if none came in time
        for event in reader.pop_events():  # SourceEvent: an outage began or ended, before `frame` in time
            ...

One thread reads (decodes) frames; with `prepare` (the model's preprocessing), a second thread makes each frame
into the model's input (Frame.input). The loop's thread then only runs the model and draws, so while frame N is
inferred, frame N+1 is being resized and frame N+2 decoded: the loop runs at the pace of its slowest stage
instead of the sum of all three. OpenCV releases the GIL while it decodes and resizes, and the interpreter while
it runs, so the threads truly run at once.

Frames go from stage to stage in one of two modes (edge.frames): the latest frame only (live sources: no lag) or
every frame in order (files).

A live source that stops giving frames (read fails, camera unplugged, stream ends, or a stream stalls: the capture
opened by edge.sources gives up on a read after the stall timeout) is reopened with capped exponential backoff; the
outage is reported once, and so is the recovery: a warning each, and a SourceEvent each, which travels through the
stages in order with the frames (never dropped), so the loop sees it between the last frame before it and the
first one after it. A file source that ends, ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge.frames import Frame, Handoff, SourceEvent
from edge.sources import Capture

log = logging.getLogger("edge")


class FrameReader:
    """Reads frames from a capture on a daemon thread, and prepares them on another (see the module docstring)."""

    def __init__(
        self,
        open_capture: Callable[[], Capture],
        *,
        name: str,
        live: bool,
        every_frame: bool,
        loop: bool = False,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        queue_size: int = 4,
        warn: Callable[[str], None] | None = None,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
        stall_timeout_s: float | None = None,
    ):
        """
        Args:
            open_capture: makes a capture; called again to reconnect a live source, or to restart a looped file.
            name: the source as messages name it ("camera 0").
            live: reconnect when reads fail (True), or end (False).
            every_frame: hand over every frame in order (True), or only the newest (False).
            loop: start a file source over when it ends.
            retry_initial_s: first wait before reconnecting; doubles after each failed try, up to retry_max_s.
            retry_max_s: the cap on that wait.
            queue_size: every-frame mode: frames read ahead of the loop, per stage.
            warn: where outage messages go (default: the "edge" logger, i.e. stderr).
            prepare: run on each frame on a thread of its own (the model's preprocessing); its result is
                Frame.input. An error in it ends the frames: get() raises it once the frames prepared before it
                are handed over, as it does a failed file read.
            stall_timeout_s: the read timeout `open_capture` gave the capture, if any. It only names outages: a
                read that waited at least half of it marks the stream as stalled from when that read began (the
                frames OpenCV still hands over from its decoder after a timed-out read are older than that).
        """
        self._open, self.name, self.live, self.every_frame, self.loop = open_capture, name, live, every_frame, loop
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._warn = warn or log.warning
        self._prepare, self.stall_timeout_s = prepare, stall_timeout_s
        self._stop = threading.Event()
        self._out = Handoff(every_frame, queue_size, self._stop)  # to the loop
        self._raw = Handoff(every_frame, queue_size, self._stop) if prepare else None  # reader -> preparer
        self._threads: list[threading.Thread] = []
        self._finished = threading.Event()  # every thread has stopped
        self._running = 0
        self._lock = threading.Lock()
        self._cap: Capture | None = None
        self._error: BaseException | None = None
        self._events: list[SourceEvent] = []  # taken from the stages by get(), in order, until pop_events()
        self._last_frame: tuple[int, float] | None = None  # reader thread: (index, time.time()) of the last frame
        self._slow_read: tuple[float, float] | None = None  # reader thread: the last read that waited long: its
        # start (time.time()) and end (time.monotonic())
        self._started = time.time()  # when reading began (the reader thread sets it again)
        self.frames_read = 0
        self.outages = 0

    @property
    def frames_dropped(self) -> int:
        """Latest-frame mode: frames replaced by newer ones before the next stage took them."""
        return self._out.dropped + (self._raw.dropped if self._raw else 0)

    def start(self) -> FrameReader:
        """Opens a file source now (so a bad file fails here), a live one on the thread; starts reading."""
        if not self.live:
            self._cap = self._open()
        stages = [(self._run, self._raw or self._out, f"reader {self.name}")]
        if self._raw is not None:
            stages.append((self._prepare_run, self._out, f"preparer {self.name}"))
        self._running = len(stages)
        for target, sink, name in stages:
            thread = threading.Thread(target=self._thread_main, args=(target, sink), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    @property
    def capture(self) -> Capture | None:
        """The open capture (a file source's from start() on; None between a live source's reconnects)."""
        return self._cap

    @property
    def done(self) -> bool:
        """True once stop() was called, or the source has ended and every frame read was handed over."""
        if self._stop.is_set() and self._finished.is_set():
            return True
        return self._out.ended

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None if none came within `timeout` seconds or the source has ended (see `done`).

        Outage events met on the way are kept for pop_events(): call it after each get() to see them in order,
        each before the frame returned with it.

        Raises:
            the error that stopped the reader or the preparer thread, once the frames before it are handed over.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._out.get(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if not isinstance(frame, SourceEvent):
                break
            self._events.append(frame)
        if frame is None and self.done and self._error is not None:
            err, self._error = self._error, None
            raise err
        return frame

    def pop_events(self) -> list[SourceEvent]:
        """The outage and recovery events get() has met since the last call, oldest first; each came before the
        frame that get() returned with it (and after the frames it returned before)."""
        events, self._events = self._events, []
        return events

    def stop(self, timeout: float = 2.0) -> None:
        """Stops reading and releases the capture (on the reader thread, which owns it)."""
        self._stop.set()
        for handoff in (self._raw, self._out):  # unblock a thread waiting for room in a queue
            if handoff is not None:
                handoff.drain()
        for thread in self._threads:
            thread.join(timeout)  # a read blocked inside a driver may outlive this; the thread is a daemon

    def __enter__(self) -> FrameReader:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the threads -----------------------------------------------------------------------------------------

    def _thread_main(self, target: Callable[[], None], sink: Handoff) -> None:
        """Runs one stage; an error is kept for get() to raise, before the next stage is told this one ended."""
        try:
            target()
        except BaseException as e:  # handed to the loop by get(), which re-raises it there
            if self._error is None:
                self._error = e
        finally:
            sink.close()
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._finished.set()

    def _run(self) -> None:
        """The reader thread: reads frames into the preparer's handoff (or straight to the loop's)."""
        sink = self._raw or self._out
        index, self._started = 0, time.time()
        try:
            if self._cap is None:
                self._cap = self._try_open()
            since_open = 0
            while not self._stop.is_set():
                ok, img = self._read()
                if ok:
                    self._deliver(sink, index, img)
                    index, since_open = index + 1, since_open + 1
                elif self.live:
                    if not self._reconnect(sink, index):
                        break
                    index += 1  # _reconnect delivered the frame that proved the source is back
                elif self.loop and since_open > 0:
                    self._release()
                    self._cap, since_open = self._open(), 0
                else:
                    break
        finally:
            self._release()

    def _prepare_run(self) -> None:
        """The preparer thread: makes each frame into the model's input, in the order read."""
        while not self._stop.is_set():
            item = self._raw.get(timeout=0.1)
            if item is None:
                if self._raw.ended:
                    break
                continue
            self._out.put(item if isinstance(item, SourceEvent) else replace(item, input=self._prepare(item.image)))

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

    def _reconnect(self, sink: Handoff, index: int) -> bool:
        """Reopens a live source until it gives a frame (delivered as `index`); False if stopped first."""
        self.outages += 1
        outage = self._outage()
        delay, tries = self.retry_initial_s, 0
        why = "read failed: device gone, stream ended or not reachable"
        if outage.reason == "stalled":  # only with a stall timeout
            why = f"stalled: no new frame within the {self.stall_timeout_s:g} s stall timeout"
        since = time.strftime("%H:%M:%S", time.localtime(outage.since))
        self._warn(f"{self.name}: no frames since {since} ({why}); reconnecting, backoff up to {self.retry_max_s:g} s")
        sink.put(outage)
        while not self._stop.wait(delay):
            tries += 1
            self._release()
            self._cap = self._try_open()
            ok, img = self._read()
            if ok:
                back = replace(outage, kind="recovered", time=time.time(), tries=tries)
                self._warn(f"{self.name}: frames are back after {back.outage_s:.1f} s ({tries} tries)")
                sink.put(back)
                self._deliver(sink, index, img)
                return True
            delay = min(delay * 2, self.retry_max_s)
        return False

    def _deliver(self, sink: Handoff, index: int, img: np.ndarray) -> None:
        self.frames_read += 1
        now = time.time()
        self._last_frame = (index, now)
        sink.put(Frame(index, img, self._frame_name(), now))
