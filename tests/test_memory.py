"""Training memory that does not grow with the dataset: the cache plan (train.cache), uint8 pipelines in memory, in
a file cache or streamed (train.pipeline), images/s and peak memory (train.throughput), and export decoding only the
calibration images it samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_settings
from PIL import Image

from train import cache as tc
from train.data import Split, load_resized

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int, size: int = 20, classes: int = 2) -> Split:
    """n distinct PNGs of random pixels, class by class (as scan_folder lists them), as a Split of paths."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(n):
        c = i * classes // n
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        p = folder / str(c) / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
        labels.append(c)
    return Split(labels=np.array(labels, dtype=np.int64), paths=paths)


def _plan(mode: str) -> tc.CachePlan:
    return tc.CachePlan(mode, 0.0, 1.0, "test")


def _epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_plan_by_budget_and_free_disk(tmp_path):
    gb = 20_000 * 96 * 96 * 3 / 1e9  # 0.553 GB decoded
    plan = tc.plan_cache(20_000, 96, budget_gb=1.0, run_dir=tmp_path / "run")
    assert plan.mode == "memory" and plan.gb == pytest.approx(gb)
    assert "20,000 images x 96x96x3 uint8 = 0.55 GB, within the 1 GB budget: cached in memory" in plan.line()
    plan = tc.plan_cache(20_000, 96, budget_gb=0.5, run_dir=tmp_path / "run", free_gb=50.0)
    assert plan.mode == "file" and "over the 0.5 GB budget" in plan.why and str(tmp_path / "run" / "cache") in plan.why
    plan = tc.plan_cache(20_000, 96, budget_gb=0.5, run_dir=tmp_path, free_gb=gb + tc.DISK_MARGIN_GB - 0.01)
    assert plan.mode == "stream" and "streamed" in plan.why
    # 25,000 photos at 224 px are 3.76 GB: over any default budget (at most BUDGET_CAP_GB)
    assert tc.plan_cache(25_000, 224, budget_gb=0, run_dir=tmp_path, free_gb=100).mode == "file"
    assert tc.plan_cache(25_000, 224, budget_gb=0, run_dir=tmp_path).budget_gb == tc.default_budget_gb()
    for asked in ("memory", "file", "stream"):  # asked for, whatever the budget says
        plan = tc.plan_cache(10, 96, budget_gb=100, run_dir=tmp_path, asked=asked)
        assert plan.mode == asked and f"(--cache {asked})" in plan.why
    assert tc.plan_cache(10, 96, budget_gb=0, run_dir=tmp_path, in_memory=True).mode == "held"


def test_default_budget_is_a_share_of_memory_with_a_cap(monkeypatch):
    monkeypatch.setattr(tc, "physical_memory_gb", lambda: 8.0)
    assert tc.default_budget_gb() == pytest.approx(8.0 * tc.BUDGET_SHARE)
    monkeypatch.setattr(tc, "physical_memory_gb", lambda: 1000.0)
    assert tc.default_budget_gb() == tc.BUDGET_CAP_GB
    assert tc.free_disk_gb(Path("/nonexistent/deeper/still")) > 0  # its nearest existing parent's


