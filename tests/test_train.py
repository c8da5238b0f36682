"""Training: outputs of a real (tiny) run, resume after an interruption, settings guards, backbones, and the steps
of a run that can be checked without training (settings.json written once, history, warm-up)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_settings, write_folder
from PIL import Image


@pytest.mark.slow
def test_run_writes_every_output(trained_run: Path):
    outputs = ("settings.json", "labels.txt", "model_float.keras", "model_qat.h5", "history.csv", "metrics.json",
               "learning_curves.png", "confusion_matrix.png", "samples.png", "splits.json", "skipped.txt")  # fmt: skip
    for name in outputs:
        assert (trained_run / name).is_file(), name
    assert not list(trained_run.rglob("*.partial*")), "a temporary file was left behind"
    assert (trained_run / "labels.txt").read_text().split() == ["blue", "green", "red"]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["weights_used"] == "none" and metrics["transfer_learning"] is False
    # The data is made easy: a model that does not learn it has a bug.
    assert metrics["test_top1_float"] >= 0.9
    assert metrics["test_top1_qat"] >= metrics["test_top1_float"] - 0.05
    # QAT starts from ranges calibrated on the float model, not tfmot's +-6
    assert metrics["qat_start_agreement"] >= 0.9 > metrics["qat_start_agreement_uncalibrated"], metrics
    assert set(metrics["per_class_float"]) == {"blue", "green", "red"}
    assert {"precision", "recall", "f1-score"} <= set(metrics["per_class_float"]["red"])
    settings = json.loads((trained_run / "settings.json").read_text())
    assert settings["weights_used"] == "none" and settings["image_size"] == 32
    assert settings["settings_sha256"] == metrics["settings_sha256"]


@pytest.mark.slow
def test_history_has_all_three_phases(trained_run: Path):
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    phases = [r["phase"] for r in rows]
    assert phases[0] == "phase1" and phases[-1] == "phase3" and "phase2" in phases
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows))), "epochs must run on across phases"
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)


@pytest.mark.slow
def test_plots_are_real_images(trained_run: Path):
    for name in ("learning_curves.png", "confusion_matrix.png", "samples.png"):
        with Image.open(trained_run / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5, f"{name} is blank"


@pytest.mark.slow
def test_unreadable_file_is_skipped_and_listed(trained_run: Path):
    lines = (trained_run / "skipped.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[0].endswith("red/broken.jpg")
    assert "notes.txt" not in (trained_run / "splits.json").read_text()


@pytest.mark.slow
def test_latest_points_at_the_newest_run(trained_run: Path):
    latest = trained_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == trained_run.resolve()


@pytest.mark.slow
def test_rerun_of_a_finished_run_does_not_train_again(trained_run: Path, color_folder, tmp_path, capsys):
    from train.run import run_training

    run = tmp_path / "tiny"  # a copy: the session run is shared, and a rerun relinks the "latest" beside it
    shutil.copytree(trained_run, run, symlinks=True)
    before = (run / "model_float.keras").stat().st_mtime_ns
    metrics = run_training(tiny_settings(color_folder, run))
    assert "already complete" in capsys.readouterr().out
    assert (run / "model_float.keras").stat().st_mtime_ns == before
    assert metrics == json.loads((run / "metrics.json").read_text())
    assert (tmp_path / "latest").resolve() == run.resolve()


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(trained_run: Path, color_folder):
    from train.run import RunError, run_training

    with pytest.raises(RunError, match=r"other settings.*epochs.*--force"):
        run_training(tiny_settings(color_folder, trained_run, epochs=9))


def test_cli_reports_bad_data_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2
    assert r.stdout.strip().startswith("error: ") and "nope is not a folder" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_unknown_backbone_is_refused():
    from train.settings import SettingsError, TrainSettings, resolve

    with pytest.raises(SettingsError, match="choose from mobilenetv2, vgg16"):
        resolve(TrainSettings(backbone="resnet"))


def test_digits_defaults_to_a_small_fast_model():
    from train.settings import TrainSettings, resolve

    s = resolve(TrainSettings())
    assert (s.image_size, s.alpha, s.flip, s.out) == (96, 0.35, False, "runs/digits-mobilenetv2-a0.35-s96")
    assert resolve(TrainSettings(data="/x/flowers")).image_size == 224


def _offline(monkeypatch):
    """Make every Keras weights download fail as it does without internet."""
    import tf_keras.src.applications.mobilenet_v2 as mnv2
    import tf_keras.src.applications.vgg16 as vgg

    def fail(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name or service not known")

    monkeypatch.setattr(mnv2.data_utils, "get_file", fail)
    monkeypatch.setattr(vgg.data_utils, "get_file", fail)


def test_imagenet_unavailable_raises_weights_unavailable(monkeypatch):
    from train.model import WeightsUnavailable, build_model

    _offline(monkeypatch)
    with pytest.raises(WeightsUnavailable, match="URL fetch failure"):
        build_model(3, 32, alpha=0.35, weights="imagenet")


def test_local_weights_file_is_loaded(tmp_path):
    import tf_keras as keras

    from train.model import build_model
    from train.settings import SettingsError

    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    base.save_weights(str(tmp_path / "backbone.h5"))
    model = build_model(3, 32, alpha=0.35, weights=str(tmp_path / "backbone.h5"))
    want = base.get_layer("Conv1").get_weights()[0]
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], want)
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_model(3, 32, alpha=0.35, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(SettingsError, match=r"backbone\.h5 does not fit mobilenetv2 \(alpha 1\).*--alpha"):
        build_model(3, 32, alpha=1.0, weights=str(tmp_path / "backbone.h5"))


def test_fine_tune_freezes_bottom_and_batchnorm():
    import tf_keras as keras

    from train.model import backbone_layers, build_model, set_trainable

    model = build_model(3, 32, alpha=0.35, weights="none")
    set_trainable(model, "head", "mobilenetv2", pretrained=True)
    assert not any(layer.trainable for layer in backbone_layers(model))
    assert model.get_layer("head_probs").trainable
    msg = set_trainable(model, "fine_tune", "mobilenetv2", "block_13_expand", pretrained=True)
    layers = backbone_layers(model)
    start = [layer.name for layer in layers].index("block_13_expand")
    assert "from block_13_expand" in msg
    assert not any(layer.trainable for layer in layers[:start])
    assert any(layer.trainable for layer in layers[start:])
    assert not any(layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization))


def test_settings_json_is_written_once_after_the_model_is_built(tmp_path, monkeypatch):
    """Offline, --weights imagenet falls back to random init: settings.json, written once, says so."""
    import train.run as tr
    from train.runfolder import is_training_run
    from train.settings import load_run_settings, resolve

    _offline(monkeypatch)
    data = write_folder(tmp_path / "data", n_per_class=6)
    s = tiny_settings(data, tmp_path / "run", weights="imagenet")
    writes, existed_at_build = [], []
    real_build, real_write = tr.build, tr.write_run_settings

    def build(*a):
        existed_at_build.append((tmp_path / "run" / "settings.json").exists())
        return real_build(*a)

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop

    monkeypatch.setattr(tr, "build", build)
    monkeypatch.setattr(tr, "write_run_settings", lambda *a: writes.append(a) or real_write(*a))
    monkeypatch.setattr(tr, "train_float", stop)  # everything up to phase 1, then stop
    with pytest.raises(Stop):
        tr.run_training(s)
    assert existed_at_build == [False] and len(writes) == 1
    doc = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert doc["weights_used"] == "none" and doc["weights"] == "imagenet"
    assert doc["settings_sha256"] == resolve(s).sha256() and is_training_run(tmp_path / "run")
    rs = load_run_settings(tmp_path / "run")
    assert rs.weights_used == "none" and rs.settings == resolve(s)
    assert (tmp_path / "run" / "labels.txt").read_text().split() == ["blue", "green", "red"]


def test_settings_json_of_an_older_version_still_loads_and_matches(tmp_path):
    """Before max_steps_per_epoch went (it was always 0) and weights_used was recorded: same hash, asked-for weights."""
    import hashlib

    from train.runfolder import previous_run
    from train.settings import load_run_settings, resolve

    s = resolve(tiny_settings(tmp_path / "data", tmp_path / "run"))
    old = dict(s.to_dict(), max_steps_per_epoch=0)
    for newer in ("cache", "cache_budget_gb"):  # not written before the uint8 cache came, and never hashed
        del old[newer]
    hashed = {k: v for k, v in old.items() if k not in ("out", "strategy", "logical_cpus", "cache_dir")}
    old["settings_sha256"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text(json.dumps(old))
    assert s.sha256() == old["settings_sha256"]
    rs = load_run_settings(tmp_path / "run")
    assert rs.settings == s and rs.weights_used == "none"
    assert previous_run(s, force=False) is False  # the same run, unfinished: it resumes, it is not refused


def test_history_keeps_the_last_of_a_resumed_epoch_and_the_phase_handovers(tmp_path):
    from train.report import first_epoch_accuracy, history_rows, write_history

    logs = tmp_path / "logs"
    logs.mkdir()
    head = "epoch,accuracy,loss,val_accuracy,val_loss\n"
    (logs / "phase1.csv").write_text(head + "0,0.5,1.0,0.5,1.0\n1,0.6,0.9,0.6,0.9\n1,0.8,0.7,0.7,0.8\n")  # 1 resumed
    (logs / "phase2.csv").write_text(head + "2,0.75,0.8,0.7,0.8\n3,0.9,0.5,0.8,0.6\n")
    rows = history_rows(tmp_path)
    assert [(r["phase"], r["epoch"], r["accuracy"]) for r in rows] == [
        ("phase1", "0", "0.5"), ("phase1", "1", "0.8"), ("phase2", "2", "0.75"), ("phase2", "3", "0.9")
    ]  # fmt: skip
    assert first_epoch_accuracy(rows) == {"phase2": {"previous_last": 0.8, "first": 0.75, "drop_points": 5.0}}
    write_history(rows, tmp_path / "history.csv")
    with open(tmp_path / "history.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["phase", "epoch", "accuracy", "loss", "val_accuracy", "val_loss"] and len(written) == 4


def test_warmup_is_a_tenth_of_the_phase_at_most_an_epoch():
    from train.phases import FitContext

    ctx = FitContext(run=Path("r"), strategy=None, train=None, val=None, test=None, class_weight=None, patience=5,
                     steps_per_epoch=20)  # fmt: skip
    assert [ctx.warmup_steps(e) for e in (1, 3, 8, 30)] == [2, 6, 16, 20]
    assert FitContext(**{**ctx.__dict__, "steps_per_epoch": 2}).warmup_steps(1) == 1  # never 0 steps


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(color_folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C in phase 1 epoch 2, then the same command again: it resumes at epoch 2, not at 0.

    It also asks for ImageNet weights while offline: training must go on from random init and say so.
    """
    import tf_keras as keras

    import train.phases
    import train.run as tr

    _offline(monkeypatch)
    seen = []

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1 and not getattr(Interrupt, "fired", False):
                Interrupt.fired = True
                raise KeyboardInterrupt

    real = train.phases.callbacks
    monkeypatch.setattr(train.phases, "callbacks", lambda run, phase: real(run, phase) + [Interrupt()])
    s = tiny_settings(color_folder, tmp_path / "r", weights="imagenet", epochs=3, patience=5)
    with pytest.raises(SystemExit) as e:
        tr.run_training(s)
    assert e.value.code == 130
    out = capsys.readouterr().out
    assert "re-run the same command to resume" in out and "RANDOM INIT" in out
    assert not (tmp_path / "r" / "metrics.json").exists()
    seen.clear()
    metrics = tr.run_training(s)
    assert seen[0] == 2, f"resumed at epoch {seen[0]}, expected 2"
    assert metrics["weights_used"] == "none" and metrics["weights_requested"] == "imagenet"
    assert metrics["epochs_run"]["phase1"] == 3
    assert not (tmp_path / "r" / "backup").exists()


