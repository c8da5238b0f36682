"""Command line of the camera classifier.

    python -m edge --model runs/NAME/export/tflite_int8.tflite                    # camera 0, in a window
    python -m edge --model MODEL --source picamera --headless                     # JSON lines on stdout
    python -m edge --model MODEL --source clip.mp4 --record annotated.mp4 --headless
    python -m edge --model mobilenet_quant.tflite --labels labels.txt --headless   # a model without a manifest

Exit codes: 0 when the source ends, on q/Esc, --max-frames, Ctrl-C or SIGTERM; 2 when the model, its manifest
(or its metadata, or the --labels file), the backend, the source or the --record file cannot be used (one line on
stderr naming the file and the fix); 1 on a crash.
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


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return v


def _seconds(text: str) -> float:
    v = float(text)
    if not 0.0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return v


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
    p.add_argument("--threads", type=_positive_int, default=None, help="interpreter threads (default: one per core)")
    p.add_argument("--top-k", type=_positive_int, default=3, help="categories reported per frame (default 3)")
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
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after classifying this many frames")
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
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="an rtsp:// or http:// stream (or a V4L2 camera, in whole seconds) that gives no new frame for this "
        "long is an outage, like one that fails: reported once (with --headless, an outage JSON line, and a "
        "recovered line when frames are back) and reconnected with capped backoff; opening a stream may take up to "
        "max(this, 10 s) (default 10)",
    )
    p.add_argument(
        "--print-every", type=_positive_int, default=1, help="headless: print one line every N frames (default 1)"
    )
    return p


def options_from_args(a: argparse.Namespace) -> EdgeOptions:
    return EdgeOptions(
        model=a.model, labels=a.labels, source=a.source, backend=a.backend, threads=a.threads, top_k=a.top_k,
        min_score=a.min_score, headless=a.headless, max_frames=a.max_frames, record=a.record, overwrite=a.overwrite,
        every_frame=a.every_frame, loop=a.loop, print_every=a.print_every, stall_timeout_s=a.stall_timeout,
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
