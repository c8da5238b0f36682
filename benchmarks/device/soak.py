"""Soak benchmark: edge's camera loop over a looping 640x480 video for tens of thousands of frames, with resident
memory and FPS sampled as it goes, so a leak or a slowdown that only shows after hours on the Pi shows here.

    python -m benchmarks.device.soak --model runs/latest/export/tflite_int8_qat.tflite --frames 20000 \\
        --out soak.json --plot soak.png

The loop is edge.app.run_loop itself, driven as benchmarks.device.loop drives it: FrameReader(loop=True) decodes a
generated video on one thread and preprocesses it on another, and reopens the video each time it ends (as a demo
left running all day does); the main thread runs the model and draws the overlay. After `warmup` frames, resident
memory (VmRSS of /proc/self/status: the Pi has no psutil) is read every `rss_every` frames and each `interval`
frames make one row: FPS over the interval and the median, min and max of its RSS readings. RSS moves by a few
MiB from one moment to the next (640x480 frames in flight on the reader's threads come and go), so one reading
at each end would judge that noise; the median of an interval does not. Memory is "flat" when the last
interval's RSS is less than `max_growth_pct` above the first's. Exit 0 when flat, 1 when it grew or the loop
stopped early, 2 for bad flags or a model edge refuses.

--plot draws with benchmarks.plots.plot_soak, host side (matplotlib): it is imported only when asked for, and on
the Pi, which has neither, --plot is refused before the soak with one line (write --out and plot on the host).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.device.loop import synthetic_frames, write_video
from benchmarks.device.machine import default_device_name, device_meta
from benchmarks.device.sampling import Sampler, summarize
from benchmarks.device.settings import BenchError
from contracts.atomic import why_unwritable, write_json


@dataclass(frozen=True)
class SoakSettings:
    """Resolved settings of one soak run, saved in its JSON report. Field comments are the documentation."""

    model: str  # a .tflite or .onnx artifact with the manifest.json written beside it (edge refuses others)
    frames: int = 20_000  # frames classified after warm-up: about 11 minutes of a 30 fps camera
    interval: int = 1_000  # frames per row: FPS over them, and the median of their RSS readings
    rss_every: int = 10  # frames between RSS readings (~20 us each: 100 per interval cost nothing measurable)
    warmup: int = 1_000  # frames before the first interval: RSS climbs by ~4% over the first ~1,000 frames while
    #   the allocator settles to the loop's pattern (measured here on x86), which is start-up, not a leak
    threads: int | None = None  # interpreter threads; None: one per CPU core, as `python -m edge` runs
    video_frames: int = 300  # length of the generated video (10 s at 30 fps): the capture is reopened after
    #   this many frames, so a leak per reopen shows as well as one per frame
    frame_width: int = 640  # what the Pi camera is asked for (edge.sources.PICAMERA_SIZE)
    frame_height: int = 480
    video_codec: str = "mp4v"  # every OpenCV build writes and reads it; its decoding stands in for capture
    max_growth_pct: float = 5.0  # verdict "flat" when the last interval's RSS is under this % above the first's
    out: str = ""  # JSON report {settings, meta, summary, rows}; "" = none
    plot: str = ""  # PNG of RSS and FPS against frames; "" = none


def check_soak_settings(s: SoakSettings) -> None:
    """Raises BenchError for a value out of range or an output that cannot be written, naming the flag."""
    threads = 1 if s.threads is None else s.threads
    for flag, value, low in (("--frames", s.frames, 1), ("--interval", s.interval, 1), ("--warmup", s.warmup, 1),
                             ("--rss-every", s.rss_every, 1), ("--video-frames", s.video_frames, 2),
                             ("--threads", threads, 1)):  # fmt: skip
        if value < low:
            raise BenchError(f"{flag} {value} is below {low}")
    if s.max_growth_pct <= 0:
        raise BenchError(f"--max-growth {s.max_growth_pct} is not a positive percentage")
    for flag, path in (("--out", s.out), ("--plot", s.plot)):  # found before the soak, not after it
        why = why_unwritable(path) if path else None
        if why:
            raise BenchError(f"{flag} {path} {why}: pass a file path in a folder you can write")
    if s.plot:
        _plotter()


def _plotter():
    """benchmarks.plots.plot_soak, with matplotlib imported: both are host side (a Pi bundle ships neither).

    Raises:
        BenchError: either is missing; the message says what to do instead.
    """
    try:
        from benchmarks.plots import plot_soak, pyplot

        pyplot()
    except ImportError as e:
        raise BenchError(f"--plot needs {e.name or 'matplotlib'} (host side): pass --out soak.json here and plot it "
                         "on the host, or leave --plot out") from None  # fmt: skip
    return plot_soak


def run_soak(s: SoakSettings, log=print) -> dict:
    """Runs edge's camera loop for s.warmup + s.frames frames over a looping generated video, sampling as it goes.

    Returns:
        {settings, meta, summary, rows}: one row per interval (the first starts as warm-up ends); summary is
        summarize()'s figures plus model, format, device, threads, frames (classified after warm-up), total_s and
        error (None, or why the loop stopped before s.frames: a failure is a report with an error, not a crash).
        The report is written to s.out and plotted to s.plot when they are set.

    Raises:
        BenchError: a setting out of range or an --out/--plot that cannot be written.
        EdgeError, ManifestError: a model edge would refuse (missing, no manifest, checksum mismatch).
    """
    check_soak_settings(s)
    from contracts.runners.classifier import Classifier
    from edge.app import EdgeOptions, resolve_threads, run_loop  # the loop itself, not a copy of it
    from edge.reader import FrameReader
    from edge.sources import open_capture, parse_source, quiet_opencv

    started = time.perf_counter()
    threads = resolve_threads(s.threads)
    clf = Classifier.from_model(s.model, None, threads)
    device = default_device_name()
    opened, error = [0], None
    sampler = Sampler(s.warmup, s.interval, s.rss_every, s.frames, opened, log)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        try:
            frames = synthetic_frames(s.video_frames, (s.frame_width, s.frame_height))
            video = write_video(frames, Path(tmp) / "soak.mp4", s.video_codec)
        except RuntimeError as e:  # a codec this OpenCV cannot write: the message names --video-codec MJPG
            raise BenchError(str(e)) from None
        spec = parse_source(str(video))
        quiet_opencv()

        def open_video():
            opened[0] += 1
            return open_capture(spec)

        options = EdgeOptions(model=s.model, source=str(video), headless=False, max_frames=s.warmup + s.frames,
                              every_frame=True, loop=True)  # fmt: skip
        reader = FrameReader(open_video, name=str(spec), live=False, every_frame=True, loop=True,
                             prepare=clf.preprocess)  # fmt: skip
        log(f"soak: {clf.describe()}, {threads} threads, {s.warmup} + {s.frames} frames of a looping "
            f"{s.video_frames}-frame {s.frame_width}x{s.frame_height} video on {device}")  # fmt: skip
        try:
            reader.start()
            n = run_loop(options, clf, reader, rec=sampler)  # Ctrl-C ends it early: a partial report
            if n < s.warmup + s.frames:
                error = f"the loop stopped after {n} of {s.warmup + s.frames} frames (interrupted, or the video failed)"
        except Exception as e:  # a failure is a report with an error, never a crash
            error = f"the loop failed after {sampler.n} frames: {type(e).__name__}: {e}"
        finally:
            reader.stop()
            clf.backend.close()
    summary = {
        "model": str(s.model), "format": clf.entry.format, "device": device, "threads": threads,
        "frames": max(0, sampler.n - s.warmup), "rss_source": sampler.source,
        "rss_after_warmup_mib": None if sampler.rss_after_warmup is None else round(sampler.rss_after_warmup, 2),
        **summarize(sampler.rows, s.max_growth_pct), "total_s": round(time.perf_counter() - started, 1),
        "error": error,
    }  # fmt: skip
    report = {"settings": dataclasses.asdict(s), "meta": device_meta(device), "summary": summary,
              "rows": sampler.rows}  # fmt: skip
    if s.out:
        write_json(s.out, report)
    if s.plot and sampler.rows:
        _plotter()(report, s.plot)
    return report


def build_parser() -> argparse.ArgumentParser:
    d = SoakSettings(model="")
    p = argparse.ArgumentParser(prog="python -m benchmarks.device.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .tflite or .onnx artifact with its manifest.json beside it")
    p.add_argument("--frames", type=int, default=d.frames, help=f"frames after warm-up (default {d.frames})")
    p.add_argument("--interval", type=int, default=d.interval, help=f"frames per row (default {d.interval})")
    p.add_argument("--rss-every", type=int, default=d.rss_every,
                   help=f"frames between RSS readings (default {d.rss_every})")  # fmt: skip
    p.add_argument(
        "--warmup", type=int, default=d.warmup, help=f"frames before the first interval (default {d.warmup})"
    )
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: one per CPU core)")
    p.add_argument("--video-frames", type=int, default=d.video_frames,
                   help=f"length of the looping video (default {d.video_frames})")  # fmt: skip
    p.add_argument(
        "--video-codec",
        default=d.video_codec,
        help=f"codec of the generated video, mp4v or MJPG (default {d.video_codec})",
    )
    p.add_argument("--max-growth", type=float, default=d.max_growth_pct,
                   help=f"RSS growth in percent that is no longer flat (default {d.max_growth_pct:g})")  # fmt: skip
    p.add_argument("--out", default="", help="write the JSON report {settings, meta, summary, rows} here")
    p.add_argument("--plot", default="", help="write a PNG of RSS and FPS against frames here (host side: matplotlib)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the soak and prints its summary; exit 0 when memory stayed flat, 1 when not or the loop stopped early,
    2 for bad flags or a model edge refuses."""
    from contracts.errors import EdgeError
    from contracts.manifest import ManifestError

    a = build_parser().parse_args(argv)
    s = SoakSettings(model=a.model, frames=a.frames, interval=a.interval, warmup=a.warmup, rss_every=a.rss_every,
                     threads=a.threads, video_frames=a.video_frames, video_codec=a.video_codec,
                     max_growth_pct=a.max_growth, out=a.out, plot=a.plot)  # fmt: skip
    try:
        report = run_soak(s, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (BenchError, EdgeError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = report["summary"]
    if r["verdict"] is not None:
        print(f"{r['frames']} frames in {r['wall_s']:.0f} s: RSS {r['rss_start_mib']:.1f} -> "
              f"{r['rss_end_mib']:.1f} MiB ({r['rss_growth_pct']:+.2f}%, {r['verdict']}); "
              f"FPS first {r['fps_first']:.1f}, last {r['fps_last']:.1f}, median {r['fps_median']:.1f}")  # fmt: skip
    for path in (s.out, s.plot):
        if path:
            print(f"wrote {path}")
    if r["error"]:
        print(f"error: {r['error']}", file=sys.stderr)
    return 0 if r["verdict"] == "flat" and not r["error"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
