"""Shared fixtures: a tiny, easy dataset and one run trained and exported from it, once per session.

The model is small (32x32, alpha 0.35, from random init) and the data is made to be learnable in
seconds (the class is the dominant colour), so the parity thresholds mean something.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue")


# The test files that take longest, longest first (measured: tens of seconds to minutes of CPU each). `make test`
# runs files in parallel processes (pytest-xdist --dist loadfile --no-loadscope-reorder), each taking the next file in
# collection order when it is nearly done with its own: starting with the longest files keeps one long file from
# running alone at the end. pytest-randomly's shuffle still decides the order of the other files and of the tests
# in every file.
LONGEST_FIRST = ("test_transfer.py", "test_multiworker.py", "test_train.py", "test_bench.py", "test_sweep.py",
                 "test_sweep_distributed.py", "test_edge_collect.py", "test_memory.py", "test_augment.py",
                 "test_export.py", "test_runfolder.py")  # fmt: skip


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: keeps the shuffle within


def once_per_run(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """build(folder) once per test run, even when pytest-xdist splits the run between processes (`make test`):
    every worker's temporary folder lies in one shared parent, where the first worker to ask builds under a file lock
    while the others wait, then reuse its result. A build that fails is tried again by the next worker that asks."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent
    done = shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return Path(done.read_text())
        folder = shared / name
        if folder.exists():  # a failed build's leftovers
            import shutil

            shutil.rmtree(folder)
        folder.mkdir()
        result = build(folder)
        done.write_text(str(result))
        return result


def make_color_images(n_per_class: int, size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images whose class is the dominant channel, with noise, brightness and a random blob."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(len(CLASSES)):
        for _ in range(n_per_class):
            base = rng.uniform(20, 90, size=3)
            base[c] = rng.uniform(170, 250)
            img = base + rng.normal(0, 18, size=(size, size, 3))
            y, x = rng.integers(0, size - 12, 2)
            img[y : y + 12, x : x + 12] += rng.uniform(-40, 40)  # clutter that carries no class information
            imgs.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(imgs), np.array(labels)


def write_folder(root: Path, n_per_class: int = 150, size: int = 40, seed: int = 0) -> Path:
    from PIL import Image

    imgs, labels = make_color_images(n_per_class, size, seed)
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        d = root / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / (f"{i:04d}.png" if i % 2 else f"{i:04d}.jpg"), quality=95)
    # What real folders contain: a file named like an image that is not one, and files that are not data.
    (root / CLASSES[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / CLASSES[1] / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory) -> Path:
    """The run's one folder of colour images (shared like trained_run, whose settings.json names it)."""
    return once_per_run(tmp_path_factory, "colors", lambda folder: write_folder(folder / "data"))


def tiny_settings(data: Path, out: Path, **kw):
    from train.settings import TrainSettings

    base = dict(data=str(data), out=str(out), image_size=32, alpha=0.35, weights="none", batch_size=16,
                epochs=10, fine_tune_epochs=2, qat_epochs=2, patience=4, learning_rate=3e-3)  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


@pytest.fixture(scope="session")
def trained_run(color_folder, tmp_path_factory) -> Path:
    """A finished training run (float + QAT models, plots, metrics) in a temporary runs/ folder."""
    from train.run import run_training

    def build(folder: Path) -> Path:
        run_training(tiny_settings(color_folder, folder / "tiny"))
        return folder / "tiny"

    return once_per_run(tmp_path_factory, "trained_run", build)


@pytest.fixture(scope="session")
def exported_run(trained_run, tmp_path_factory) -> Path:
    """trained_run with every format exported and the manifest written."""
    from export.run import export_run
    from export.settings import ExportSettings

    def build(_: Path) -> Path:
        result = export_run(ExportSettings(run=str(trained_run), calibration_images=64))
        assert not result["failed"], result["failed"]
        return trained_run

    return once_per_run(tmp_path_factory, "exported_run", build)


@pytest.fixture(scope="session")
def edge_run(request, tmp_path_factory) -> Path:
    """The tiny edge model's run folder (tests/edge_model.py: tflite_fp32, tflite_int8, onnx_fp32 and a manifest),
    the session's own copy of the committed build: nothing is trained. Copy it before changing it."""
    from edge_model import session_run

    return session_run(request, tmp_path_factory)


@pytest.fixture(scope="session")
def int8(edge_run) -> Path:
    """edge_run's full-integer .tflite (uint8 input and output, int8 inside)."""
    return edge_run / "export" / "tflite_int8.tflite"


# The offline pretrained backbone every transfer-learning test starts from: MobileNetV2 0.35 trained on real
# Fashion-MNIST photos at 48 px (about 2 minutes on 2 cores the first time, then cached in
# ~/.cache/edge-toolkit/backbones like a user's). Never random weights: those transfer nothing.
BACKBONE_RECIPE = dict(alpha=0.35, image_size=48, images=12_000, epochs=5)


def _ensure_fashion_mnist() -> None:
    """Installs Debian's dataset-fashion-mnist when it is missing and we may (CI runs as root)."""
    from train.pretrain import FASHION_DIR, FASHION_FILES

    if all((Path(FASHION_DIR) / f).is_file() for pair in FASHION_FILES.values() for f in pair):
        return
    from system_packages import apt_install, can_install

    if not can_install():
        pytest.fail("Fashion-MNIST is missing: run `sudo apt-get install dataset-fashion-mnist`")
    error = apt_install("dataset-fashion-mnist")
    if error:
        pytest.fail(error)


@pytest.fixture(scope="session")
def pretrained_backbone(tmp_path_factory) -> Path:
    """A no-top MobileNetV2 (alpha 0.35) weights file pretrained on Fashion-MNIST, as `--weights` takes it."""
    from train.pretrain import PretrainSettings, pretrain_backbone

    def build(_: Path) -> Path:
        _ensure_fashion_mnist()
        return pretrain_backbone(PretrainSettings(**BACKBONE_RECIPE))

    return once_per_run(tmp_path_factory, "pretrained_backbone", build)


@pytest.fixture(scope="session")
def mediapipe_python() -> Path:
    """The python of a cached venv with MediaPipe Tasks (tests/mediapipe_env.py; minutes to build the first time).
    Run snippets in it with mediapipe_env.run_in_mediapipe()."""
    import mediapipe_env

    try:
        return mediapipe_env.mediapipe_python()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
