"""Camera-loop FPS: edge's own loop (edge.app.run_loop) classifying a 640x480 video, so capture, preprocessing and
drawing costs show next to inference, beside a one-thread loop as the reference.

    video = write_video(frames_from_images(test_rgb, 300), "loop.mp4")
    capture_ms = measure_capture(video)                          # decoding alone, no model
    figures = measure_loop(classifier, video, warmup=10)         # loop_fps, loop_ms, loop_inference_ms, ...
    serial = measure_serial_loop(classifier, video, warmup=10)   # the same figures, one thread

The loop is edge.app's, unchanged: FrameReader reads the video (every frame, in order) on the loop's thread or on a
reader and a preparer thread, whichever edge.shape finds faster here (loop_shape says which it ended in), while the
main thread runs the model and draws the overlay; the drawn frame goes to a recorder that only notes the time. The
reference is the TensorFlow Raspberry Pi example's loop: read, preprocess, invoke, count FPS and draw, one frame
after the other on one thread, with edge's own preprocessing and drawing, so only the loop's shape differs. Only
numpy, OpenCV, contracts and edge are imported, so this runs on the device too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from contracts.runners.classifier import Classifier, Result
from edge.app import EdgeOptions, run_loop
from edge.display import FpsMeter, draw_overlay
from edge.reader import FrameReader
from edge.sources import open_capture, parse_source, quiet_opencv


def frames_from_images(rgb: np.ndarray, n: int, size: tuple[int, int] = (640, 480)) -> Iterator[np.ndarray]:
    """n BGR frames of size (width, height), cycling through uint8 RGB images (frame i shows image i % len)."""
    for i in range(n):
        yield cv2.resize(rgb[i % len(rgb)][..., ::-1], size, interpolation=cv2.INTER_LINEAR)


def synthetic_frames(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> Iterator[np.ndarray]:
    """n smooth random BGR frames (the device has no test images; loop speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        yield cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)


def write_video(frames: Iterable[np.ndarray], path: str | Path, codec: str = "mp4v", fps: float = 30.0) -> Path:
    """Writes BGR frames (all of one size) as a video; returns its path.

    Raises:
        RuntimeError: OpenCV cannot write this codec here (every OpenCV build has mp4v and MJPG).
    """
    writer, n = None, 0
    try:
        for img in frames:
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {path} with codec {codec}: pass --video-codec MJPG")
            writer.write(img)
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        raise RuntimeError(f"no frames to write to {path}")
    return Path(path)


def measure_capture(video: str | Path, passes: int = 3) -> float:
    """Milliseconds to read (decode) one frame of the video with cv2.VideoCapture alone: the median of `passes`
    whole passes, each timed from the first read to the last."""
    per_pass = []
    for _ in range(passes):
        cap = cv2.VideoCapture(str(video))
        n, t = 0, time.perf_counter()
        while cap.read()[0]:
            n += 1
        elapsed = time.perf_counter() - t
        cap.release()
        if n == 0:
            raise RuntimeError(f"OpenCV reads no frames from {video}")
        per_pass.append(elapsed * 1000.0 / n)
    return statistics.median(per_pass)


def measure_steps(classifier: Classifier, frame: np.ndarray, repeats: int = 30) -> tuple[float, float]:
    """(preprocess ms, draw ms) for one frame: medians of `repeats` calls of what the loop calls."""
    pre, draw = [], []
    result = classifier.classify(frame)
    for _ in range(repeats):
        t = time.perf_counter()
        classifier.preprocess(frame)
        pre.append(time.perf_counter() - t)
        canvas = frame.copy()  # the loop draws on the frame itself; the copy keeps this one clean
        t = time.perf_counter()
        draw_overlay(canvas, result, 30.0)
        draw.append(time.perf_counter() - t)
    return statistics.median(pre) * 1000.0, statistics.median(draw) * 1000.0


class _Tap:
    """The classifier as the loop sees it, keeping every Result."""

    def __init__(self, classifier: Classifier):
        self._classifier = classifier
        self.results: list[Result] = []

    def classify(self, image: np.ndarray, x: np.ndarray | None = None) -> Result:
        result = self._classifier.classify(image, x)
        self.results.append(result)
        return result


