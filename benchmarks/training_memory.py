"""python -m benchmarks.training_memory: training's peak memory, wall time and images/s against the dataset's size.

python -m benchmarks.training_memory --sizes 3000,20000,60000 --image-size 96 --alpha 0.35   # runs/training-memory/
python -m benchmarks.training_memory --sizes 3000,20000 --repo /tmp/older-checkout --label before
python -m benchmarks.training_memory --sizes 3000,60000 --export-only   # export's peak memory for those runs

A benchmark, not a test: it trains one model per size. Each size is a folder of Fashion-MNIST class sub-folders (PNG,
balanced, seeded; Debian's dataset-fashion-mnist, 70,000 real product photos), written once under OUT/data and reused.
Each run is `python -m train --data D --weights none --epochs 1 --fine-tune-epochs 1 --qat-epochs 1 --force` (one
epoch a phase), run by the checkout --repo names as a child process; its peak resident memory is that child's own
ru_maxrss (os.wait4), so TensorFlow, the pipeline and the cache all count. Rows join OUT/training_memory.json, keyed
by (label, images, image size, alpha), and training_memory.{md,csv,png} are written again from all of them.
With --export each run is then exported (`python -m export --run RUN --force`, every format, the test split
predicted in full) and the export's own peak memory and time join the row; --export-only does that for the runs
already trained (export should not grow with the split: it decodes only its calibration images and predicts the
test split in batches).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from contracts.atomic import write_json, write_text
from contracts.console import first_line, log

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
TRAIN_FLAGS = ["--weights", "none", "--epochs", "1", "--fine-tune-epochs", "1", "--qat-epochs", "1", "--force"]
FIELDS = ("label", "images", "image_size", "alpha", "peak_rss_mb", "wall_s", "images_per_s_phase1",
          "images_per_s_phase2", "images_per_s_phase3", "data_cache", "load_before", "exit_code", "error",
          "export_peak_rss_mb", "export_wall_s", "export_test_images", "export_error")  # fmt: skip


class BenchError(RuntimeError):
    """A one-line reason the benchmark cannot run (no Fashion-MNIST, a --repo that is not a checkout)."""


def write_folder(root: Path, n: int, seed: int = 1337) -> Path:
    """root/fashion-N: N Fashion-MNIST photos (train then test split), balanced over the 10 classes, as PNG files.

    Written into a hidden folder and renamed when whole, so an interrupted write is never taken for a dataset.
    """
    import cv2

    from train.pretrain import PretrainError, load_fashion_mnist

    folder = root / f"fashion-{n}"
    if folder.is_dir():
        return folder
    try:
        parts = [load_fashion_mnist(split) for split in ("train", "test")]
    except PretrainError as e:
        raise BenchError(str(e)) from None
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if n > len(labels):
        raise BenchError(f"--sizes {n}: Fashion-MNIST has {len(labels)} photos; ask for at most that many")
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: n // 10 + (c < n % 10)] for c in range(10)])
    tmp = root / f".fashion-{n}.partial"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    log(f"writing {n} Fashion-MNIST photos to {folder}")
    for c in CLASSES:
        (tmp / c).mkdir(parents=True)
    for i in picked:
        cv2.imwrite(str(tmp / CLASSES[labels[i]] / f"{i:05d}.png"), images[i])
    tmp.rename(folder)
    return folder


def run_child(cmd: list[str], repo: Path, log_file: Path) -> tuple[int, float, float, str]:
    """cmd run by repo's code in a child process, output to log_file: (exit code, wall s, peak RSS MB, error line)."""
    log(f"{' '.join(cmd)}  (log: {log_file})")
    env = dict(os.environ, PYTHONPATH=str(repo))
    t0 = time.monotonic()
    with open(log_file, "w") as out:
        child = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except KeyboardInterrupt:
            child.terminate()
            child.wait()
            raise
    code = os.waitstatus_to_exitcode(status)
    error = ""
    if code != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()
        error = first_line(tail[-1] if tail else f"exit code {code}")[:200]
    return code, round(time.monotonic() - t0, 1), round(usage.ru_maxrss / 1024, 1), error


