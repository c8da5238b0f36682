"""python -m benchmarks: every published artifact of a run, measured here -> runs/NAME/bench/.

python -m benchmarks --run runs/latest
python -m benchmarks --run runs/flowers --threads 1,4 --runs 500 --merge pi4-rows.json --min-accuracy 0.9
python -m benchmarks --run runs/latest --corruptions gaussian_blur,jpeg --severities 1,3,5 --robustness-images 200

Exit codes: 0 done; 1 an artifact's top-1 is below --min-accuracy (each is named); 2 the run, its manifest, a
flag or a --merge file cannot be used (one line naming it and the fix).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from benchmarks.device.corruptions import CORRUPTIONS
from benchmarks.robustness import parse_severities
from benchmarks.settings import REFERENCES, BenchError, BenchSettings, parse_threads
from contracts.console import one_line
from contracts.formats import FORMATS


def build_parser() -> argparse.ArgumentParser:
    d = BenchSettings()
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--run", default=d.run, help="training run folder with export/manifest.json (default runs/latest)")
    a("--out", default=d.out, help="output folder (default RUN/bench)")
    a("--formats", default=d.formats, help=f"all, or a comma-separated list of: {', '.join(FORMATS)}")
    a("--threads", default=",".join(map(str, d.threads)), help="comma-separated thread counts (default 1,2,4)")
    a("--runs", type=int, default=d.runs, help=f"timed runs per artifact and thread count (default {d.runs})")
    a("--warmup", type=int, default=d.warmup, help=f"untimed runs first (default {d.warmup})")
    a("--rounds", type=int, default=d.rounds, help=f"interleaved rounds across artifacts (default {d.rounds})")
    a(
        "--reference",
        default=d.reference,
        choices=REFERENCES,
        help="agreement reference (default auto: keras if TensorFlow imports, else tflite_fp32)",
    )
    a("--max-test-images", type=int, default=d.max_test_images, help="cap the test images (default 0: all)")
    a(
        "--loop-frames",
        type=int,
        default=d.loop_frames,
        help=f"camera-loop frames, 0: no loop (default {d.loop_frames})",
    )
    a(
        "--loop-repeats",
        type=int,
        default=d.loop_repeats,
        help=f"passes over the video, median kept (default {d.loop_repeats})",
    )
    a("--video-codec", default=d.video_codec, help=f"codec of the generated loop video (default {d.video_codec})")
    a("--device-name", default=d.device_name, help="this machine's name in the device column (default: CPU model)")
    a(
        "--merge",
        action="append",
        default=[],
        metavar="ROWS.json",
        help="rows from `python -m benchmarks.device.latency "
        "--out` on another device (repeatable); compared only with rows of that device",
    )
    a("--min-accuracy", type=float, default=None, help="exit 1 if an artifact's test top-1 is below this")
    a("--noise", type=float, default=d.noise, help=f"speed ratios within 1 +- this are 'no gain' (default {d.noise})")
    a("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    a("--corruptions", default=d.corruptions, help=f"robustness: all, none, or a comma-separated list of: "
      f"{', '.join(CORRUPTIONS)} (default all)")  # fmt: skip
    a("--severities", default=",".join(map(str, d.severities)), help="robustness severities, 1-5 (default 1,2,3,4,5)")
    a("--robustness-images", type=int, default=d.robustness_images,
      help=f"test images the corruptions run on, 0: all (default {d.robustness_images})")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses flags, runs the benchmark; returns the exit code (see the module docstring)."""
    a = build_parser().parse_args(argv)
    from benchmarks.run import below_floor, run_benchmarks
    from train.errors import DataError
    from train.settings import SettingsError

    try:
        args = {**vars(a), "threads": parse_threads(a.threads), "merge": tuple(a.merge),
                "severities": parse_severities(a.severities)}  # fmt: skip
        s = BenchSettings(**{f.name: args[f.name] for f in dataclasses.fields(BenchSettings) if f.name in args})
        rows = run_benchmarks(s)
    except (BenchError, SettingsError, DataError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if s.min_accuracy is not None:
        host = rows[0]["device"] if rows else ""
        failed = below_floor(rows, s.min_accuracy, host)
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        if failed:
            return 1
    return 0
