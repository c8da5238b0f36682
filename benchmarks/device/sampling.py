"""What the soak samples while edge's loop runs: resident memory, open files and threads, one row per interval
(Sampler, the loop's recorder), and the figures of those rows (summarize).

    sampler = Sampler(warmup=1000, interval=1000, rss_every=10, frames=20000, opened=[0], log=print)
    run_loop(options, classifier, reader, rec=sampler)
    summary = summarize(sampler.rows, max_growth_pct=5.0)

Standard library only: the Pi has no psutil.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import threading
import time


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


class Sampler:
    """A recorder for edge's loop (edge.app.run_loop's rec): it is handed each drawn frame and drops it. After
    `warmup` frames it reads RSS every `rss_every` frames and, every `interval` frames and at frame `frames`, appends
    a row: frames (after warm-up), elapsed_s, fps over the interval, rss_mib (median reading), rss_min_mib,
    rss_max_mib, rss_readings, open_fds, threads and captures_opened (opened[0], which the caller counts)."""

    def __init__(self, warmup: int, interval: int, rss_every: int, frames: int, opened: list[int], log):
        self.warmup, self.interval, self.rss_every, self.frames = warmup, interval, rss_every, frames
        self._opened, self._log = opened, log
        self.n = 0  # frames drawn, warm-up included
        self.rows: list[dict] = []
        self.source = ""  # VmRSS or ru_maxrss
        self.rss_after_warmup: float | None = None  # one reading as the first interval starts
        self._readings: list[float] = []
        self._t0 = self._t_prev = 0.0
        self._m_prev = 0

    def write(self, canvas) -> None:
        self.n += 1
        m = self.n - self.warmup  # frames after warm-up; frame m = 0 starts the clock
        if m < 0:
            return
        if m == 0:
            self._t0 = self._t_prev = time.perf_counter()
            self.rss_after_warmup, self.source = rss_mib()
            return
        last = m % self.interval == 0 or m == self.frames
        if m % self.rss_every and not last:
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
