"""Transfer learning from a real pretrained backbone (made offline from Fashion-MNIST), through QAT to int8.

No test here starts from random weights that call themselves pretrained: the backbone fixture is trained on
another task, and the first test proves its features carry over before the others rely on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKBONE_RECIPE, REPO, once_per_run

SIZE = BACKBONE_RECIPE["image_size"]


def _probe_accuracy(weights, size: int = SIZE) -> float:
    """Linear probe: logistic regression on the frozen backbone's pooled digits features, scored on val."""
    import tf_keras as keras
    from sklearn.linear_model import LogisticRegression

    from train.data import load_digits

    ds = load_digits(size)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, alpha=0.35, pooling="avg",
                                          weights=None if weights is None else str(weights))  # fmt: skip

    def feats(x):
        return base.predict(x.astype(np.float32) / 127.5 - 1.0, batch_size=128, verbose=0)

    clf = LogisticRegression(max_iter=2000).fit(feats(ds.splits["train"].images), ds.splits["train"].labels)
    return float(clf.score(feats(ds.splits["val"].images), ds.splits["val"].labels))


@pytest.mark.slow
def test_backbone_features_transfer_to_digits(pretrained_backbone: Path):
    """The fixture is what it claims: features learned on clothes separate handwritten digits; random ones do not."""
    sidecar = json.loads(pretrained_backbone.with_suffix(".json").read_text())
    assert sidecar["task"] == "fashion-mnist" and sidecar["fashion_test_top1"] >= 0.7, sidecar
    pretrained, scratch = _probe_accuracy(pretrained_backbone), _probe_accuracy(None)
    assert pretrained >= 0.7, pretrained  # measured 0.81 (48 px, 20k images x 5 epochs)
    assert pretrained - scratch >= 0.4, (pretrained, scratch)  # random init: 0.10, a constant feature


@pytest.fixture(scope="session")
def transfer_run(pretrained_backbone, tmp_path_factory) -> Path:
    """digits from the pretrained backbone through all three phases (default schedule), then int8 export.

    The default schedule, not the issue's short one: at 48 px the short schedule leaves a 0.75 model whose int8
    agreement (0.944 to 0.967 over runs) straddles the 0.95 gate, a flaky test; the default one reaches 0.82 with
    int8 agreement 0.967 to 0.989. The short schedule's figures are measured at 96 px (README, "Pretrained weights
    without internet").
    """
    from export.run import export_run
    from export.settings import ExportSettings
    from train.run import run_training
    from train.settings import TrainSettings

    def build(folder: Path) -> Path:
        out = folder / "digits"
        run_training(TrainSettings(data="digits", out=str(out), image_size=SIZE, alpha=0.35,
                                   weights=str(pretrained_backbone)))  # fmt: skip
        result = export_run(ExportSettings(run=str(out), formats="tflite_int8,tflite_int8_qat,onnx_int8"))
        (out / "export_result.json").write_text(json.dumps(result))
        return out

    return once_per_run(tmp_path_factory, "transfer_run", build)


@pytest.mark.slow
def test_transfer_run_is_transfer_learning(transfer_run: Path, pretrained_backbone: Path):
    metrics = json.loads((transfer_run / "metrics.json").read_text())
    assert metrics["transfer_learning"] is True and metrics["weights_used"] == str(pretrained_backbone)
    log = (transfer_run / "history.csv").read_text()
    assert "phase1" in log and "phase2" in log and "phase3" in log
    assert metrics["test_top1_float"] >= 0.75, metrics["test_top1_float"]  # measured 0.82


@pytest.mark.slow
def test_qat_starts_where_float_ends(transfer_run: Path):
    """Calibrated ranges: the fresh QAT model agrees with float (tfmot's +-6 start agreed on about 10%)."""
    m = json.loads((transfer_run / "metrics.json").read_text())
    assert m["qat_start_agreement_uncalibrated"] < 0.5, m  # what tfmot alone gives: the check can fail
    assert m["qat_start_agreement"] >= 0.95, m  # measured 0.981
    first = m["first_epoch_accuracy"]
    assert first["phase3"]["drop_points"] <= 3.0, first  # was 35 points (0.97 -> 0.62) before calibration
    assert first["phase2"]["drop_points"] <= 3.0, first  # warm-up: the first fine-tuning epoch keeps the head


@pytest.mark.slow
def test_every_int8_artifact_passes_its_gate_after_transfer(transfer_run: Path):
    result = json.loads((transfer_run / "export_result.json").read_text())
    assert not result["failed"], result["failed"]
    assert set(result["published"]) == {"tflite_int8", "tflite_int8_qat", "onnx_int8"}
    manifest = json.loads((transfer_run / "export" / "manifest.json").read_text())
    float_top1 = manifest["float_test_top1"]
    for a in manifest["artifacts"]:
        assert a["test_top1"] >= float_top1 - 0.02, (a["format"], a["test_top1"], float_top1)


