"""How fast a phase trains and how much memory the run holds: images/s per phase and peak resident memory.

meter = Throughput(n_images=len(train_split), batch_size=32)   # a Keras callback, one per phase's fit
model.fit(..., callbacks=[meter]); meter.report()   # {"images_per_s": ..., "images_per_s_steady": ..., ...}
phase_figures(run)   # metrics.json's images_per_s, images_per_s_steady, peak_rss_mb_by_phase, from checkpoints/

Only training batches are timed (validation and the callbacks between epochs are not). images_per_s is the whole
phase: the first epoch's graph tracing and the filling of the cache and of the shuffle buffer count, as a user
waits for them. images_per_s_steady leaves out the first STEADY_SKIP batches of the phase (the tracing and the
pipeline's start); None if the phase had no more batches than that.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import tf_keras as keras

STEADY_SKIP = 3  # batches at the start of a phase's first epoch left out of images_per_s_steady


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (getrusage's ru_maxrss, the kernel's VmHWM)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # macOS gives bytes, Linux KiB


class Throughput(keras.callbacks.Callback):
    """Times the training batches of one fit(): images per second over the phase, and steady after warm-up."""

    def __init__(self, n_images: int, batch_size: int):
        super().__init__()
        self.n_images, self.batch_size = n_images, batch_size
        self.images = self.seconds = 0.0
        self.steady_images = self.steady_seconds = 0.0
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._mark = None  # when the warm-up batches of the phase's first epoch ended
        self._last, self._batches = self._start, 0

    def on_train_batch_end(self, batch, logs=None):
        self._last, self._batches = time.perf_counter(), batch + 1
        if self.epochs == 0 and self._batches == STEADY_SKIP:
            self._mark = self._last

    def on_epoch_end(self, epoch, logs=None):
        images = min(self._batches * self.batch_size, self.n_images)  # the last batch may be short
        self.images += images
        self.seconds += self._last - self._start
        if self.epochs > 0:
            self.steady_images += images
            self.steady_seconds += self._last - self._start
        elif self._mark is not None and self._batches > STEADY_SKIP:
            self.steady_images += images - STEADY_SKIP * self.batch_size
            self.steady_seconds += self._last - self._mark
        self.epochs += 1

    def report(self) -> dict:
        """{"images_per_s", "images_per_s_steady", "epochs", "train_seconds", "peak_rss_mb"} of the phase so far."""

        def rate(n, s):
            return round(n / s, 1) if s > 0 and n > 0 else None

        return {"images_per_s": rate(self.images, self.seconds),
                "images_per_s_steady": rate(self.steady_images, self.steady_seconds), "epochs": self.epochs,
                "train_seconds": round(self.seconds, 1), "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def describe(phase: str, report: dict) -> str:
    """The log line of one phase: "phase1: 412 images/s (steady 430), peak resident memory 1.21 GB"."""
    r, steady = report.get("images_per_s"), report.get("images_per_s_steady")
    rate = "no training batches timed" if r is None else f"{r:,.0f} images/s"
    if steady is not None:
        rate += f" (steady {steady:,.0f})"
    return f"{phase}: {rate}, peak resident memory {report['peak_rss_mb'] / 1024:.2f} GB so far"


def phase_figures(run: str | Path, phases=("phase1", "phase2", "phase3")) -> dict:
    """metrics.json's throughput keys, from each phase's checkpoints/PHASE.json (a phase reloaded on resume keeps
    the figures of the process that trained it): images_per_s, images_per_s_steady and peak_rss_mb_by_phase."""
    out = {"images_per_s": {}, "images_per_s_steady": {}, "peak_rss_mb_by_phase": {}}
    for ph in phases:
        try:
            t = json.loads((Path(run) / "checkpoints" / f"{ph}.json").read_text()).get("throughput") or {}
        except (OSError, ValueError):
            t = {}
        out["images_per_s"][ph] = t.get("images_per_s")
        out["images_per_s_steady"][ph] = t.get("images_per_s_steady")
        out["peak_rss_mb_by_phase"][ph] = t.get("peak_rss_mb")
    return out
