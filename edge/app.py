"""The camera classifier loop: frames in, top label, score and FPS out (a window, JSON lines, a recording).

    python -m edge --model runs/NAME/export/tflite_int8.tflite                      # camera 0, in a window
    python -m edge --model MODEL --source video.mp4 --headless > predictions.jsonl

run() checks the model (manifest, sha256, tensors; or, for a model no manifest lists, its metadata or --labels,
with a warning that nothing was verified) and the source before it opens any camera, then reads and
preprocesses frames on threads of their own (edge.reader), and classifies them in run_loop() until the source ends,
--max-frames, q/Esc or Ctrl-C. With --headless, a live source's outage adds a line when it begins and one when it
ends (event_record), in order between the frame lines. With --serve, the loop also publishes each frame and record
to a live view (edge.live, edge.serve: a web page, MJPEG, Server-Sent Events, /health); with --save-uncertain, it
offers each frame to a keeper that saves the unsure ones (edge.uncertain). The device-side benchmarks
(benchmarks.device.loop and .soak) time run_loop() itself, with a reader and a recorder of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from contracts.runners.classifier import Classifier, Result
from edge.display import FpsMeter, Window, check_display, check_record_path, draw_overlay, recording
from edge.frames import Frame, SourceEvent
from edge.live import LiveFeed
from edge.reader import FrameReader
from edge.serve import LiveServer, parse_serve
from edge.sources import Capture, check_source, open_capture, parse_source, quiet_opencv, source_fps
from edge.uncertain import UncertainKeeper, check_uncertain_folder

log = logging.getLogger("edge")


@dataclass(frozen=True)
class EdgeOptions:
    """Everything one run of the classifier needs; the CLI fills it from flags."""

    model: str  # a .tflite or .onnx artifact; the manifest.json beside it lists it, or its own metadata describes it
    labels: str | None = None  # a labels file (one per line) for a model no manifest lists; None: its metadata's
    source: str = (
        "0"  # camera index, /dev/videoN, picamera, video file, image, folder of images, rtsp:// or http:// URL
    )
    backend: str | None = None  # "litert" or "onnxruntime"; None: the runtime the manifest names for the model
    threads: int | None = None  # interpreter threads; None: one per CPU core
    top_k: int = 3  # categories reported per frame
    min_score: float = 0.0  # a frame whose best score is below this is "unknown": label null in JSON
    headless: bool = False  # print one JSON line per frame on stdout instead of showing a window
    max_frames: int | None = None  # stop after classifying this many frames; None: until the source ends or quit
    record: str | None = None  # also write the annotated frames to this .mp4 or .avi (atomically)
    overwrite: bool = False  # let `record` replace an existing file (never the source); False: refuse, exit 2
    every_frame: bool | None = None  # True: every frame in order; False: newest only (no lag); None: True for files
    loop: bool = False  # start a video, image or folder over when it ends (demos, soak tests)
    print_every: int = 1  # headless: print every Nth frame's line (a service logging to the journal may want fewer)
    retry_initial_s: float = 0.5  # a live source that dropped out is reopened after this wait, doubling per try ...
    retry_max_s: float = 10.0  # ... up to this (a camera that is unplugged for hours costs nothing)
    stall_timeout_s: float = 10.0  # a stream that gives no new frame for this long is an outage: reconnected
    window_title: str = "edge classifier"  # title of the window (not headless)
    serve: str | None = None  # "[HOST:]PORT": also serve the live view (edge.serve); None: no server
    serve_token: str | None = None  # the token the live view asks for; None: a random one on a non-local address
    save_uncertain: str | None = None  # keep frames whose best score is below `below` in this folder's _unsorted/
    below: float = 0.6  # save_uncertain's threshold on the best score
    uncertain_every_s: float = 1.0  # save_uncertain keeps at most one frame per this many seconds
    uncertain_max: int | None = 1000  # ... and none once its _unsorted/ holds this many images (None: no cap)


def result_record(frame: Frame, result: Result, fps: float | None) -> dict:
    """The JSON line for one frame: what was seen, where, how sure, how fast."""
    top = result.top
    return {
        "time": round(frame.time, 3),  # Unix time when the frame was read
        "frame": frame.index,
        "source": frame.name,
        "label": top.label if top else None,  # None: below --min-score ("unknown")
        "score": round(float(result.scores.max()), 5),  # the best score, even when it is below --min-score
        "top_k": [{"label": c.label, "score": round(c.score, 5)} for c in result.categories],
        "inference_ms": round(result.inference_ms, 3),
        "fps": round(fps, 2) if fps else None,  # frames per second of the whole loop, over the last 30 frames
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def event_record(event: SourceEvent) -> dict:
    """The JSON line for an outage beginning or ending; frame lines never have an "event" key, these always do."""
    record = {
        "event": event.kind,  # "outage" or "recovered"
        "time": round(event.time, 3),  # Unix time when it was noticed (recovered: the first frame back was read)
        "source": event.source,
        "since": _iso(event.since),  # when the frames stopped (UTC)
        "reason": event.reason,  # "stalled" (no new frame within --stall-timeout) or "failed" (read or open failed)
        "last_frame": event.last_frame,  # the last frame before the outage (null: none yet)
    }
    if event.kind == "recovered":
        record["outage_s"] = round(event.outage_s, 2)  # seconds without frames
        record["tries"] = event.tries  # reopens it took
    return record


def resolve_threads(n: int | None) -> int:
    """Interpreter threads for --threads n: n itself, or one per CPU core when n is None."""
    return n if n else (os.cpu_count() or 1)


def run(options: EdgeOptions, open_source: Callable[[], Capture] | None = None, source_live: bool = True) -> int:
    """Runs the classifier until the source ends, max_frames, q/Esc or Ctrl-C; returns the exit code (0).

    Args:
        options: the settings.
        open_source: makes the capture instead of options.source (tests inject fake cameras here).
        source_live: whether open_source is a live source (reconnect when it fails) or a file (end).

    Raises:
        EdgeError, ManifestError: the model, manifest, backend, source, --record name, --serve address or
            --save-uncertain folder cannot work (or --record would replace a file without overwrite, or the source
            ever); raised before any camera is opened.
    """
    o = options
    # Everything that can be checked without a camera is checked first, cheapest first.
    spec = None if open_source is not None else parse_source(o.source)
    if o.record:  # before check_source opens a video: a refused --record name opens nothing
        source_file = spec.target if spec is not None and spec.kind in ("video", "image", "folder") else None
        check_record_path(o.record, source=source_file, overwrite=o.overwrite)
    if spec is not None:
        quiet_opencv()
        check_source(spec)
    if not o.headless:
        check_display()
    if o.save_uncertain:
        check_uncertain_folder(o.save_uncertain)
    server = _bind(o.serve, o.serve_token) if o.serve else None  # before the model loads: a taken port fails fast
    with server if server is not None else contextlib.nullcontext(), contextlib.ExitStack() as outputs:
        threads = resolve_threads(o.threads)
        classifier = Classifier.from_model(o.model, o.backend, threads, top_k=o.top_k, min_score=o.min_score,
                                           labels=o.labels)  # fmt: skip
        if classifier.unverified:
            log.warning(classifier.unverified)
        live = spec.live if spec is not None else source_live
        every_frame = (not live) if o.every_frame is None else o.every_frame
        window = None if o.headless else Window(o.window_title)
        name = str(spec) if spec is not None else "injected source"
        log.info("model %s, %d threads", classifier.describe(), threads)
        log.info("source %s (%s); settings %s", name, "every frame" if every_frame else "latest frame",
                 json.dumps({k: v for k, v in asdict(o).items() if v is not None and k != "serve_token"}))  # fmt: skip
        reader = FrameReader(
            open_source or (lambda: open_capture(spec, o.stall_timeout_s)), name=name, live=live,
            every_frame=every_frame, loop=o.loop, retry_initial_s=o.retry_initial_s, retry_max_s=o.retry_max_s,
            prepare=classifier.preprocess, stall_timeout_s=o.stall_timeout_s if live else None,
        )  # fmt: skip
        still = spec is not None and spec.kind in ("image", "folder")  # a window waits for a key on each picture
        feed = outputs.enter_context(_live_view(server, classifier, name)) if server is not None else None
        keeper = outputs.enter_context(_uncertain(o, classifier)) if o.save_uncertain else None
        try:
            reader.start()
            # A recording plays at the video's own rate, pictures as a slideshow, live sources at the measured rate.
            fps = 1.0 if still else (None if live else source_fps(reader.capture))
            stop = threading.Event()
            with signals_set(stop), recording(o.record, fps) if o.record else contextlib.nullcontext() as rec:
                n = run_loop(o, classifier, reader, window, rec, still, stop, feed, keeper)
        finally:
            reader.stop()
            if window is not None:
                window.close()
    log.info("%d frames classified from %s%s%s", n, name,
             f" ({reader.frames_dropped} skipped to stay current)" if reader.frames_dropped else "",
             f", {reader.outages} outage{'s' if reader.outages > 1 else ''}" if reader.outages else "")  # fmt: skip
    return 0


def _bind(serve: str, token: str | None) -> LiveServer:
    """--serve: the live view's server, bound (EdgeError: a bad address, a port in use, not this machine's)."""
    return LiveServer(LiveFeed(), *parse_serve(serve), token=token)


@contextlib.contextmanager
def _live_view(server: LiveServer, classifier: Classifier, source: str):
    """--serve: tells the bound server what runs, starts it and the feed's encoder; yields the feed for the loop."""
    entry, feed = classifier.entry, server.feed
    feed.info.update(mode="classify", model=entry.file, sha256=entry.sha256, source=source)
    server.page.update(mode="classify", labels=classifier.labels, model=entry.file, title="edge classifier")
    feed.start()
    server.start()
    local = "" if server.token else " (this machine only: --serve 0.0.0.0:PORT for the LAN)"
    log.info("live view: %s%s", server.url, local)
    try:
        yield feed
    finally:
        server.stop()
        feed.stop()