def _bad_weights(tmp_path: Path) -> dict[str, Path]:
    import h5py

    files = {"empty": tmp_path / "empty.h5", "text": tmp_path / "notes.h5", "truncated": tmp_path / "cut.h5"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a weights file\n")
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        f.attrs["layer_names"] = [b"Conv1"]
        f.create_group("Conv1").attrs["weight_names"] = [b"Conv1/kernel:0"]
        f["Conv1"].create_dataset("Conv1/kernel:0", data=np.zeros((3, 3, 3, 16), np.float32))
    data = (tmp_path / "whole.h5").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    return files


@pytest.mark.parametrize(
    "kind, message",
    [("empty", "is an empty file"), ("text", "is not an HDF5 file"), ("truncated", "truncated or corrupt"),
     ("missing", "no such file")],
)  # fmt: skip
def test_unusable_weights_file_is_one_line_before_any_data(tmp_path, kind, message):
    files = _bad_weights(tmp_path)
    path = files.get(kind, tmp_path / "missing.h5")
    # --data names a folder that does not exist: the weights error must come first, before any data is read
    r = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path / "no-such-data"), "--weights", str(path),
                        "--out", str(tmp_path / "run")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists(), "nothing is written for a run that cannot start"


@pytest.mark.slow
def test_weights_of_another_width_name_the_width_they_hold(tmp_path):
    import tf_keras as keras

    from train.settings import SettingsError
    from train.weights import check_weights_file

    wide = tmp_path / "a1.h5"
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=1.0).save_weights(
        str(wide)
    )
    assert "alpha 1 " in check_weights_file(wide, "mobilenetv2", 1.0)
    with pytest.raises(SettingsError, match=r"holds MobileNetV2 alpha 1 weights, not alpha 0.35: pass --alpha 1"):
        check_weights_file(wide, "mobilenetv2", 0.35)
    with pytest.raises(SettingsError, match=r"does not hold VGG16 weights"):
        check_weights_file(wide, "vgg16", 1.0)
    classifier = tmp_path / "classifier.h5"
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=True, weights=None, alpha=0.35,
                                   classes=3).save_weights(str(classifier))  # fmt: skip
    with pytest.raises(SettingsError, match=r"whole classifier \(with its top\)"):
        check_weights_file(classifier, "mobilenetv2", 0.35)


def test_imagenet_file_names_are_the_ones_keras_downloads():
    from train.weights import imagenet_file_name, mobilenet_v2_width

    assert (
        imagenet_file_name("mobilenetv2", 0.35, 96)
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    )
    assert (
        imagenet_file_name("mobilenetv2", 1.0, 100)
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    )
    assert imagenet_file_name("vgg16", 1.0, 224) == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert [mobilenet_v2_width(a) for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)] == [112, 160, 240, 320, 416, 448]


def test_warmup_ramps_then_holds():
    from train.schedule import WarmUp

    w = WarmUp(1e-4, 10)
    assert np.isclose(float(w(0)), 1e-5) and np.isclose(float(w(4)), 5e-5)
    assert np.isclose(float(w(9)), 1e-4) and np.isclose(float(w(500)), 1e-4)
    assert WarmUp.from_config(w.get_config()).warmup_steps == 10


@pytest.mark.slow
def test_int8_comparison_reproduces_export_and_names_the_worst_layers(transfer_run: Path, tmp_path):
    from export.int8_compare import compare_int8

    run = tmp_path / transfer_run.name  # a copy: the comparison writes into the run's export/, shared by the session
    shutil.copytree(transfer_run, run, symlinks=True)
    doc = compare_int8(run, float_layers=(3,), only=("ptq", "ptq_float_3", "onnx_int8"))
    v = doc["variants"]
    assert set(v) == {"ptq", "ptq_float_3", "onnx_int8"}
    assert not [k for k, row in v.items() if "error" in row], v
    manifest = json.loads((transfer_run / "export" / "manifest.json").read_text())
    published = {a["format"]: a for a in manifest["artifacts"]}
    # the same converter on the same calibration images gives the published model's figures exactly
    assert v["ptq"]["top1"] == pytest.approx(published["tflite_int8"]["test_top1"], abs=1e-4)
    assert v["onnx_int8"]["top1"] == pytest.approx(published["onnx_int8"]["test_top1"], abs=0.01)
    assert v["ptq_float_3"]["size_mb"] > v["ptq"]["size_mb"]  # three tensors really stayed float
    worst = doc["worst_layers"]
    assert len(worst) >= 10 and worst[0]["rmse_per_scale"] >= worst[-1]["rmse_per_scale"] > 0
    for name in ("int8_comparison.md", "int8_comparison.json", "int8_layer_error.png"):
        assert (run / "export" / name).stat().st_size > 0
