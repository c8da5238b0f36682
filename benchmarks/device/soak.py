"""Soak benchmark: edge's camera loop over a looping 640x480 video for tens of thousands of frames, with resident
memory and FPS sampled as it goes, so a leak or a slowdown that only shows after hours on the Pi shows here.

    python -m benchmarks.device.soak --model runs/latest/export/tflite_int8_qat.tflite --frames 20000 \\
        --out soak.json --plot soak.png

The loop is edge.app's own, driven as benchmarks.device.loop drives it: FrameReader(loop=True) decodes a generated
video on one thread and preprocesses it on another, and reopens the video each time it ends (as a demo left
running all day does); the main thread runs the model and draws the overlay. After `warmup` frames, resident
memory (VmRSS of /proc/self/status: the Pi has no psutil) is read every `rss_every` frames and each `interval`
frames make one row: FPS over the interval and the median, min and max of its RSS readings. RSS moves by a few
MiB from one moment to the next (640x480 frames in flight on the reader's threads come and go), so one reading
at each end would judge that noise; the median of an interval does not. Memory is "flat" when the last
interval's RSS is less than `max_growth_pct` above the first's. Exit 0 when flat, 1 when it grew or the loop
stopped early, 2 for bad flags or a model edge refuses. matplotlib is imported only for --plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.device.latency import default_device_name, device_meta
from benchmarks.device.loop import synthetic_frames, write_video
from benchmarks.device.settings import BenchError


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
    """Raises BenchError for a value out of range, naming the flag."""
    threads = 1 if s.threads is None else s.threads
    for flag, value, low in (("--frames", s.frames, 1), ("--interval", s.interval, 1), ("--warmup", s.warmup, 1),
                             ("--rss-every", s.rss_every, 1), ("--video-frames", s.video_frames, 2),
                             ("--threads", threads, 1)):  # fmt: skip
        if value < low:
            raise BenchError(f"{flag} {value} is below {low}")
    if s.max_growth_pct <= 0:
        raise BenchError(f"--max-growth {s.max_growth_pct} is not a positive percentage")
    for flag, path in (("--out", s.out), ("--plot", s.plot)):  # found before the soak, not after it
        p = Path(path).resolve() if path else None
        if p is not None and (p.is_dir() or not p.parent.is_dir() or not os.access(p.parent, os.W_OK | os.X_OK)):
            why = "is a folder" if p.is_dir() else f"cannot be written ({p.parent} is not a writable folder)"
            raise BenchError(f"{flag} {path} {why}: pass a file path in a folder you can write")


def rss_mib() -> tuple[float, str]:
    """(resident memory of this process in MiB, where it came from).

    VmRSS of /proc/self/status on Linux (the Pi): memory resident now. Elsewhere resource's ru_maxrss, the peak so
    far, which can only rise: growth still shows, a fall does not.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0, "VmRSS"  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), "ru_maxrss"  # bytes on macOS