@contextlib.contextmanager
def _uncertain(o: EdgeOptions, classifier: Classifier):
    """--save-uncertain: the keeper the loop offers each frame to; its summary line when the run ends."""
    keeper = UncertainKeeper(o.save_uncertain, o.below, o.uncertain_every_s, o.uncertain_max, classifier.labels,
                             model=classifier.entry.file, top_k=o.top_k)  # fmt: skip
    try:
        yield keeper
    finally:
        keeper.close()


@contextlib.contextmanager
def signals_set(stop: threading.Event):
    """While the loop runs, Ctrl-C and SIGTERM only set `stop`, which the loop checks between frames.

    Raising KeyboardInterrupt from the handler could land between a lock's acquire and its with-block inside the
    frame queues (bpo-29988), leaving the lock held: stopping the reader then waited forever (1 run in about 30
    of test_ctrl_c_and_sigterm_exit_0 under load). The loop polls the reader every 0.1 s, so it still stops at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_loop(
    o: EdgeOptions,
    classifier: Classifier,
    reader: FrameReader,
    window: Window | None = None,
    rec=None,
    still=False,
    stop: threading.Event | None = None,
    feed=None,
    keeper=None,
) -> int:
    """The camera loop: takes frames from the reader, classifies each, prints, draws, records and shows it, until
    the source is done, o.max_frames, q/Esc or Ctrl-C (which ends it normally: the recording is kept).

    Args:
        o: the settings; it reads max_frames, headless and print_every.
        classifier: a Classifier, or anything with its classify(image, input) -> Result.
        reader: a started FrameReader, or anything with its get(timeout), pop_events() and done.
        window: shows each drawn frame (None: no window).
        rec: anything with write(canvas), handed each drawn frame (a recording; None: none).
        still: the frames are pictures: the window waits for a key on each.
        stop: ends the loop, as Ctrl-C does, when set (run() sets it from SIGINT and SIGTERM).
        feed: anything with publish(image, record, result, fps, drawn) and publish_event(record): the live view
            (edge.live.LiveFeed). It is handed each frame after drawing (drawn: the image has the overlay) and must
            return at once: it encodes on a thread of its own, and only while someone watches.
        keeper: anything with offer(frame, result): --save-uncertain (edge.uncertain.UncertainKeeper). It is offered
            each frame before drawing, and copies the few it keeps.

    Returns:
        how many frames it classified.
    """
    meter, n = FpsMeter(), 0
    if window is not None and still:
        log.info("press any key for the next picture, q or Esc to quit")
    try:
        while o.max_frames is None or n < o.max_frames:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            frame = reader.get(timeout=0.1)
            for event in reader.pop_events():  # each before the frame it came with: the order things happened
                if o.headless:
                    _print_line(event_record(event))
                if feed is not None:
                    feed.publish_event(event_record(event))
            if frame is None:
                if reader.done:
                    break
                if window is not None and window.poll(1):  # keep the window alive during an outage
                    break
                continue
            result = classifier.classify(frame.image, frame.input)
            fps = meter.tick()
            n += 1
            if keeper is not None:
                keeper.offer(frame, result)
            printed = o.headless and (n - 1) % o.print_every == 0
            record = result_record(frame, result, fps) if printed or feed is not None else None
            if printed:
                _print_line(record)
            canvas = None
            if rec is not None or window is not None:
                canvas = draw_overlay(frame.image, result, fps)  # in place: the loop owns the frame now
                if rec is not None:
                    rec.write(canvas)
            if feed is not None:
                feed.publish(frame.image if canvas is None else canvas, record, result, fps, canvas is not None)
            if window is not None and window.show(canvas, 0 if still else 1):
                break
    except KeyboardInterrupt:
        log.info("interrupted, stopping")
    return n


def _print_line(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()  # a line as it happens: consumers (and journald) see an outage while it lasts
