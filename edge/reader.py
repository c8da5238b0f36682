"""FrameReader: reads, and optionally preprocesses, a source: on threads of its own, so capture, preprocessing
and inference overlap, or, for a file where that is faster, on the loop's own thread. What it hands on (Frame,
SourceEvent) and how (Handoff) are in edge.frames; which of the two shapes a file gets, in edge.shape.

    reader = FrameReader(lambda: open_capture(spec), name="camera 0", live=True, every_frame=False,
                         prepare=classifier.preprocess).start()
    while not reader.done:
        frame = reader.get(timeout=0.1)   # Frame(index, image, name, time, input), or None if none came in time
        for event in reader.pop_events():  # SourceEvent: an outage began or ended, before `frame` in time
            ...

On threads, one thread reads (decodes) frames; with `prepare` (the model's preprocessing), a second thread makes
each frame into the model's input (Frame.input). The loop's thread then only runs the model and draws, so while
frame N is inferred, frame N+1 is being resized and frame N+2 decoded: the loop runs at the pace of its slowest
stage instead of the sum of all three. OpenCV releases the GIL while it decodes and resizes, and the interpreter
while it runs, so the threads truly run at once. Serially, get() itself reads and prepares the next frame: where
inference is cheap, that beats handing each frame between threads (edge.shape). A file read every frame starts
serially and moves to threads, for a run of frames or for good, when they prove faster (reader.shape says which it
is in now); a live source, or any source read for its newest frame, always has a reader thread.

Frames go from stage to stage in one of two modes (edge.frames): the latest frame only (live sources: no lag) or
every frame in order (files).

A live source that stops giving frames is reopened with backoff (edge.reconnect); its outage and recovery travel
as SourceEvents through the stages in order with the frames, never dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge.frames import PAUSE, Frame, Handoff, SourceEvent
from edge.reconnect import CaptureReader
from edge.shape import SERIAL, THREADS, ShapeChooser
from edge.sources import Capture

log = logging.getLogger("edge")
SHAPES = ("auto", THREADS, SERIAL)


class FrameReader(CaptureReader):
    """Reads frames from a capture, on daemon threads or on the loop's (see the module docstring)."""

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
        shape: str | ShapeChooser = "auto",
        clock: Callable[[], float] = time.perf_counter,
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
            prepare: run on each frame (the model's preprocessing), on a thread of its own or in get(); its
                result is Frame.input. An error in it ends the frames: get() raises it once the frames prepared
                before it are handed over, as it does a failed file read.
            stall_timeout_s: the read timeout `open_capture` gave the capture, if any. It only names outages: a
                read that waited at least half of it marks the stream as stalled from when that read began (the
                frames OpenCV still hands over from its decoder after a timed-out read are older than that).
            shape: how a file read every frame is read: "auto" (serially, or on threads where they prove faster:
                edge.shape), "threads", "serial", or a ShapeChooser (tests). Any other source is read on threads.
            clock: what times the stages for "auto" (seconds; tests pass a fake one).
        """
        if isinstance(shape, str) and shape not in SHAPES:
            raise ValueError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")
        stop = threading.Event()
        super().__init__(open_capture, name, live, loop, retry_initial_s, retry_max_s, warn, stall_timeout_s, stop)
        self.every_frame, self._prepare = every_frame, prepare
        self._asked, self._clock = shape, clock
        self._chooser: ShapeChooser | None = None
        self._out = Handoff(every_frame, queue_size, stop)  # to the loop
        self._raw = Handoff(every_frame, queue_size, stop) if prepare else None  # reader -> preparer
        self._threads: list[threading.Thread] = []
        self._finished = threading.Event()  # every thread has stopped (or none was started)
        self._finished.set()
        self._running = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._events: list[SourceEvent] = []  # taken from the stages by get(), in order, until pop_events()
        self._serial = False  # the loop's thread reads now (get() reads and prepares)
        self._limit: int | None = None  # frames the threads read before handing the capture back (None: all)
        self._ended = False  # serial: the source has ended (or failed) and every frame was handed over
        self._handed: float | None = None  # clock() when get() last returned a frame

    @property
    def frames_dropped(self) -> int:
        """Latest-frame mode: frames replaced by newer ones before the next stage took them."""
        return self._out.dropped + (self._raw.dropped if self._raw else 0)

    @property
    def shape(self) -> str:
        """How frames are read now: "serial" (in get(), on the loop's thread) or "threads"."""
        return SERIAL if self._serial else THREADS

    @property
    def shape_note(self) -> str:
        """Why: the last decision, with the stage costs it was made from."""
        return self._chooser.note if self._chooser is not None else self.shape

    def start(self) -> FrameReader:
        """Opens a file source now (so a bad file fails here), a live one on the thread; starts reading."""
        if not self.live:
            self._cap = self._open()
        self._started = time.time()
        asked = self._asked
        if self.live or not self.every_frame:
            why = "a live source" if self.live else "newest frame only"
            log.info("loop: threads (%s: a reader thread keeps the newest frame)", why)
            self._start_threads(None)
        elif asked in (THREADS, SERIAL):
            log.info("loop: %s (as asked)", asked)
            self._serial = asked == SERIAL
            if not self._serial:
                self._start_threads(None)
        else:  # "auto": serial first, the chooser decides (edge.shape)
            self._chooser = asked if isinstance(asked, ShapeChooser) else ShapeChooser()
            self._serial = True
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
        return self._ended or self._out.ended

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None if none came within `timeout` seconds or the source has ended (see `done`).

        Outage events met on the way are kept for pop_events(): call it after each get() to see them in order,
        each before the frame returned with it. Serially, get() reads the frame itself (a file: no wait).

        Raises:
            the error that stopped reading or preparing, once the frames before it are handed over.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._serial:
                return self._get_serial()
            frame = self._out.get(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if frame is PAUSE:  # a run of threaded frames is used up: the capture is the loop's thread's again
                for thread in self._threads:
                    thread.join()
                self._follow(self._chooser.threads_ended())
            elif isinstance(frame, SourceEvent):
                self._events.append(frame)
            else:
                break
        if frame is None and self.done and self._error is not None:
            err, self._error = self._error, None
            raise err
        if frame is not None and self._limit is not None:  # a timed run: the chooser compares it with serial
            now = self._clock()
            if self._handed is not None:
                self._chooser.threads_frame((now - self._handed) * 1000.0)
            self._handed = now
        return frame

    def pop_events(self) -> list[SourceEvent]:
        """The outage and recovery events get() has met since the last call, oldest first; each came before the
        frame that get() returned with it (and after the frames it returned before)."""
        events, self._events = self._events, []
        return events

    def stop(self, timeout: float = 2.0) -> None:
        """Stops reading and releases the capture (on the thread that owns it)."""
        self._stop.set()
        for handoff in (self._raw, self._out):  # unblock a thread waiting for room in a queue
            if handoff is not None:
                handoff.drain()
        for thread in self._threads:
            thread.join(timeout)  # a read blocked inside a driver may outlive this; the thread is a daemon
        if not any(thread.is_alive() for thread in self._threads):  # serial, or threads that handed it back
            self._release()

    def __enter__(self) -> FrameReader:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- serial: the loop's thread reads ---------------------------------------------------------------------

    def _get_serial(self) -> Frame | None:
        """Reads and prepares the next frame of a file here, timing each step for the chooser."""
        if self._ended or self._stop.is_set():
            return None
        start = self._clock()
        try:
            ok, img = self._read()
            while not ok and self.loop and self._since_open > 0:
                self._release()
                self._cap, self._since_open = self._open(), 0
                ok, img = self._read()
            if not ok:
                self._ended = True
                self._release()
                return None
            read = self._clock()
            frame = self._frame(img)
            if self._prepare is not None:
                frame = replace(frame, input=self._prepare(img))
        except BaseException:  # a failed read or prepare ends the frames, as on threads
            self._ended = True
            self._release()
            raise
        end = self._clock()
        looped = None if self._handed is None else (start - self._handed) * 1000.0
        self._handed = end
        if self._chooser is not None:
            self._follow(self._chooser.serial_frame((read - start) * 1000.0, (end - read) * 1000.0, looped))
        return frame

    def _follow(self, decision: tuple[str, int | None]) -> None:
        """Goes on serially, or starts the threads for the next n frames (None: all)."""
        shape, frames = decision
        self._serial = shape == SERIAL
        if not self._serial:
            self._start_threads(frames)

    # -- the threads -----------------------------------------------------------------------------------------

    def _start_threads(self, limit: int | None) -> None:
        self._serial, self._limit = False, limit
        stages = [(self._run, self._raw or self._out, f"reader {self.name}")]
        if self._raw is not None:
            stages.append((self._prepare_run, self._out, f"preparer {self.name}"))
        self._running, self._threads = len(stages), []
        self._finished.clear()
        for target, sink, name in stages:
            thread = threading.Thread(target=self._thread_main, args=(target, sink), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _thread_main(self, target: Callable[[], bool], sink: Handoff) -> None:
        """Runs one stage; an error is kept for get() to raise, before the next stage is told this one ended. A
        stage that paused (its run of frames used up) hands PAUSE on instead of ending."""
        paused = False
        try:
            paused = target()
        except BaseException as e:  # handed to the loop by get(), which re-raises it there
            if self._error is None:
                self._error = e
        finally:
            if not paused:
                sink.close()
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._finished.set()

    def _run(self) -> bool:
        """The reader thread: reads frames into the preparer's handoff (or straight to the loop's). Returns True
        when it stopped after its run of frames, leaving the capture open for the loop's thread."""
        sink, paused, limit = self._raw or self._out, False, self._limit
        try:
            if self._cap is None:
                self._cap = self._try_open()
            while not self._stop.is_set():
                if limit is not None and limit <= 0:
                    sink.put(PAUSE)
                    paused = True
                    break
                ok, img = self._read()
                if ok:
                    sink.put(self._frame(img))
                    limit = None if limit is None else limit - 1
                elif self.live:
                    if not self._reconnect(sink.put):
                        break
                elif self.loop and self._since_open > 0:
                    self._release()
                    self._cap, self._since_open = self._open(), 0
                else:
                    break
        finally:
            if not paused:
                self._release()
        return paused

    def _prepare_run(self) -> bool:
        """The preparer thread: makes each frame into the model's input, in the order read; True if it paused."""
        while not self._stop.is_set():
            item = self._raw.get(timeout=0.1)
            if item is None:
                if self._raw.ended:
                    break
                continue
            if item is PAUSE:
                self._out.put(PAUSE)
                return True
            self._out.put(item if isinstance(item, SourceEvent) else replace(item, input=self._prepare(item.image)))
        return False