class _Stopwatch:
    """Wraps a function, appending the milliseconds of each call to `ms` (the reader's and preparer's steps)."""

    def __init__(self, fn, ms: list[float] | None = None):
        self._fn, self.ms = fn, ([] if ms is None else ms)

    def __call__(self, *args):
        t = time.perf_counter()
        out = self._fn(*args)
        self.ms.append((time.perf_counter() - t) * 1000.0)
        return out


class _TimedCapture:
    """A capture whose read() (decoding, on the reader thread) is timed into `read_ms`."""

    def __init__(self, cap, read_ms: list[float]):
        self._cap, self.read = cap, _Stopwatch(cap.read, read_ms)

    def release(self) -> None:
        self._cap.release()


class _TimedReader:
    """The FrameReader as the loop sees it, timing how long the loop waits for each frame it gets."""

    def __init__(self, reader: FrameReader):
        self._reader = reader
        self.wait_ms: list[float] = []

    def get(self, timeout: float | None = None):
        t = time.perf_counter()
        frame = self._reader.get(timeout)
        if frame is not None:
            self.wait_ms.append((time.perf_counter() - t) * 1000.0)
        return frame

    @property
    def done(self) -> bool:
        return self._reader.done

    def pop_events(self) -> list:
        return self._reader.pop_events()


class _ClockRecorder:
    """A recorder for edge's loop that keeps only the time each drawn frame was handed over."""

    def __init__(self):
        self.times: list[float] = []

    def write(self, canvas: np.ndarray) -> None:
        self.times.append(time.perf_counter())


def measure_loop(
    classifier: Classifier, video: str | Path, warmup: int = 10, labels: list[int] | None = None, feed=None,
    shape: str = "auto",
) -> dict:  # fmt: skip
    """Runs edge's camera loop over a video file and times it.

    Args:
        classifier: the loaded model (its threads are the row's threads).
        video: a video file (every frame is classified, in order).
        warmup: first frames left out of the figures.
        labels: class index of each frame, for loop_top1 (None: not computed).
        feed: handed to run_loop (a live view, edge.live.LiveFeed: what watching costs the loop); None: none.
        shape: the reader's shape (edge.reader.FrameReader): "auto" as edge runs, or "threads" or "serial".

    Returns:
        loop_fps, loop_ms (per frame, between consecutive drawn frames), loop_inference_ms (mean, inside the
        runtime), loop_overhead_ms (loop_ms - loop_inference_ms), loop_wait_ms (mean wait for the reader's next
        prepared frame: decoding and preprocessing their threads did not hide), loop_capture_ms and
        loop_preprocess_ms (means per frame where the reader read and prepared it: its threads, or the loop's),
        loop_frames, loop_top1, loop_shape (how the reader read the last frames: "serial" or "threads").

    Raises:
        RuntimeError: the loop classified too few frames to time.
    """
    spec = parse_source(str(video))
    quiet_opencv()
    tap, clock = _Tap(classifier), _ClockRecorder()
    options = EdgeOptions(model=classifier.entry.file, source=str(video), headless=False, every_frame=True)
    read_ms: list[float] = []
    prepare = _Stopwatch(classifier.preprocess)
    reader = FrameReader(lambda: _TimedCapture(open_capture(spec), read_ms), name=str(spec), live=False,
                         every_frame=True, prepare=prepare, shape=shape).start()  # fmt: skip
    timed_reader = _TimedReader(reader)
    try:
        n = run_loop(options, tap, timed_reader, rec=clock, feed=feed)  # the loop itself, not a copy of it
    finally:
        reader.stop()
    if n < warmup + 2 or not len(clock.times) == len(timed_reader.wait_ms) == n:
        raise RuntimeError(f"the camera loop classified {n} frames of {video}; it needs more than {warmup + 1}")
    figures = _figures(classifier, warmup, clock.times, tap.results, timed_reader.wait_ms, read_ms, prepare.ms, labels)
    return {**figures, "loop_shape": reader.shape}