def train_once(repo: Path, data: Path, run: Path, image_size: int, alpha: float, log_file: Path) -> dict:
    """One `python -m train` of repo in a child process: its exit code, wall time, peak RSS and metrics.json's rates."""
    cmd = [sys.executable, "-m", "train", "--data", str(data), "--out", str(run), "--image-size", str(image_size),
           "--alpha", f"{alpha:g}", *TRAIN_FLAGS]  # fmt: skip
    code, wall, rss, error = run_child(cmd, repo, log_file)
    row = {"wall_s": wall, "peak_rss_mb": rss, "exit_code": code, "error": error}
    if code != 0:
        return row
    metrics = json.loads((run / "metrics.json").read_text())
    rates = metrics.get("images_per_s_steady") or {}
    for phase in ("phase1", "phase2", "phase3"):
        row[f"images_per_s_{phase}"] = rates.get(phase)
    cache = metrics.get("data_cache") or {}
    row["data_cache"] = cache.get("mode", "") if isinstance(cache, dict) else str(cache)
    return row


def export_once(repo: Path, run: Path, log_file: Path, formats: str = "all", max_test_images: int = 0) -> dict:
    """`python -m export --run RUN --force --formats F` in a child process: its peak RSS, wall time, test images
    (max_test_images > 0: export's --max-test-images, the same parity set whatever the dataset's size)."""
    cmd = [sys.executable, "-m", "export", "--run", str(run), "--force", "--formats", formats]
    cmd += ["--max-test-images", str(max_test_images)] if max_test_images else []
    code, wall, rss, error = run_child(cmd, repo, log_file)
    from train.data import DataError, split_length

    try:
        test = split_length(run, "test")
    except DataError:
        test = None
    if test is not None and max_test_images:
        test = min(test, max_test_images)
    return {"export_peak_rss_mb": rss, "export_wall_s": wall, "export_test_images": test,
            "export_error": error or ("" if code == 0 else f"exit code {code}")}  # fmt: skip


def merge_rows(path: Path, new: list[dict]) -> list[dict]:
    """The rows already in path, with any of the same (label, images, image_size, alpha) replaced by new ones."""

    def key(r):
        return r["label"], r["images"], r["image_size"], r["alpha"]

    old = json.loads(path.read_text()) if path.is_file() else []
    fresh = {key(r) for r in new}
    rows = [r for r in old if key(r) not in fresh] + new
    return sorted(rows, key=lambda r: (r["image_size"], r["label"], r["images"]))


