"""Inference latency on this device, with nothing but the edge requirements (numpy, OpenCV, LiteRT).

    python -m benchmarks.device.latency --model tflite_int8.tflite tflite_fp32.tflite --threads 1,2,4 \\
        --device-name pi4 --out pi4-rows.json
    python -m benchmarks --run runs/NAME --merge pi4-rows.json      # back on the training machine

Copy a bundle (python -m deploy.bundle: it ships contracts/, edge/ and benchmarks/device/ whole) to the Raspberry
Pi and run this in it: each model is timed in its runtime at each thread count, and, where its manifest.json sits
beside it, the camera loop runs on a generated 640x480 video. The rows carry the device's name; --merge adds them
to the run's table, plots and report, where they are compared only with rows of the same device. No TensorFlow,
scikit-learn or matplotlib is imported here or by anything this imports.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.device.machine import default_device_name, device_meta
from benchmarks.device.rows import add_error, format_table, new_row
from benchmarks.device.settings import BenchError, parse_threads
from contracts.atomic import why_unwritable, write_json
from contracts.formats import FORMATS, format_for_file
from contracts.manifest import TensorSpec, find_manifest, sha256_file
from contracts.runners import backend_for_file, create_backend
from contracts.runners.base import Backend


def make_input(spec: TensorSpec, seed: int = 0) -> np.ndarray:
    """A fixed random tensor of the input's shape and dtype (these models take the same time on any pixels)."""
    rng = np.random.default_rng(seed)
    shape = [d if d > 0 else 1 for d in spec.shape]
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.uniform(0, 255, size=shape).astype(dtype)


def time_backends(backends: dict, runs: int, warmup: int, rounds: int = 1) -> dict:
    """Times backend.run() on a fixed input: `warmup` untimed runs each, then `runs` timed runs each, split into
    `rounds` blocks interleaved across the backends (one untimed call opens each block, after the switch).

    Args:
        backends: key -> Backend; every backend is timed, one after another within a round.

    Returns:
        key -> numpy array of the `runs` latencies in milliseconds.
    """
    inputs = {k: make_input(b.input) for k, b in backends.items()}
    for k, b in backends.items():
        for _ in range(warmup):
            b.run(inputs[k])
    rounds = max(1, min(rounds, runs))
    sizes = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    samples: dict = {k: [] for k in backends}
    clock = time.perf_counter
    for size in sizes:
        for k, b in backends.items():
            x = inputs[k]
            b.run(x)
            for _ in range(size):
                t = clock()
                b.run(x)
                samples[k].append(clock() - t)
    return {k: np.asarray(v) * 1000.0 for k, v in samples.items()}


def latency_stats(ms: np.ndarray) -> dict:
    """The row's latency columns from timed runs in milliseconds (to the nanosecond; fps from that median)."""
    median = round(float(np.median(ms)), 6)
    return {
        "latency_ms_median": median,
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 6),
        "latency_ms_std": round(float(np.std(ms, ddof=1)) if len(ms) > 1 else 0.0, 6),
        "latency_ms_mean": round(float(np.mean(ms)), 6),
        "latency_ms_min": round(float(np.min(ms)), 6),
        "n_runs": len(ms),
        "fps": round(1000.0 / median, 2),
    }


def time_rows(pairs: list[tuple[dict, Backend]], runs: int, warmup: int, rounds: int) -> None:
    """Times (row, backend) pairs together (time_backends) and fills each row's latency columns. If that fails,
    each is timed alone, so one bad interpreter becomes one error row."""
    try:
        timed = time_backends({id(r): b for r, b in pairs}, runs, warmup, rounds)
    except Exception:  # which one failed is found below
        timed = {}
        for row, backend in pairs:
            try:
                timed.update(time_backends({id(row): backend}, runs, warmup, rounds))
            except Exception as e:  # a failure is a row with an error, never a crash
                add_error(row, "latency", e)
    for row, _ in pairs:
        if id(row) in timed:
            row.update(latency_stats(timed[id(row)]))


_PROBE = (
    "import sys\n"
    "from benchmarks.device.latency import make_input\n"
    "from contracts.runners import backend_for_file, create_backend\n"
    "b = create_backend(backend_for_file(sys.argv[1]), sys.argv[1], 1)\n"
    "b.run(make_input(b.input))\n"
)


