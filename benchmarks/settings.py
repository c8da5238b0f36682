"""BenchSettings: the choices of one benchmark, saved as runs/NAME/bench/bench_settings.json.

BenchError and parse_threads() live in benchmarks.device.settings, which the Raspberry Pi has too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.device.settings import BenchError, parse_threads  # noqa: F401 (the CLI's too)

REFERENCES = ("auto", "keras", "tflite_fp32")


@dataclass(frozen=True)
class BenchSettings:
    """Resolved settings of one benchmark run. Field comments are the documentation; --help mirrors them."""

    run: str = "runs/latest"  # training run folder; its export/manifest.json lists the artifacts to measure
    out: str = ""  # where results go; "" = RUN/bench
    formats: str = "all"  # comma-separated names from contracts.formats.FORMATS, or "all"; only published ones run
    threads: tuple[int, ...] = (1, 2, 4)  # interpreter thread counts, each measured separately
    runs: int = 200  # timed inferences per artifact and thread count (a 96 px model takes ~0.3 ms: cheap)
    warmup: int = 20  # untimed inferences first (XNNPACK packs weights and caches fill on the first calls)
    rounds: int = 5  # timed runs are split into this many rounds, interleaved across artifacts, so a burst of
    #   load from another process on a shared machine lands on every artifact rather than on one
    reference: str = "auto"  # agreement reference: "keras" (float model, needs TensorFlow), "tflite_fp32", or
    #   "auto" (keras if TensorFlow imports and the run has the model, else tflite_fp32)
    max_test_images: int = 0  # cap on test images for accuracy (0 = the whole test split)
    loop_frames: int = 300  # frames of the generated 640x480 video the camera loop classifies (0 = skip the loop);
    #   edge's loop spends its first 20-50 frames choosing its shape (edge.shape), so fewer would time mostly that
    loop_warmup: int = 10  # first loop frames left out of the loop figures (model and reader start-up)
    loop_repeats: int = 3  # passes over the video per row, edge's and the one-thread reference's in turns; the
    #   median pass of each is kept (a shared machine's bursts)
    frame_width: int = 640  # camera-loop frames: what the Pi camera is asked for (edge.sources.PICAMERA_SIZE)
    frame_height: int = 480
    video_codec: str = "mp4v"  # codec of the generated video; its decoding stands in for the camera's capture cost
    device_name: str = ""  # names this machine in the `device` column; "" = from the CPU/board model
    merge: tuple[str, ...] = ()  # rows.json files from `python -m benchmarks.device.latency` on other devices
    min_accuracy: float | None = None  # exit 1 when an artifact's test top-1 is below this (CI floor)
    noise: float = 0.10  # speed ratios within 1 +- this are reported as "no gain": on a shared 2-core machine
    #   medians of identical runs differ by several percent
    plots: bool = True  # write the PNG plots (matplotlib)
    corruptions: str = "all"  # robustness: comma-separated names from benchmarks.device.corruptions, "all" or "none"
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # robustness severities (1-5); severity 3 fills the robust_* columns
    robustness_images: int = 500  # test images the corruptions run on, spread evenly over the split (0 = all of
    #   it): 31 sets per artifact, so the whole split of a big run would take long; 500 leave about +-2 points of
    #   noise on a top-1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["threads"], d["merge"], d["severities"] = list(self.threads), list(self.merge), list(self.severities)
        return d


def check_settings(s: BenchSettings) -> None:
    """Raises BenchError for values out of range, naming the flag."""
    if s.reference not in REFERENCES:
        raise BenchError(f"--reference {s.reference!r} is not one of {', '.join(REFERENCES)}")
    minimums = (("--runs", s.runs, 1), ("--warmup", s.warmup, 0), ("--rounds", s.rounds, 1),
                ("--loop-frames", s.loop_frames, 0), ("--max-test-images", s.max_test_images, 0),
                ("--loop-repeats", s.loop_repeats, 1), ("--robustness-images", s.robustness_images, 0))  # fmt: skip
    for flag, value, low in minimums:
        if value < low:
            raise BenchError(f"{flag} {value} is below {low}")
    if s.loop_frames and s.loop_frames < s.loop_warmup + 2:
        raise BenchError(f"--loop-frames {s.loop_frames} leaves no measured frames after {s.loop_warmup} warm-up ones")
    from benchmarks.robustness import parse_corruptions, parse_severities

    parse_corruptions(s.corruptions)
    parse_severities(s.severities)
    if s.min_accuracy is not None and s.min_accuracy < 0:
        raise BenchError(f"--min-accuracy {s.min_accuracy} is not a top-1 fraction (0 to 1)")