def open_fds() -> int | None:
    """File descriptors open in this process (Linux), or None: a capture reopened without release leaks these."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class _Sampler:
    """A recorder for edge's loop: it is handed each drawn frame and drops it. After `warmup` frames it reads RSS
    every `rss_every` frames and, every `interval` frames (and at the last), appends a row: frames (after
    warm-up), elapsed_s, fps over the interval, rss_mib (median reading), rss_min_mib, rss_max_mib, open_fds,
    threads and captures_opened."""

    def __init__(self, s: SoakSettings, opened: list[int], log):
        self.s, self._opened, self._log = s, opened, log
        self.n = 0  # frames drawn, warm-up included
        self.rows: list[dict] = []
        self.source = ""  # VmRSS or ru_maxrss
        self.rss_after_warmup: float | None = None  # one reading as the first interval starts
        self._readings: list[float] = []
        self._t0 = self._t_prev = 0.0
        self._m_prev = 0

    def write(self, canvas) -> None:
        self.n += 1
        m = self.n - self.s.warmup  # frames after warm-up; frame m = 0 starts the clock
        if m < 0:
            return
        if m == 0:
            self._t0 = self._t_prev = time.perf_counter()
            self.rss_after_warmup, self.source = rss_mib()
            return
        last = m % self.s.interval == 0 or m == self.s.frames
        if m % self.s.rss_every and not last:
            return
        self._readings.append(rss_mib()[0])
        if not last:
            return
        t, rss = time.perf_counter(), self._readings
        row = {
            "frames": m,
            "elapsed_s": round(t - self._t0, 3),
            "fps": round((m - self._m_prev) / (t - self._t_prev), 2),
            "rss_mib": round(statistics.median(rss), 2),
            "rss_min_mib": round(min(rss), 2),
            "rss_max_mib": round(max(rss), 2),
            "rss_readings": len(rss),
            "open_fds": open_fds(),
            "threads": threading.active_count(),
            "captures_opened": self._opened[0],  # the video was started over this many times, plus one
        }
        self.rows.append(row)
        self._t_prev, self._m_prev, self._readings = t, m, []
        growth = 100.0 * (row["rss_mib"] / self.rows[0]["rss_mib"] - 1.0)
        self._log(f"{m:>7} frames {row['elapsed_s']:8.1f} s {row['fps']:9.1f} FPS  RSS {row['rss_mib']:.1f} MiB "
                  f"({growth:+.2f}% on the first interval; {min(rss):.1f}-{max(rss):.1f})")  # fmt: skip


SUMMARY_KEYS = ("rss_start_mib", "rss_end_mib", "rss_peak_mib", "rss_growth_pct", "fps_first", "fps_last", "fps_median",
                "fps_min", "intervals", "wall_s", "open_fds_start", "open_fds_end", "verdict")  # fmt: skip


def summarize(rows: list[dict], max_growth_pct: float = 5.0) -> dict:
    """The soak's figures from its interval rows.

    Returns:
        rss_start_mib and rss_end_mib (the first and last intervals' median RSS), rss_peak_mib (the highest
        reading), rss_growth_pct (end against start), fps_first, fps_last, fps_median, fps_min (over intervals),
        intervals, wall_s (from the end of warm-up), open_fds_start/_end, and verdict: "flat" when growth <
        max_growth_pct, else "growing"; None for no rows (stopped during warm-up).
    """
    if not rows:
        return dict.fromkeys(SUMMARY_KEYS)
    start, end = rows[0], rows[-1]
    fps = [r["fps"] for r in rows]
    growth = round(100.0 * (end["rss_mib"] / start["rss_mib"] - 1.0), 2)
    return {
        "rss_start_mib": start["rss_mib"],
        "rss_end_mib": end["rss_mib"],
        "rss_peak_mib": max(r["rss_max_mib"] for r in rows),
        "rss_growth_pct": growth,
        "fps_first": fps[0],
        "fps_last": fps[-1],
        "fps_median": round(statistics.median(fps), 2),
        "fps_min": min(fps),
        "intervals": len(rows),
        "wall_s": end["elapsed_s"],
        "open_fds_start": start["open_fds"],
        "open_fds_end": end["open_fds"],
        "verdict": "flat" if growth < max_growth_pct else "growing",
    }


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
    from edge.app import EdgeOptions, _loop  # the loop itself, not a copy of it
    from edge.reader import FrameReader
    from edge.sources import open_capture, parse_source, quiet_opencv

    started = time.perf_counter()
    threads = s.threads or os.cpu_count() or 1
    clf = Classifier.from_model(s.model, None, threads)
    device = default_device_name()
    opened, error = [0], None
    sampler = _Sampler(s, opened, log)
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
            n = _loop(options, clf, reader, None, sampler, False)  # Ctrl-C ends it early: a partial report
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
        from contracts.atomic import write_json

        write_json(s.out, report)
    if s.plot and sampler.rows:
        plot_soak(report, s.plot)
    return report


def plot_soak(report: dict, path: str | Path) -> Path:
    """Two panels against frames after warm-up: RSS (each interval's median with min-max bars, the first
    interval's level and the flat limit above it) and FPS per interval with its median. Written atomically."""
    from benchmarks.plots import _plt, _save

    plt = _plt()
    rows, s, limit = report["rows"], report["summary"], report["settings"]["max_growth_pct"]
    x = [r["frames"] for r in rows]
    fig, (ax_rss, ax_fps) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    start, top = s["rss_start_mib"], s["rss_start_mib"] * (1 + limit / 100)
    ax_rss.axhspan(start, top, color="tab:green", alpha=0.10, label=f"flat: under first interval +{limit:g}%")
    ax_rss.axhline(start, color="tab:green", lw=1, ls="--", label=f"first interval {start:.1f} MiB")
    med = [r["rss_mib"] for r in rows]
    spread = [[m - r["rss_min_mib"] for m, r in zip(med, rows)], [r["rss_max_mib"] - m for m, r in zip(med, rows)]]
    ax_rss.errorbar(x, med, yerr=spread, fmt="o-", color="tab:blue", ms=3, lw=1.5, elinewidth=1, capsize=3,
                    label="RSS: median of the interval's readings, min-max bars")  # fmt: skip
    values = [r["rss_min_mib"] for r in rows] + [r["rss_max_mib"] for r in rows] + [top]
    pad = max(1.0, 0.2 * (max(values) - min(values)))
    ax_rss.set_ylim(min(values) - pad, max(values) + pad)
    ax_rss.set_ylabel("resident memory (MiB)")
    ax_rss.set_title(f"RSS {start:.1f} → {s['rss_end_mib']:.1f} MiB ({s['rss_growth_pct']:+.2f}%): {s['verdict']}",
                     fontsize=10, loc="left")  # fmt: skip
    ax_rss.legend(loc="best", fontsize=8)
    fps = [r["fps"] for r in rows]
    ax_fps.plot(x, fps, "o-", color="tab:orange", ms=3, label="FPS over the interval")
    ax_fps.axhline(s["fps_median"], color="gray", lw=1, ls="--", label=f"median {s['fps_median']:.1f} FPS")
    ax_fps.set_ylim(0, max(fps) * 1.15)
    ax_fps.set_ylabel("camera-loop FPS")
    ax_fps.set_xlabel(f"frames after {report['settings']['warmup']} warm-up frames")
    ax_fps.set_title(f"FPS first {s['fps_first']:.1f}, last {s['fps_last']:.1f}, min {s['fps_min']:.1f}",
                     fontsize=10, loc="left")  # fmt: skip
    ax_fps.legend(loc="lower right", fontsize=8)
    for ax in (ax_rss, ax_fps):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max(x) * 1.02)
    fig.suptitle(f"Soak: {Path(s['model']).name} ({s['format']}), {s['threads']} threads, {s['device']}", fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(path))


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
    p.add_argument("--plot", default="", help="write a PNG of RSS and FPS against frames here (needs matplotlib)")
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
    if s.plot:  # found before the soak, not after it: a Pi bundle has neither matplotlib nor benchmarks/plots.py
        try:
            import matplotlib  # noqa: F401

            import benchmarks.plots  # noqa: F401
        except ImportError as e:
            print(f"error: --plot needs {e.name or 'matplotlib'} (host side): pass --out soak.json here and plot it "
                  "on the host, or leave --plot out", file=sys.stderr)  # fmt: skip
            return 2
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
