"""Command line of the camera classifier.

    python -m edge --model runs/NAME/export/tflite_int8.tflite                    # camera 0, in a window
    python -m edge --model MODEL --source picamera --headless                     # JSON lines on stdout
    python -m edge --model MODEL --source clip.mp4 --record annotated.mp4 --headless
    python -m edge --model mobilenet_quant.tflite --labels labels.txt --headless   # a model without a manifest
    python -m edge --model MODEL --source 0 --headless --serve 8080               # live view: http://127.0.0.1:8080/
    python -m edge --model MODEL --headless --save-uncertain photos --below 0.6   # keep frames it is unsure of

Exit codes: 0 when the source ends, on q/Esc, --max-frames, Ctrl-C or SIGTERM; 2 when the model, its manifest
(or its metadata, or the --labels file), the backend, the source, the --record file, the --serve address or the
--save-uncertain folder cannot be used (one line on stderr naming the file and the fix); 1 on a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from contracts.console import one_line
from contracts.errors import EdgeError
from contracts.manifest import ManifestError
from contracts.runners import BACKENDS
from edge.app import EdgeOptions, run

log = logging.getLogger("edge")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (edge.collect's flags use it too)."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return v


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    v = float(text)
    if not 0.0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return v


def seconds_or_zero(text: str) -> float:
    """argparse type: a finite number of seconds >= 0 (0: no wait)."""
    v = float(text)
    if not 0.0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return v


def add_serve_flags(p: argparse.ArgumentParser, serve_help: str) -> None:
    """--serve [HOST:]PORT and --serve-token, as edge and edge.collect both take them."""
    p.add_argument("--serve", default=None, metavar="[HOST:]PORT", help=serve_help)
    p.add_argument(
        "--serve-token",
        default=os.environ.get("EDGE_SERVE_TOKEN") or None,
        metavar="TOKEN",
        help="the token --serve asks for (default: $EDGE_SERVE_TOKEN, else a random one on a non-local address)",
    )


def _score(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a score between 0 and 1")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge",
        description="Classify a camera stream (or video, images, URL) with an exported model; show the top label, "
        "its score and the FPS on the picture, or print JSON lines.",
        epilog="Everything about the model (input size, dtype, quantization, labels, preprocessing) comes from the "
        "manifest.json beside it; its sha256 is checked before the camera is opened. A model no manifest lists runs "
        "on its own metadata (TFLite metadata, ONNX metadata_props) or --labels, unverified (a warning says so). "
        "Logs go to stderr.",
    )
    p.add_argument("--model", required=True, help="a .tflite or .onnx artifact written by export (or inside a bundle)")
    p.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="for a model no manifest lists: its labels, one per line in output order (default: the labels in the "
        "model's metadata); normalization still comes from the metadata (none: raw 0-255 pixels)",
    )
    p.add_argument(
        "--source",
        default="0",
        help="camera index (default 0), /dev/videoN, picamera (Raspberry Pi camera via picamera2), a video file, "
        "an image, a folder of images (each once, sorted by name), or an rtsp:// or http:// URL",
    )
    p.add_argument(
        "--backend",
        default=None,
        metavar="{" + ",".join(BACKENDS) + "}",
        help="inference runtime; default: the one the manifest names for the model (litert for .tflite)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="interpreter threads (default: one per core)")
    p.add_argument("--top-k", type=positive_int, default=3, help="categories reported per frame (default 3)")
    p.add_argument(
        "--min-score",
        type=_score,
        default=0.0,
        help="a frame whose best score is below this is unknown: the window shows 'unknown (score)', the JSON line "
        "has label null (its score field still gives the best score) and top_k lists only categories scoring at "
        "least this (default 0: always a label)",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no window: one JSON line per frame on stdout (time, frame, source, label, score, top_k, inference_ms, "
        'fps); a live source\'s outage adds a line when it begins ({"event": "outage", "since": ...}) and one '
        'when it ends ({"event": "recovered", "outage_s": ...})',
    )
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after classifying this many frames")
    p.add_argument(
        "--record",
        default=None,
        metavar="OUT.mp4",
        help="also write the annotated video (.mp4 or .avi), atomically: it appears whole when the run ends. Its "
        "folder must exist and be writable; an existing file is replaced only with --overwrite, the --source never",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="let --record replace an existing file (never the --source itself)"
    )
    p.add_argument(
        "--every-frame",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="classify every frame in order (default for files and images) or, with --no-every-frame, only the "
        "newest so a slow model never lags (default for cameras and streams)",
    )
    p.add_argument("--loop", action="store_true", help="start a video, image or folder over when it ends")
    p.add_argument(
        "--stall-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="an rtsp:// or http:// stream (or a V4L2 camera, in whole seconds) that gives no new frame for this "
        "long is an outage, like one that fails: reported once (with --headless, an outage JSON line, and a "
        "recovered line when frames are back) and reconnected with capped backoff; opening a stream may take up to "
        "max(this, 10 s) (default 10)",
    )
    p.add_argument(
        "--print-every", type=positive_int, default=1, help="headless: print one line every N frames (default 1)"
    )
    add_serve_flags(
        p,
        "also serve a live view: a page with the annotated video, label, score, FPS and top-k, plus "
        "/video.mjpg, /events (the --headless records as Server-Sent Events), /latest.json and /health. A port "
        "alone listens on 127.0.0.1; with a host (0.0.0.0: every address) every request needs the token printed "
        "at start",
    )
    p.add_argument(
        "--save-uncertain",
        default=None,
        metavar="DIR",
        help="keep frames whose best score is below --below in DIR/_unsorted/ (at most one per "
        "--uncertain-every seconds), each with its predictions as JSON beside it; DIR also gets a folder per label "
        "to sort them into, and `python -m train --data DIR` trains on the sorted ones",
    )
    p.add_argument("--below", type=_score, default=0.6, help="--save-uncertain threshold on the best score (0.6)")
    p.add_argument(
        "--uncertain-every",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="--save-uncertain keeps at most one frame per this many seconds (default 1)",
    )
    p.add_argument(
        "--uncertain-max",
        type=positive_int,
        default=1000,
        metavar="N",
        help="--save-uncertain stops keeping frames once DIR/_unsorted holds N images, so a service that runs for "
        "weeks never fills the disk; sort them out to make room (default 1000)",
    )
    return p


def options_from_args(a: argparse.Namespace) -> EdgeOptions:
    return EdgeOptions(
        model=a.model, labels=a.labels, source=a.source, backend=a.backend, threads=a.threads, top_k=a.top_k,
        min_score=a.min_score, headless=a.headless, max_frames=a.max_frames, record=a.record, overwrite=a.overwrite,
        every_frame=a.every_frame, loop=a.loop, print_every=a.print_every, stall_timeout_s=a.stall_timeout,
        serve=a.serve, serve_token=a.serve_token, save_uncertain=a.save_uncertain, below=a.below,
        uncertain_every_s=a.uncertain_every, uncertain_max=a.uncertain_max,
    )  # fmt: skip


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever sys.stderr is now (tests swap it), so stdout stays pure JSON."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging() -> None:
    """Sends the "edge" logger's messages (progress, outages) to stderr, once, so stdout stays pure JSON."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s edge: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _stop_on_sigterm():
    """systemd stops services with SIGTERM: end like Ctrl-C, releasing the camera and keeping the recording.

    Returns:
        the previous handler, to put back (None when not on the main thread, where signals cannot be caught).
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """Parses flags and runs the classifier; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    previous = _stop_on_sigterm()
    try:
        return run(options_from_args(args))
    except (EdgeError, ManifestError) as e:
        print(f"edge: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing is open yet
        return 0
    except BrokenPipeError:  # `python -m edge --headless | head`: the reader went away
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
