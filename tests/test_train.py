"""Training: outputs of a real (tiny) run, resume after an interruption, settings guards, backbones."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_settings
from PIL import Image


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


def test_history_has_all_three_phases(trained_run: Path):
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    phases = [r["phase"] for r in rows]
    assert phases[0] == "phase1" and phases[-1] == "phase3" and "phase2" in phases
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows))), "epochs must run on across phases"
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)


def test_plots_are_real_images(trained_run: Path):
    for name in ("learning_curves.png", "confusion_matrix.png", "samples.png"):
        with Image.open(trained_run / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5, f"{name} is blank"


def test_unreadable_file_is_skipped_and_listed(trained_run: Path):
    lines = (trained_run / "skipped.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[0].endswith("red/broken.jpg")
    assert "notes.txt" not in (trained_run / "splits.json").read_text()


def test_latest_points_at_the_newest_run(trained_run: Path):
    latest = trained_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == trained_run.resolve()


def test_rerun_of_a_finished_run_does_not_train_again(trained_run: Path, color_folder, capsys):
    from train.run import run_training

    before = (trained_run / "model_float.keras").stat().st_mtime_ns
    metrics = run_training(tiny_settings(color_folder, trained_run))
    assert "already complete" in capsys.readouterr().out
    assert (trained_run / "model_float.keras").stat().st_mtime_ns == before
    assert metrics == json.loads((trained_run / "metrics.json").read_text())


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


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(color_folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C in phase 1 epoch 2, then the same command again: it resumes at epoch 2, not at 0.

    It also asks for ImageNet weights while offline: training must go on from random init and say so.
    """
    import tf_keras as keras

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

    real = tr._callbacks
    monkeypatch.setattr(tr, "_callbacks", lambda run, phase: real(run, phase) + [Interrupt()])
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
