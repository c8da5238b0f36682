"""python -m benchmarks.training_memory: training's peak memory, wall time and images/s against the dataset's size.

python -m benchmarks.training_memory --sizes 3000,20000,60000 --image-size 96 --alpha 0.35   # runs/training-memory/
python -m benchmarks.training_memory --sizes 3000,20000 --repo /tmp/older-checkout --label before

A benchmark, not a test: it trains one model per size. Each size is a folder of Fashion-MNIST class sub-folders (PNG,
balanced, seeded; Debian's dataset-fashion-mnist, 70,000 real product photos), written once under OUT/data and reused.
Each run is `python -m train --data D --weights none --epochs 1 --fine-tune-epochs 1 --qat-epochs 1 --force` (one
epoch a phase), run by the checkout --repo names as a child process; its peak resident memory is that child's own
ru_maxrss (os.wait4), so TensorFlow, the pipeline and the cache all count. Rows join OUT/training_memory.json, keyed
by (label, images, image size, alpha), and training_memory.{md,csv,png} are written again from all of them.
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
          "images_per_s_phase2", "images_per_s_phase3", "data_cache", "load_before", "exit_code", "error")  # fmt: skip


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


def train_once(repo: Path, data: Path, run: Path, image_size: int, alpha: float, log_file: Path) -> dict:
    """One `python -m train` of repo in a child process: its exit code, wall time, peak RSS and metrics.json's rates."""
    cmd = [sys.executable, "-m", "train", "--data", str(data), "--out", str(run), "--image-size", str(image_size),
           "--alpha", f"{alpha:g}", *TRAIN_FLAGS]  # fmt: skip
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
    child.returncode = os.waitstatus_to_exitcode(status)
    row = {"wall_s": round(time.monotonic() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "exit_code": child.returncode, "error": ""}  # fmt: skip
    if child.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()
        row["error"] = first_line(tail[-1] if tail else f"exit code {child.returncode}")[:200]
        return row
    metrics = json.loads((run / "metrics.json").read_text())
    rates = metrics.get("images_per_s_steady") or {}
    for phase in ("phase1", "phase2", "phase3"):
        row[f"images_per_s_{phase}"] = rates.get(phase)
    cache = metrics.get("data_cache") or {}
    row["data_cache"] = cache.get("mode", "") if isinstance(cache, dict) else str(cache)
    return row


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
    lines = ["| label | images | size | peak RSS | wall time | cache | images/s phase 1 / 2 / 3 | load before |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        rates = " / ".join("-" if r.get(f"images_per_s_phase{i}") is None else f"{r[f'images_per_s_phase{i}']:.0f}"
                           for i in (1, 2, 3))  # fmt: skip
        m, s = divmod(int(r["wall_s"]), 60)
        rss = f"{r['peak_rss_mb'] / 1024:.2f} GB" + ("" if not r.get("error") else f" (failed: {r['error']})")
        lines.append(f"| {r['label']} | {r['images']:,} | {r['image_size']} | {rss} | {m} min {s} s | "
                     f"{r.get('data_cache') or '-'} | {rates} | {r.get('load_before', '-')} |")  # fmt: skip
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


def run_benchmark(sizes: list[int], image_size: int, alpha: float, out: Path, repo: Path, label: str) -> list[dict]:
    """Trains once per size with repo's train and writes the outputs after each (an interrupted run keeps the rest)."""
    if not (repo / "train" / "__main__.py").is_file():
        raise BenchError(f"--repo {repo} has no train/__main__.py: give a checkout of this project")
    for sub in ("data", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    done = []
    for n in sizes:
        data = write_folder(out / "data", n)
        row = {"label": label, "images": n, "image_size": image_size, "alpha": alpha,
               "load_before": round(os.getloadavg()[0], 2)}  # fmt: skip
        name = f"{label}-{image_size}-{n}"
        row |= train_once(repo, data, out / "runs" / name, image_size, alpha, out / "logs" / f"{name}.log")
        done.append(row)
        log(f"{name}: peak RSS {row['peak_rss_mb'] / 1024:.2f} GB, {row['wall_s']:.0f} s"
            + (f", FAILED: {row['error']}" if row["error"] else ""))  # fmt: skip
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
        rows = run_benchmark(sizes, a.image_size, a.alpha, a.out, a.repo.resolve(), a.label)
    except BenchError as e:
        print(f"error: {e}")
        return 2
    print(table(rows), end="")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