def measure_serial_loop(
    classifier: Classifier, video: str | Path, warmup: int = 10, labels: list[int] | None = None
) -> dict:
    """Runs the reference loop over a video file and times it: one thread reads a frame, preprocesses it, runs the
    model, counts FPS and draws the overlay, then reads the next (the TensorFlow Raspberry Pi example's loop).

    Returns:
        measure_loop()'s figures but loop_shape, from the same frames: loop_wait_ms is the time it spent reading
        and preprocessing (nothing overlaps them).

    Raises:
        RuntimeError: the video has too few frames to time.
    """
    cap = cv2.VideoCapture(str(video))
    meter, times, results, wait_ms, read_ms, prepare_ms = FpsMeter(), [], [], [], [], []
    try:
        while True:
            t = time.perf_counter()
            ok, img = cap.read()
            read = time.perf_counter()
            if not ok:
                break
            x = classifier.preprocess(img)
            prepared = time.perf_counter()
            result = classifier.classify(img, x)
            draw_overlay(img, result, meter.tick())
            times.append(time.perf_counter())
            results.append(result)
            read_ms.append((read - t) * 1000.0)
            prepare_ms.append((prepared - read) * 1000.0)
            wait_ms.append((prepared - t) * 1000.0)
    finally:
        cap.release()
    if len(times) < warmup + 2:
        raise RuntimeError(
            f"the serial loop classified {len(times)} frames of {video}; it needs more than {warmup + 1}"
        )
    return _figures(classifier, warmup, times, results, wait_ms, read_ms, prepare_ms, labels)


def _figures(classifier, warmup: int, times, results, wait_ms, read_ms, prepare_ms, labels) -> dict:
    """A loop's figures from per-frame lists (drawn-frame clock times, Results, ms waiting, reading, preparing)."""
    n = len(times)
    k = warmup  # frame k's hand-over starts the clock; frames k+1 .. n-1 are timed
    measured = n - 1 - k
    loop_ms = (times[-1] - times[k]) * 1000.0 / measured
    inference = np.array([r.inference_ms for r in results[k + 1 :]])
    top1 = None
    if labels is not None:
        names = classifier.labels
        hits = [r.top is not None and r.top.label == names[labels[i]] for i, r in enumerate(results)]
        top1 = round(float(np.mean(hits)), 4)
    return {
        "loop_fps": round(1000.0 / loop_ms, 2),
        "loop_ms": round(loop_ms, 4),
        "loop_inference_ms": round(float(inference.mean()), 4),
        "loop_overhead_ms": round(loop_ms - float(inference.mean()), 4),
        "loop_wait_ms": round(float(np.mean(wait_ms[k + 1 :])), 4),
        "loop_capture_ms": round(float(np.mean(read_ms[k + 1 : n])), 4),
        "loop_preprocess_ms": round(float(np.mean(prepare_ms[k + 1 : n])), 4),
        "loop_frames": measured,
        "loop_top1": top1,
    }


SERIAL_KEYS = ("loop_fps", "loop_ms", "loop_inference_ms", "loop_wait_ms", "loop_capture_ms", "loop_preprocess_ms")


def loop_columns(
    classifier: Classifier, video: str | Path, warmup: int = 10, labels: list[int] | None = None, repeats: int = 3
) -> dict:
    """measure_loop()'s figures from the median of `repeats` passes (by loop_ms; all figures from that one pass,
    so they still add up), plus preprocess_ms and draw_ms measured alone on the video's first frame, and the
    one-thread reference loop's figures (measure_serial_loop(), its median pass by loop_ms) as serial_loop_fps,
    serial_loop_ms, ..., with loop_vs_serial: edge's loop FPS / the reference's.

    A pass over 300 frames lasts about a second, so one burst from another process can halve its FPS: the median
    pass is the typical one. Edge's passes and the reference's take turns, so a slow spell lands on both.
    """
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"OpenCV reads no frames from {video}")
    pre, draw = measure_steps(classifier, frame)
    edge, serial = [], []
    for i in range(max(1, repeats)):  # alternating which goes first
        for measure, out in ((measure_loop, edge), (measure_serial_loop, serial))[:: 1 if i % 2 == 0 else -1]:
            out.append(measure(classifier, video, warmup, labels))
    ours, reference = (sorted(p, key=lambda f: f["loop_ms"])[len(p) // 2] for p in (edge, serial))
    return {"preprocess_ms": round(pre, 4), "draw_ms": round(draw, 4), **ours,
            **{f"serial_{k}": reference[k] for k in SERIAL_KEYS},
            "loop_vs_serial": round(ours["loop_fps"] / reference["loop_fps"], 3)}  # fmt: skip