def probe_crash(path: Path, timeout: float = 120.0) -> str | None:
    """Loads and runs a model once in a child process; the reason if that killed the process, else None.

    An interpreter can crash the whole process on a malformed model that passes every check (tflite-runtime on a
    graph whose indices are in range but wrong): measured in a child first, one such file costs one error row,
    not the rows of every other model. Errors the child reports normally are left to the in-process load.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, str(path)], env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{path} hung the interpreter (no answer in {timeout:.0f} s) on its first run"
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name if -r.returncode in signal.valid_signals() else -r.returncode
        return f"{path} crashed the interpreter ({name}) on its first run: copy it again or re-run export"
    return None


def _open(path: Path, threads: int, row: dict) -> tuple[Backend | None, object | None]:
    """(backend, classifier or None); a model with its manifest beside it is opened as edge opens it (checksum,
    tensors), one without only in its runtime. On failure the row gets the error and (None, None) returns."""
    from contracts.runners.classifier import Classifier

    try:
        if find_manifest(path).is_file():
            clf = Classifier.from_model(path, None, threads)
            row.update(format=clf.entry.format, runtime=clf.entry.runtime, quantization=clf.entry.quantization)
            return clf.backend, clf
        return create_backend(row["runtime"], path, threads), None
    except Exception as e:  # a failure is a row with an error, never a crash
        add_error(row, "load", e)
        return None, None


def measure_models(paths: list[str | Path], threads: tuple[int, ...], runs: int = 200, warmup: int = 20,
                   rounds: int = 5, device: str = "", loop_frames: int = 300, loop_warmup: int = 10,
                   frame_size: tuple[int, int] = (640, 480), log=print,
                   loop_repeats: int = 3) -> list[dict]:  # fmt: skip
    """Rows for model files measured here: latency per thread count and, with a manifest, the camera loop."""
    device = device or default_device_name()
    tmp = tempfile.TemporaryDirectory(prefix="bench-loop-")
    video = capture_ms = None
    rows: list[dict] = []
    crashes: dict[Path, str | None] = {}
    try:
        for t in threads:
            opened = []
            for p in map(Path, paths):
                fmt = format_for_file(p)
                row = new_row(device, fmt.name if fmt else p.stem, backend_for_file(p) or "unknown", t, file=p.name,
                              quantization=fmt.quantization if fmt else None)  # fmt: skip
                rows.append(row)
                if not p.is_file():
                    add_error(row, "load", f"{p} not found")
                    continue
                row["size_mb"] = round(p.stat().st_size / 1e6, 4)
                row["sha256"] = sha256_file(p)[:12]
                if p not in crashes:
                    crashes[p] = probe_crash(p)
                if crashes[p]:
                    add_error(row, "load", crashes[p])
                    continue
                backend, clf = _open(p, t, row)
                if backend is not None:
                    opened.append((row, backend, clf))
            time_rows([(r, b) for r, b, _ in opened], runs, warmup, rounds)
            for row, backend, clf in opened:
                if clf is not None and loop_frames:
                    if video is None:
                        video, capture_ms = _make_video(Path(tmp.name) / "loop.mp4", loop_frames, frame_size)
                    if isinstance(video, Exception):
                        add_error(row, "camera loop", video)
                    else:
                        _loop_figures(row, clf, video, capture_ms, loop_warmup, None, loop_repeats)
                backend.close()
                figure = f"{row['latency_ms_median']:.3f} ms median" if row["latency_ms_median"] else "not timed"
                log(
                    f"{row['format']} ({row['runtime']}, {t} threads): {figure}"
                    + (f" [{row['error']}]" * bool(row["error"]))
                )
    finally:
        tmp.cleanup()
    return rows


def _make_video(path: Path, frames: int, size: tuple[int, int]):
    """(video path, capture ms) of a synthetic loop video, or (the exception, None) if it cannot be made."""
    from benchmarks.device import loop

    try:
        video = loop.write_video(loop.synthetic_frames(frames, size), path)
        return video, loop.measure_capture(video)
    except Exception as e:  # the loop figures of every row say why; latency stands
        return e, None


def _loop_figures(row: dict, clf, video: Path, capture_ms: float, warmup: int, labels=None, repeats: int = 3) -> None:
    """Fills the row's camera-loop columns, or adds the loop's error to it (the latency figures stand)."""
    from benchmarks.device import loop

    try:
        row.update(loop.loop_columns(clf, video, warmup, labels, repeats), capture_ms=round(capture_ms, 4))
    except Exception as e:  # a failure is a row with an error, never a crash
        add_error(row, "camera loop", e)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device.latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, help=f"artifact(s) to time: {', '.join(FORMATS)} files")
    p.add_argument("--threads", default="1,2,4", help="comma-separated interpreter thread counts (default 1,2,4)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per model and thread count (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleave models in this many rounds (default 5)")
    p.add_argument("--loop-frames", type=int, default=300, help="camera-loop video frames (0 skips the loop)")
    p.add_argument(
        "--loop-repeats",
        type=int,
        default=3,
        help="passes of edge's loop and of the one-thread reference, in turns; medians kept (default 3)",
    )
    p.add_argument("--device-name", default="", help="the device column (default: board or CPU model)")
    p.add_argument("--out", default="", help="write {meta, rows} JSON here, for `python -m benchmarks --merge`")
    return p


def main(argv: list[str] | None = None) -> int:
    """Times the models, prints the table, writes --out; exit 2 on bad flags, 1 if any row has an error."""
    a = build_parser().parse_args(argv)
    try:
        threads = parse_threads(a.threads)
        if (
            a.runs < 1
            or a.warmup < 0
            or a.loop_frames < 0
            or (a.loop_frames and a.loop_frames < 12)
            or a.loop_repeats < 1
        ):
            raise BenchError(
                "--runs and --loop-repeats must be at least 1, --warmup at least 0, --loop-frames 0 or at least 12"
            )
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    why = why_unwritable(a.out) if a.out else None  # found before measuring, not after: they would be lost
    if why:
        print(f"error: --out {a.out} {why}: pass a file path in a folder you can write", file=sys.stderr)
        return 2
    device = a.device_name or default_device_name()
    meta = {"devices": {device: device_meta(device)}}
    rows = measure_models(a.model, threads, a.runs, a.warmup, a.rounds, device, a.loop_frames,
                          log=lambda m: print(m, file=sys.stderr, flush=True), loop_repeats=a.loop_repeats)  # fmt: skip
    print(format_table(rows))
    if a.out:
        write_json(a.out, {"meta": meta, "rows": rows})
        print(f"wrote {len(rows)} rows to {a.out}: merge them with python -m benchmarks --run RUN --merge {a.out}")
    failed = [f"{r['format']} ({r['threads']} threads): {r['error']}" for r in rows if r["error"]]
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
