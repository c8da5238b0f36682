"""Collect photos for training with the camera the model will run on, into the class folders train reads.

    python -m edge.collect --source 0 --out photos/ --labels cat,dog          # a window: key 1 saves a cat, 2 a dog
    python -m edge.collect --source picamera --out photos/ --headless --label cat --every 2 --count 50
    python -m edge.collect --source 0 --out photos/ --labels cat,dog --headless --serve 0.0.0.0:8080   # a button
    python -m train --data photos/                                             # photos/cat/, photos/dog/ as they are

Every source edge takes works (camera index, /dev/videoN, picamera, video file, image folder, rtsp:// URL). Each
photo is written atomically under a name that sorts by time and never replaces a file (edge.saver.save_image). A
save that fails once running (disk full, folder removed) is a logged warning and the collect goes on. With --serve,
the live view (edge.serve) shows the camera with a button per class and the counts (POST /collect/LABEL): a Pi
without a screen is taught from a phone. The loops and the Collector they share (the page calls it too) are in
edge.collector.

Exit codes: 0 when done (count reached, source ended, q/Esc, Ctrl-C, SIGTERM); 2 when --out, a label, the source or
the display cannot be used (one line on stderr naming it and the fix); 1 on a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from contracts.atomic import why_unwritable
from contracts.console import one_line
from contracts.errors import EdgeError
from edge.app import signals_set
from edge.cli import add_serve_flags, configure_logging, positive_int, seconds, seconds_or_zero
from edge.collector import Collector, KeyWindow, collect_headless, collect_window
from edge.display import check_display
from edge.live import LiveFeed
from edge.reader import FrameReader
from edge.saver import label_problem
from edge.serve import LiveServer, parse_serve
from edge.sources import check_source, open_capture, parse_source, quiet_opencv, source_fps

__all__ = ["Collector", "CollectOptions", "main", "run_collect"]  # Collector: the hook edge.serve's page calls
log = logging.getLogger("edge")
MAX_KEYS = 9  # labels 1..9 in the window


@dataclass(frozen=True)
class CollectOptions:
    """Everything one collect needs; main() fills it from flags."""

    out: str  # the dataset folder: one sub-folder per class, as `python -m train --data OUT` reads it
    labels: tuple[str, ...] = ()  # the classes, in key order (1..9 in the window); empty: OUT's class folders
    source: str = "0"  # anything edge's --source takes: camera index, /dev/videoN, picamera, video, folder, URL
    headless: bool = False  # no window: save `label` every `every_s` seconds, a JSON line per file on stdout
    label: str | None = None  # headless: the class every photo goes to (a new one is fine)
    every_s: float = 1.0  # headless: seconds between photos (of video time for a video, a picture per second for
    # a folder of images); 0: every frame
    count: int | None = None  # headless: stop after this many photos; None: until the source ends or Ctrl-C
    stall_timeout_s: float = 10.0  # a stream or camera giving no frame this long is an outage: reconnected
    serve: str | None = None  # [HOST:]PORT: also serve the live view with a button per class (edge.serve)
    serve_token: str | None = None  # the token it asks for; None: a random one on a non-loopback address
    window_title: str = "edge collect"  # title of the window


def resolve_labels(o: CollectOptions) -> list[str]:
    """The classes this collect saves into, in key order.

    Raises:
        EdgeError: a label that cannot be a class folder, no labels, --label without --headless (or the reverse),
            more labels than keys.
    """
    labels = list(dict.fromkeys(o.labels))  # once each, in order
    out = Path(o.out)
    if not labels and out.is_dir():
        labels = sorted(p.name for p in out.iterdir() if p.is_dir() and not label_problem(p.name))
    if o.headless and not o.label and not o.serve:
        raise EdgeError("--headless saves into one class: pass --label NAME (a new class is fine), or --serve PORT")
    if o.headless and o.label:
        labels += [] if o.label in labels else [o.label]
    elif o.label:
        raise EdgeError("--label is for --headless; in the window, keys 1-9 save into --labels in their order")
    if not labels:
        raise EdgeError(f"no classes: pass --labels cat,dog ({o.out} has no class folders yet)")
    for label in labels:
        if why := label_problem(label):
            raise EdgeError(f"label {label!r} {why}: name the class with letters, digits, - or spaces")
    if not o.headless and len(labels) > MAX_KEYS:
        raise EdgeError(f"{len(labels)} labels, but the window has keys 1-{MAX_KEYS}: pass at most {MAX_KEYS}")
    return labels


def check_out(out: str | os.PathLike) -> None:
    """Raises EdgeError, before any camera opens, if the dataset folder cannot be made or written."""
    if why := why_unwritable(out, "folder"):
        raise EdgeError(f"--out {out} {why}: pass a folder you can write (it is made if missing)")


def run_collect(o: CollectOptions, open_source=None, source_live: bool = True, stdout=None) -> int:
    """Collects until the count, the source's end, q/Esc, Ctrl-C or SIGTERM; returns the exit code (0).

    Args:
        o: the settings.
        open_source: makes the capture instead of o.source (tests inject fake cameras here).
        source_live: whether open_source is a live source (reconnected) or a file (ends).
        stdout: where headless JSON lines go (default sys.stdout).

    Raises:
        EdgeError: --out, a label, the source, the display or the --serve address cannot be used; raised before
            any camera opens.
    """
    labels = resolve_labels(o)
    check_out(o.out)
    serve_at = parse_serve(o.serve) if o.serve else None
    spec = None if open_source is not None else parse_source(o.source)
    if spec is not None:
        quiet_opencv()
        check_source(spec)
    if not o.headless:
        _check_window()
    try:
        collector = Collector(o.out, labels)
    except OSError as e:  # a class folder's name is taken by a file, or the disk refuses
        raise EdgeError(f"--out {o.out}: cannot make its class folders ({e}): pass a folder you can write") from None
    live = spec.live if spec is not None else source_live
    still = spec is not None and spec.kind in ("image", "folder")
    name = str(spec) if spec is not None else "injected source"
    server = None
    if serve_at:  # bound before the camera opens: a port in use is one line
        server = LiveServer(LiveFeed(info={"mode": "collect", "source": name}), *serve_at, token=o.serve_token,
                            page={"title": "edge collect"}, actions=collector)  # fmt: skip
    reader = FrameReader(
        open_source or (lambda: open_capture(spec, o.stall_timeout_s)), name=name, live=live, every_frame=not live,
        stall_timeout_s=o.stall_timeout_s if live else None,
    )  # fmt: skip
    log.info("collecting from %s into %s (%s)", name, o.out, _counts(collector))
    stop, window = threading.Event(), None
    try:
        with _live_view(server) as feed, signals_set(stop):
            window = None if o.headless else KeyWindow(o.window_title)
            reader.start()
            if window is None:
                # Files step by their own clock (a video's frame rate, a picture a second), live sources by the wall's.
                fps = 1.0 if still else (None if live else source_fps(reader.capture))
                every = o.every_s if o.label else None  # --serve alone: only the page's buttons save
                collect_headless(collector, reader, stop, o.label, every, o.count, fps, stdout or sys.stdout, feed)
            else:
                collect_window(collector, reader, window, still, stop, feed)
    finally:
        reader.stop()
        if window is not None:
            window.close()
    n = collector.saved
    log.info("saved %d photo%s into %s (now %s)", n, "" if n == 1 else "s", o.out, _counts(collector))
    return 0


@contextlib.contextmanager
def _live_view(server: LiveServer | None):
    """--serve: starts the bound server and its feed's encoder; yields the feed the loops publish to (or None)."""
    if server is None:
        yield None
        return
    server.feed.start()
    server.start()
    local = "" if server.token else " (this machine only: --serve 0.0.0.0:PORT for the LAN)"
    log.info("live view: %s%s", server.url, local)
    try:
        yield server.feed
    finally:
        server.stop()
        server.feed.stop()


