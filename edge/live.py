"""The live view's feed: the classifier loop publishes each frame and record here; any number of browser clients
read the newest JPEG and the records from it (edge.serve serves them over HTTP).

    feed = LiveFeed(info={"model": "tflite_int8.tflite", "sha256": "...", "source": "camera 0", "mode": "classify"})
    feed.start()                                   # the encoder thread
    run_loop(options, classifier, reader, feed=feed)  # calls feed.publish(image, record, result, fps, drawn)
    with feed.watching():                          # an HTTP client showing the video
        seq, jpeg = feed.next_jpeg(0, timeout=1.0)

Watching must never slow the classifier, so publish() only swaps a reference and appends the record to a bounded
ring; it never copies, draws or encodes. One encoder thread JPEG-encodes the newest frame, at most max_fps times a
second and only while at least one client watches the video: a frame is encoded once however many watch, and
nothing is encoded when nobody does. Each client holds only a sequence number (the newest JPEG) or a cursor into
the ring (the records): a slow client skips ahead, so memory never grows with it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

import cv2
import numpy as np

from edge.display import draw_overlay

log = logging.getLogger("edge")


class LiveFeed:
    """Newest frame and recent records of the loop, for the live view's clients (see the module docstring)."""

    def __init__(
        self,
        info: dict | None = None,
        history: int = 256,
        max_fps: float = 15.0,
        quality: int = 80,
        stale_s: float = 10.0,
        clock=time.monotonic,
    ):
        """
        Args:
            info: what /health says about the run beside the live figures (model, sha256, source, mode).
            history: records kept for clients that read the record stream (older ones are dropped).
            max_fps: the encoder encodes at most this many frames a second (what the video shows; 15 is smooth
                enough to watch and costs a Pi 4 about one core-tenth at 640x480).
            quality: JPEG quality, 0-100.
            stale_s: health() is not ok when the last frame is older than this, or none came yet.
            clock: seconds, for the frames' ages (tests pass their own).
        """
        self.info = dict(info or {})
        self.max_fps, self.quality, self.stale_s, self._clock = max_fps, quality, stale_s, clock
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)  # the encoder waits here: a frame, a watcher or stop
        self._new_jpeg = threading.Condition(self._lock)  # video clients wait here
        self._new_record = threading.Condition(self._lock)  # record-stream clients wait here
        self._frame: tuple | None = None  # (seq, image, result, fps, drawn): the newest frame, never copied
        self._frame_seq = 0
        self._frame_time: float | None = None  # time.monotonic() of the newest frame
        self._fps: float | None = None
        self._encoded_seq = 0  # the frame the stored JPEG was made from (0: none; a new watcher re-encodes)
        self._jpeg: tuple[int, bytes] | None = None  # (jpeg seq, bytes): the newest encoded frame
        self._jpeg_seq = 0
        self._records: deque[tuple[int, dict]] = deque(maxlen=history)
        self._record_seq = 0
        self._latest: dict | None = None  # the newest frame record
        self._outage: dict | None = None  # the outage record while frames are missing
        self._watchers = 0
        self._stopped = False
        self._halt = threading.Event()  # set by stop(): ends the encoder's rate-cap sleep
        self._thread: threading.Thread | None = None
        self.frames = 0  # frames published
        self.frames_encoded = 0  # JPEGs made (0 while nobody watches)

    # The loop's side: O(1), never blocks for longer than a reference swap under the lock.

    def publish(self, image: np.ndarray, record: dict | None, result=None, fps: float | None = None, drawn=False):
        """The loop hands over a frame: `image` (BGR; with the overlay when `drawn`), its JSON record (what
        --headless prints), the classifier's Result (None in collect mode: no overlay) and the loop's FPS."""
        with self._lock:
            self._frame_seq += 1
            self._frame = (self._frame_seq, image, result, fps, drawn)
            self._frame_time = self._clock()
            self._fps = fps
            self._outage = None
            self.frames += 1
            if record is not None:
                self._latest = record
                self._append(record)
            if self._watchers:
                self._new_frame.notify()

    def publish_event(self, record: dict) -> None:
        """An outage or recovered record (edge.app.event_record): into the same ring, in order with the frames."""
        with self._lock:
            self._outage = record if record.get("event") == "outage" else None
            self._append(record)

    def _append(self, record: dict) -> None:
        self._record_seq += 1
        self._records.append((self._record_seq, record))
        self._new_record.notify_all()

    # The encoder thread.

    def start(self) -> LiveFeed:
        """Starts the encoder thread (a daemon); returns self."""
        if self._thread is None:
            self._stopped = False
            self._halt.clear()
            self._thread = threading.Thread(target=self._encode_loop, name="live-encoder", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stops the encoder and wakes every waiting client (they see None / no records and go on or end)."""
        self._halt.set()
        with self._lock:
            self._stopped = True
            for cond in (self._new_frame, self._new_jpeg, self._new_record):
                cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _encode_loop(self) -> None:
        while True:
            with self._lock:
                self._new_frame.wait_for(
                    lambda: self._stopped or (self._watchers and self._frame_seq > self._encoded_seq)
                )
                if self._stopped:
                    return
                seq, image, result, fps, drawn = self._frame
            started = time.monotonic()
            try:
                jpeg = self._encode(image, result, fps, drawn)
            except (cv2.error, ValueError) as e:  # a frame OpenCV cannot encode: say so, keep serving
                log.warning("live view: frame %d could not be encoded (%s)", seq, e)
                jpeg = None
            with self._lock:
                self._encoded_seq = seq
                if jpeg is not None:
                    self._jpeg_seq += 1
                    self._jpeg = (self._jpeg_seq, jpeg)
                    self.frames_encoded += 1
                    self._new_jpeg.notify_all()
            # The rate cap: a sleep that new frames do not interrupt (each wake-up would cost the loop's thread a
            # hand-over of the GIL); then the newest frame by then is encoded, those in between never are.
            self._halt.wait(max(0.0, started + 1.0 / self.max_fps - time.monotonic()))

    def _encode(self, image: np.ndarray, result, fps: float | None, drawn: bool) -> bytes:
        if not drawn and result is not None:
            image = draw_overlay(image.copy(), result, fps)  # a copy: the loop's frame may be recorded or kept
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("cv2.imencode failed")
        return buf.tobytes()

    # The clients' side (server threads).

    @contextlib.contextmanager
    def watching(self):
        """Counts a video client while the block runs: the encoder works only while there is one."""
        with self._lock:
            self._watchers += 1
            self._new_frame.notify()
        try:
            yield self
        finally:
            with self._lock:
                self._watchers -= 1
                if not self._watchers:  # nobody left: free the JPEG; the next watcher gets a fresh one
                    self._jpeg, self._encoded_seq = None, 0

    @property
    def watchers(self) -> int:
        return self._watchers

    def next_jpeg(self, after_seq: int, timeout: float | None) -> tuple[int, bytes] | None:
        """The newest JPEG once it is newer than `after_seq` (0: any), as (seq, bytes); None if none came within
        `timeout` seconds or the feed stopped. Frames encoded in between are skipped: a client sees the newest."""
        with self._lock:
            self._new_jpeg.wait_for(
                lambda: self._stopped or (self._jpeg is not None and self._jpeg[0] > after_seq), timeout
            )
            jpeg = self._jpeg
            return jpeg if jpeg is not None and jpeg[0] > after_seq and not self._stopped else None

    def cursor(self) -> int:
        """The newest record's sequence number: records_after(cursor()) gives only records published later."""
        with self._lock:
            return self._record_seq

    def records_after(self, cursor: int, timeout: float | None) -> tuple[int, list[dict]]:
        """Every record after `cursor` still in the ring, waiting up to `timeout` seconds for one.

        Returns:
            (the new cursor, the records in order). A client that fell behind the ring gets what is left of it and
            skips ahead; none came in time (or the feed stopped): (cursor, []).
        """
        with self._lock:
            self._new_record.wait_for(lambda: self._stopped or self._record_seq > cursor, timeout)
            if self._record_seq <= cursor:
                return cursor, []
            return self._record_seq, [r for s, r in self._records if s > cursor]

    def latest(self) -> dict | None:
        """The newest frame record (what --headless printed last), or None before the first frame."""
        with self._lock:
            return self._latest

    def health(self) -> dict:
        """The run at a glance, for /health: the `info` keys, then ok (a frame within stale_s), last_frame_age_s,
        fps, frames, watchers, frames_encoded and outage (the outage record while frames are missing, else None)."""
        with self._lock:
            age = None if self._frame_time is None else self._clock() - self._frame_time
            return {
                **self.info,
                "ok": age is not None and age <= self.stale_s,
                "last_frame_age_s": None if age is None else round(age, 3),
                "fps": None if self._fps is None else round(self._fps, 2),
                "frames": self.frames,
                "watchers": self._watchers,
                "frames_encoded": self.frames_encoded,
                "outage": self._outage,
            }