def test_each_worker_has_its_own_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tc.cache_folder(tmp_path) == tmp_path / "cache"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}, "task": {"type": "worker", "index": 1}}))
    assert tc.cache_folder(tmp_path) == tmp_path / "cache" / "worker1"
    tc.reset_cache_folder(tmp_path, _plan("file"))
    (tmp_path / "cache" / "worker1" / "train_0.lockfile").write_text("stale")
    tc.reset_cache_folder(tmp_path, _plan("file"))  # a stale lockfile goes, the folder is made again
    assert list((tmp_path / "cache" / "worker1").iterdir()) == []
    tc.remove_cache_folder(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_the_cache_holds_uint8_and_batches_are_float32(tmp_path):
    from train.pipeline import cached, decoded, make_dataset

    split = _images(tmp_path / "data", 10)
    for mode in ("memory", "file", "stream"):
        ds = cached(decoded(split, 24, training=False), _plan(mode), tmp_path / f"c-{mode}")
        assert ds.element_spec[0].dtype.name == "uint8", mode  # what the cache and the shuffle buffer hold
    out = make_dataset(split, 24, batch_size=4, training=False, cache=_plan("memory"))
    assert out.element_spec[0].dtype.name == "float32"
    x, y = _epoch(out)
    assert x.shape == (10, 24, 24, 3) and np.array_equal(y, split.labels)
    assert np.array_equal(x, np.stack([load_resized(p, 24) for p in split.paths]).astype(np.float32))


def test_file_cache_is_uint8_on_disk_and_read_back(tmp_path):
    from train.pipeline import make_dataset

    split = _images(tmp_path / "data", 12)
    run = tmp_path / "run"
    tc.reset_cache_folder(run, _plan("file"))
    prefix = tc.cache_folder(run) / "train"
    ds = make_dataset(split, 32, 5, training=True, seed=3, cache=_plan("file"), cache_path=prefix)
    first = _epoch(ds)
    shards = sorted(p.name for p in prefix.parent.iterdir())
    assert "train.index" in shards and not any("lockfile" in s for s in shards), shards
    size = sum(p.stat().st_size for p in prefix.parent.glob("train.data-*"))
    assert 12 * 32 * 32 * 3 <= size < 1.5 * 12 * 32 * 32 * 3, size  # float32 would be 4x
    for p in split.paths:  # the next epoch comes from the cache, not the files
        Path(p).unlink()
    second = _epoch(ds)
    assert sorted(map(bytes, first[0])) == sorted(map(bytes, second[0]))  # the same images, reshuffled
    tc.remove_cache_folder(run)
    assert not (run / "cache").exists()


def test_every_mode_gives_the_same_order_and_a_large_split_mixes_classes(tmp_path, monkeypatch):
    import train.pipeline as tp

    monkeypatch.setattr(tp, "SHUFFLE_BUFFER", 6)  # a split larger than the buffer: put in a random order first
    split = _images(tmp_path / "data", 24, classes=4)
    epochs = {}
    for mode in ("memory", "file", "stream"):
        tc.reset_cache_folder(tmp_path / mode, _plan(mode))
        ds = tp.make_dataset(
            split, 16, 6, True, seed=7, cache=_plan(mode), cache_path=tc.cache_folder(tmp_path / mode) / "t"
        )
        epochs[mode] = [_epoch(ds) for _ in range(2)]
    for mode in ("file", "stream"):
        for (xa, ya), (xb, yb) in zip(epochs["memory"], epochs[mode]):
            assert np.array_equal(ya, yb) and np.array_equal(xa, xb), mode
    y0, y1 = epochs["memory"][0][1], epochs["memory"][1][1]
    assert not np.array_equal(y0, y1)  # reshuffled every epoch
    assert len(set(y0[:6])) >= 3, y0  # class-sorted files, buffer of 6: without the first permutation, classes 0-1


@pytest.mark.slow
def test_an_interrupted_file_cache_does_not_break_the_next_run(tmp_path):
    """A process killed while writing the cache leaves tf.data's lockfile and a partial shard; reset_cache_folder
    (train calls it at every start) clears them, and the next pass writes a whole cache."""
    split = _images(tmp_path / "data", 40)
    (tmp_path / "paths.json").write_text(json.dumps(split.paths))
    code = f"""
import json, os, signal
from pathlib import Path
import numpy as np
from train.cache import CachePlan
from train.data import Split
from train.pipeline import make_dataset
paths = json.loads(Path({str(tmp_path / "paths.json")!r}).read_text())
split = Split(labels=np.zeros(len(paths), dtype=np.int64), paths=paths)
prefix = {str(tmp_path / "run" / "cache" / "val")!r}
ds = make_dataset(split, 16, 4, False, cache=CachePlan("file", 0, 1, "t"), cache_path=prefix)
for i, _ in enumerate(ds):
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
"""
    (tmp_path / "run" / "cache").mkdir(parents=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    left = sorted(x.name for x in (tmp_path / "run" / "cache").iterdir())
    assert "val_0.lockfile" in left and "val.index" not in left, left  # what the kill leaves
    from train.pipeline import make_dataset

    tc.reset_cache_folder(tmp_path / "run", _plan("file"))
    ds = make_dataset(split, 16, 4, False, cache=_plan("file"), cache_path=tmp_path / "run" / "cache" / "val")
    x, _ = _epoch(ds)
    assert len(x) == 40 and (tmp_path / "run" / "cache" / "val.index").is_file()


def test_throughput_counts_training_batches_only(monkeypatch):
    import train.throughput as tt

    now = [0.0]
    monkeypatch.setattr(tt.time, "perf_counter", lambda: now[0])
    m = tt.Throughput(n_images=100, batch_size=32)  # 4 batches an epoch, the last of 4 images
    for epoch in range(2):
        m.on_epoch_begin(epoch)
        for b in range(4):
            now[0] += 10.0 if (epoch, b) == (0, 0) else 1.0  # the first batch traces the graph
            m.on_train_batch_end(b)
        now[0] += 50.0  # validation: not counted
        m.on_epoch_end(epoch)
    r = m.report()
    assert r["images_per_s"] == pytest.approx(200 / (13 + 4), abs=0.1)
    assert r["images_per_s_steady"] == pytest.approx((100 - 3 * 32 + 100) / (1 + 4), abs=0.1)
    assert r["epochs"] == 2 and r["peak_rss_mb"] > 10
    assert "phase1: 12 images/s (steady 21), peak resident memory" in tt.describe("phase1", r)


def _fake_run(tmp_path: Path) -> Path:
    """A run folder with settings.json and splits.json over a folder of images: what export reads, untrained."""
    from train.data import save_splits, scan_folder
    from train.settings import TrainSettings, resolve, write_run_settings

    _images(tmp_path / "data", 60, classes=3)
    run = tmp_path / "run"
    run.mkdir()
    s = resolve(TrainSettings(data=str(tmp_path / "data"), out=str(run), image_size=32, alpha=0.35, seed=5))
    write_run_settings(run, s, "none")
    save_splits(scan_folder(tmp_path / "data", seed=5), run / "splits.json")
    return run


def test_export_decodes_only_the_calibration_images_it_samples(tmp_path, monkeypatch):
    import train.data as td
    from export.run import choose_calibration

    run = _fake_run(tmp_path)
    train_x, _, _ = td.load_split(run, "train")  # the old way: the whole split, then the seeded sample
    old = train_x[np.random.default_rng(5).permutation(len(train_x))[:10]]
    calls = []
    real = td.load_resized
    monkeypatch.setattr(td, "load_resized", lambda p, s: calls.append(p) or real(p, s))
    new = choose_calibration(run, seed=5, n=10)
    assert np.array_equal(new, old) and len(calls) == 10  # the same images, and only they were decoded
    x, y, _ = td.load_split(run, "test", indices=[2, 0])
    full_x, full_y, _ = td.load_split(run, "test")
    assert np.array_equal(x, full_x[[2, 0]]) and np.array_equal(y, full_y[[2, 0]])
    assert td.split_length(run, "train") == len(train_x)


def test_the_cache_settings_do_not_change_the_settings_hash():
    from train.settings import SettingsError, TrainSettings, resolve

    base = TrainSettings(data="digits")
    assert TrainSettings(data="digits", cache="file", cache_budget_gb=3.0).sha256() == base.sha256()  # still resumes
    with pytest.raises(SettingsError, match="--cache 'disk' is not supported: choose from auto, memory, file, stream"):
        resolve(TrainSettings(cache="disk"))
    with pytest.raises(SettingsError, match="--cache-budget-gb -1 is negative"):
        resolve(TrainSettings(cache_budget_gb=-1))


@pytest.mark.slow
def test_a_file_cached_run_reports_throughput_and_leaves_no_cache(color_folder, tmp_path, monkeypatch):
    """A whole run with --cache file: the cache is in RUN/cache/ as uint8 while it trains, gone at the end, and
    metrics.json has images/s per phase and the peak resident memory."""
    import train.run as tr

    seen = {}
    real = tr.remove_cache_folder

    def remove(run):
        seen.update({p.name: p.stat().st_size for p in (run / "cache").iterdir()})
        real(run)

    monkeypatch.setattr(tr, "remove_cache_folder", remove)
    run = tmp_path / "r"
    s = tiny_settings(color_folder, run, epochs=2, fine_tune_epochs=1, qat_epochs=1, cache="file")
    m = tr.run_training(s)
    assert {"train.index", "val.index", "test.index"} <= set(seen), seen
    n = sum(m["n_images"].values())
    assert n * 32 * 32 * 3 <= sum(v for k, v in seen.items() if ".data-" in k) < 1.5 * n * 32 * 32 * 3  # uint8
    assert not (run / "cache").exists()
    assert m["data_cache"]["mode"] == "file" and "(--cache file)" in m["data_cache"]["why"]
    for ph in ("phase1", "phase2", "phase3"):
        assert m["images_per_s"][ph] > 0 and m["peak_rss_mb_by_phase"][ph] > 100, m
    assert m["images_per_s_steady"]["phase1"] > 0  # 2 epochs: more batches than the warm-up
    assert m["peak_rss_mb"] >= max(m["peak_rss_mb_by_phase"].values())
    assert m == json.loads((run / "metrics.json").read_text())