def _check_window() -> None:
    """edge.display.check_display, with the fix that fits collecting (it suggests --record, which is edge's)."""
    try:
        check_display()
    except EdgeError as e:
        why = str(e).partition(":")[0]  # "no display to show a window on (DISPLAY is not set)", or the GUI-less build
        raise EdgeError(f"{why}: pass --headless --label NAME to save without a window, or run it on a desktop "
                        "with OpenCV's GUI build (a bundle's ./install.sh --gui)") from None  # fmt: skip


def _counts(collector: Collector) -> str:
    return ", ".join(f"{label} {n}" for label, n in collector.counts().items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.collect",
        description="Save camera frames as training photos, one folder per class, as `python -m train --data OUT` "
        "reads them: in a window (keys 1-9 save into --labels), or headless (--label NAME every --every seconds).",
        epilog="Photos are JPEG, written atomically, named by time and frame (never replacing a file). Logs go to "
        "stderr; headless prints one JSON line per photo on stdout.",
    )
    p.add_argument("--out", required=True, help="the dataset folder (made if missing); one sub-folder per class")
    p.add_argument(
        "--labels",
        default="",
        help="the classes, comma-separated, in key order (cat,dog: key 1 saves a cat); default: the class folders "
        "already in --out",
    )
    p.add_argument(
        "--source",
        default="0",
        help="camera index (default 0), /dev/videoN, picamera, a video file, an image, a folder of images, or an "
        "rtsp:// or http:// URL",
    )
    p.add_argument("--headless", action="store_true", help="no window: save --label every --every seconds")
    p.add_argument("--label", default=None, help="headless: the class to save into (a new one is fine)")
    p.add_argument(
        "--every",
        type=seconds_or_zero,
        default=1.0,
        metavar="SECONDS",
        help="headless: seconds between photos (a video's own time; a folder: one picture a second); 0: every frame "
        "(default 1)",
    )
    p.add_argument("--count", type=positive_int, default=None, help="headless: stop after this many photos")
    add_serve_flags(
        p,
        "also serve the live view with a button per class and the counts (a port alone: this machine only; "
        "with a host, e.g. 0.0.0.0:8080, every request needs the token printed at start); with --headless and no "
        "--label only the buttons save",
    )
    p.add_argument(
        "--stall-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="a stream or camera that gives no frame this long is an outage: reconnected (default 10)",
    )
    return p


def options_from_args(a: argparse.Namespace) -> CollectOptions:
    labels = tuple(label.strip() for label in a.labels.split(",") if label.strip())
    return CollectOptions(out=a.out, labels=labels, source=a.source, headless=a.headless, label=a.label,
                          every_s=a.every, count=a.count, stall_timeout_s=a.stall_timeout, serve=a.serve,
                          serve_token=a.serve_token)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parses flags and collects; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return run_collect(options_from_args(args))
    except EdgeError as e:
        print(f"edge.collect: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the loop: nothing is open yet
        return 0
    except BrokenPipeError:  # `python -m edge.collect --headless | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
