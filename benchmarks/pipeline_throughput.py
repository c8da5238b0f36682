"""python -m benchmarks.pipeline_throughput: training images/s fed by each data cache mode, same model, same images.

python -m benchmarks.pipeline_throughput --data runs/training-memory/data/fashion-3000 --image-size 96
python -m benchmarks.pipeline_throughput --data DIR --before /tmp/older-checkout    # + that checkout's pipeline

A benchmark, not a test. Each arm trains the same model (make train's defaults at --image-size: MobileNetV2,
--alpha, the camera augmentation layers, weights none) for --epochs epochs on the training split of --data, fed by
one pipeline: `memory`, `file` and `stream` are train.cache's modes (`python -m train --cache MODE`); `before` is
the make_dataset of another checkout's train/pipeline.py (e.g. the float32 in-memory cache the uint8 cache replaced).
Every arm runs in a fresh process, the arms take turns (--repeats rounds), and each reports the steady images/s
(every epoch after the first: the first fills the cache) and the CPU time per image, whose ratio to the first arm's
is the comparison that holds when the machine is shared. Rows go to OUT/pipeline_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from contracts.atomic import write_json, write_text
from contracts.console import first_line, log

REPO = Path(__file__).resolve().parents[1]
MODES = ("memory", "file", "stream")


def measure_arm(arm: str, data: Path, image_size: int, alpha: float, epochs: int, work: Path, before: Path | None):
    """One arm in this process: {"arm", "images", "images_per_s" per epoch, "cpu_ms_per_image" per epoch, ...}."""
    import importlib.util

    import tf_keras as keras

    from train.data import scan_folder
    from train.model import build_model
    from train.run import model_kwargs
    from train.settings import TrainSettings, resolve
    from train.throughput import Throughput, peak_rss_mb

    s = resolve(TrainSettings(data=str(data), image_size=image_size, alpha=alpha, weights="none"))
    ds = scan_folder(data, s.val_split, s.test_split, s.seed)
    split = ds.splits["train"]
    keras.utils.set_random_seed(s.seed)
    if arm == "before":
        spec = importlib.util.spec_from_file_location("before_pipeline", before / "train" / "pipeline.py")
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        train = old.make_dataset(split, image_size, s.batch_size, True, s.seed)
    else:
        from train.cache import CachePlan, cache_folder, reset_cache_folder
        from train.pipeline import make_dataset

        plan = CachePlan(arm, 0.0, 0.0, f"{arm} (forced by the benchmark)")
        reset_cache_folder(work, plan)
        train = make_dataset(split, image_size, s.batch_size, True, s.seed, plan, cache_folder(work) / "train")
    model = build_model(weights="none", **model_kwargs(s, len(ds.class_names)))  # make train's model, untrained
    model.compile(keras.optimizers.Adam(s.learning_rate), "sparse_categorical_crossentropy")
    rates, cpu = [], []

    class Meter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.meter = Throughput(len(split), s.batch_size)
            self.meter.on_epoch_begin(epoch)
            r = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu = r.ru_utime + r.ru_stime

        def on_train_batch_end(self, batch, logs=None):
            self.meter.on_train_batch_end(batch)

        def on_epoch_end(self, epoch, logs=None):
            self.meter.on_epoch_end(epoch)
            rates.append(round(self.meter.report()["images_per_s"], 1))
            r = resource.getrusage(resource.RUSAGE_SELF)
            cpu.append(round((r.ru_utime + r.ru_stime - self.cpu) / len(split) * 1000, 2))

    model.fit(train, epochs=epochs, verbose=0, callbacks=[Meter()])
    load = round(os.getloadavg()[0], 2)
    return {"arm": arm, "images": len(split), "image_size": image_size, "images_per_s": rates,
            "cpu_ms_per_image": cpu, "peak_rss_mb": peak_rss_mb(), "load_after": load}  # fmt: skip


def steady(row: dict, key: str) -> float:
    """The mean over every epoch after the first (the first fills the cache and traces the graph)."""
    later = row[key][1:] or row[key]
    return sum(later) / len(later)


def table(rows: list[dict]) -> str:
    """Per arm: steady images/s and CPU ms per image (means over the rounds), each against the first arm's."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mean = {a: {k: sum(steady(r, k) for r in rows if r["arm"] == a) / sum(r["arm"] == a for r in rows)
                for k in ("images_per_s", "cpu_ms_per_image")} for a in arms}  # fmt: skip
    base = mean[arms[0]]
    lines = [f"| arm | rounds | steady images/s | vs {arms[0]} | CPU ms per image | vs {arms[0]} | peak RSS |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for a in arms:
        m, n = mean[a], sum(r["arm"] == a for r in rows)
        rss = max(r["peak_rss_mb"] for r in rows if r["arm"] == a) / 1024
        lines.append(f"| {a} | {n} | {m['images_per_s']:.1f} | {m['images_per_s'] / base['images_per_s'] - 1:+.1%} | "
                     f"{m['cpu_ms_per_image']:.2f} | {m['cpu_ms_per_image'] / base['cpu_ms_per_image'] - 1:+.1%} | "
                     f"{rss:.2f} GB |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a folder of class sub-folders")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--epochs", type=int, default=3, help="epochs per arm (the first is left out of the steady rate)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of all arms, taking turns")
    p.add_argument("--arms", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)} and before")
    p.add_argument("--before", type=Path, help="a checkout whose train/pipeline.py the `before` arm uses")
    p.add_argument("--out", type=Path, default=Path("runs/pipeline-throughput"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this arm in this process, print its row
    a = p.parse_args(argv)
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    if a.before is not None and "before" not in arms:
        arms.insert(0, "before")
    bad = [x for x in arms if x not in (*MODES, "before")]
    if bad or not arms:
        print(f"error: --arms {a.arms!r}: give some of {', '.join(MODES)}, before")
        return 2
    if "before" in arms and (a.before is None or not (a.before / "train" / "pipeline.py").is_file()):
        print(f"error: the before arm needs --before CHECKOUT with train/pipeline.py (got {a.before})")
        return 2
    if not a.data.is_dir():
        print(f"error: --data {a.data} is not a folder: give a folder of class sub-folders")
        return 2
    if a.epochs < 2:
        print("error: --epochs must be at least 2 (the first epoch fills the cache and is left out)")
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    if a.one:
        row = measure_arm(a.one, a.data, a.image_size, a.alpha, a.epochs, a.out / f"work-{a.one}", a.before)
        print("ROW " + json.dumps(row), flush=True)
        return 0
    rows = []
    for round_ in range(a.repeats):
        for arm in arms:
            log(f"round {round_ + 1}/{a.repeats}: {arm}")
            cmd = [sys.executable, "-m", "benchmarks.pipeline_throughput", "--one", arm, "--data", str(a.data),
                   "--image-size", str(a.image_size), "--alpha", f"{a.alpha:g}", "--epochs", str(a.epochs),
                   "--out", str(a.out)] + (["--before", str(a.before)] if a.before else [])  # fmt: skip
            p_ = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            found = [line[4:] for line in p_.stdout.splitlines() if line.startswith("ROW ")]
            if p_.returncode != 0 or not found:
                print(f"error: the {arm} arm failed ({p_.returncode}): {first_line(p_.stderr.strip()[-500:])}")
                return 1
            rows.append(json.loads(found[0]))
            log(f"  {arm}: {rows[-1]['images_per_s']} images/s, {rows[-1]['cpu_ms_per_image']} CPU ms/image")
            write_json(a.out / "pipeline_throughput.json", rows)
            write_text(a.out / "pipeline_throughput.md", table(rows))
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