def table(rows: list[dict]) -> str:
    """The markdown table of the rows: peak RSS, wall time, cache mode and steady images/s per phase."""
    lines = ["| label | images | size | peak RSS | wall time | cache | images/s phase 1 / 2 / 3 | load before "
             "| export peak RSS (test images) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        rates = " / ".join("-" if r.get(f"images_per_s_phase{i}") is None else f"{r[f'images_per_s_phase{i}']:.0f}"
                           for i in (1, 2, 3))  # fmt: skip
        m, s = divmod(int(r["wall_s"]), 60)
        rss = f"{r['peak_rss_mb'] / 1024:.2f} GB" + ("" if not r.get("error") else f" (failed: {r['error']})")
        export = "-"
        if r.get("export_peak_rss_mb") is not None:
            export = f"{r['export_peak_rss_mb'] / 1024:.2f} GB ({r.get('export_test_images') or 0:,})"
            export += f" ({r['export_error']})" if r.get("export_error") else ""
        lines.append(f"| {r['label']} | {r['images']:,} | {r['image_size']} | {rss} | {m} min {s} s | "
                     f"{r.get('data_cache') or '-'} | {rates} | {r.get('load_before', '-')} | {export} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Peak resident memory against images, one line per (label, image size)."""
    from benchmarks.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for key in sorted({(r["label"], r["image_size"]) for r in rows}):
        pts = sorted((r["images"], r["peak_rss_mb"] / 1024) for r in rows if (r["label"], r["image_size"]) == key
                     and not r.get("error"))  # fmt: skip
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{key[0]}, {key[1]} px")
            for x, y in pts:
                ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullLocator

    sizes = []  # the sizes measured, written out (log-scale minor labels collide), none within 1.5x of another
    for n in sorted({r["images"] for r in rows}):
        if not sizes or n >= 1.5 * sizes[-1]:
            sizes.append(n)
    ax.set_xticks(sizes)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlabel("images in the folder (log scale)")
    ax.set_ylabel("peak resident memory of python -m train (GB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Training memory against dataset size (one epoch a phase)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def write_outputs(out: Path, rows: list[dict]) -> None:
    write_json(out / "training_memory.json", rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "training_memory.csv", buf.getvalue())
    write_text(out / "training_memory.md", table(rows))
    plot(rows, out / "training_memory.png")


def run_benchmark(
    sizes: list[int],
    image_size: int,
    alpha: float,
    out: Path,
    repo: Path,
    label: str,
    export: bool = False,
    train: bool = True,
    export_formats: str = "all",
    export_max_test_images: int = 0,
) -> list[dict]:
    """Trains (and with export, exports) once per size with repo's code, writing the outputs after each (an
    interrupted benchmark keeps the rows before it). train=False exports the runs already trained and updates their
    rows."""
    if not (repo / "train" / "__main__.py").is_file():
        raise BenchError(f"--repo {repo} has no train/__main__.py: give a checkout of this project")
    for sub in ("data", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    old = {(r["label"], r["images"], r["image_size"], r["alpha"]): r
           for r in merge_rows(out / "training_memory.json", [])}  # fmt: skip
    if not train:
        for n in sizes:
            run = out / "runs" / f"{label}-{image_size}-{n}"
            if (label, n, image_size, alpha) not in old or not (run / "metrics.json").is_file():
                raise BenchError(f"--export-only: no finished {label} run of {n} images at {image_size} px in "
                                 f"{out / 'runs'}: run the benchmark without --export-only first")  # fmt: skip
    done = []
    for n in sizes:
        name = f"{label}-{image_size}-{n}"
        run = out / "runs" / name
        if train:
            data = write_folder(out / "data", n)
            row = {"label": label, "images": n, "image_size": image_size, "alpha": alpha,
                   "load_before": round(os.getloadavg()[0], 2)}  # fmt: skip
            row |= train_once(repo, data, run, image_size, alpha, out / "logs" / f"{name}.log")
            log(f"{name}: peak RSS {row['peak_rss_mb'] / 1024:.2f} GB, {row['wall_s']:.0f} s"
                + (f", FAILED: {row['error']}" if row["error"] else ""))  # fmt: skip
        else:
            row = dict(old[(label, n, image_size, alpha)])
        if export and not row["error"]:
            row |= export_once(repo, run, out / "logs" / f"{name}-export.log", export_formats, export_max_test_images)
            log(f"{name} export: peak RSS {row['export_peak_rss_mb'] / 1024:.2f} GB, {row['export_wall_s']:.0f} s, "
                f"{row['export_test_images']} test images" + (f", FAILED: {row['export_error']}"
                                                               if row["export_error"] else ""))  # fmt: skip
        done.append(row)
        write_outputs(out, merge_rows(out / "training_memory.json", [row]))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training_memory", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="3000,20000,60000", help="images per run, comma-separated (at most 70000)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--out", type=Path, default=Path("runs/training-memory"))
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose train runs (an older one: before)")
    p.add_argument("--label", default="after", help="the rows' label in the table and plot")
    p.add_argument("--export", action="store_true", help="export each run after training it: export's peak memory")
    p.add_argument("--export-only", action="store_true", help="export the runs already trained (no training)")
    p.add_argument("--export-formats", default="all", help="export's --formats (default all)")
    p.add_argument("--export-max-test-images", type=int, default=0, help="export's --max-test-images (0: all)")
    a = p.parse_args(argv)
    try:
        sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    except ValueError:
        print(f"error: --sizes {a.sizes!r} is not a comma-separated list of image counts, e.g. 3000,20000")
        return 2
    if not sizes or min(sizes) < 100:
        print(f"error: --sizes {a.sizes!r}: give image counts of at least 100, e.g. 3000,20000")
        return 2
    try:
        export = dict(export=a.export or a.export_only, export_formats=a.export_formats,
                      export_max_test_images=a.export_max_test_images)  # fmt: skip
        rows = run_benchmark(sizes, a.image_size, a.alpha, a.out, a.repo.resolve(), a.label,
                             train=not a.export_only, **export)  # fmt: skip
    except BenchError as e:
        print(f"error: {e}")
        return 2
    print(table(rows), end="")
    return 1 if any(r["error"] or r.get("export_error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