@pytest.mark.slow
def test_mirrored_strategy_with_a_pretrained_backbone(color_folder, tmp_path, pretrained_backbone):
    """MirroredStrategy over two logical CPUs, on the transfer-learning path (frozen backbone, then fine-tuning)
    from the offline pretrained backbone, since ImageNet weights cannot be downloaded here."""
    r = subprocess.run(
        [sys.executable, "-m", "train", "--data", str(color_folder), "--out", str(tmp_path / "m"), "--image-size", "32",
         "--alpha", "0.35", "--weights", str(pretrained_backbone), "--epochs", "2", "--fine-tune-epochs", "1",
         "--qat-epochs", "1", "--batch-size", "16", "--strategy", "mirrored", "--logical-cpus", "2",
         "--fine-tune-from", "block_15_expand"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "strategy: mirrored, 2 replica(s)" in r.stdout
    assert "backbone frozen, head trains" in r.stdout and "(from block_15_expand), BatchNorm frozen" in r.stdout
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["transfer_learning"] is True and metrics["weights_used"] == str(pretrained_backbone)
    assert metrics["test_top1_float"] >= 0.7, metrics["test_top1_float"]  # 3 epochs, chance 0.33; measured 0.83
    assert metrics["qat_start_agreement"] >= 0.9, metrics


@pytest.mark.slow
def test_vgg16_backbone_trains_quantizes_and_converts(tmp_path):
    import tf_keras as keras

    from export.runtime import predict
    from export.tflite import convert_int8_qat
    from train.model import build_model
    from train.qat import quantize_model

    model = build_model(3, 32, backbone="vgg16", weights="none")
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    want = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(pre.predict(x, verbose=0), want, atol=1e-3)
    qat = quantize_model(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    convert_int8_qat(qat, x.astype(np.uint8), tmp_path / "vgg.tflite")
    probs = predict(tmp_path / "vgg.tflite", x.astype(np.uint8))
    assert probs.shape == (8, 3) and np.allclose(probs.sum(1), 1, atol=0.05)
