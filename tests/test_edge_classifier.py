"""contracts.runners.classifier on real artifacts: tflite fp32, full-int8 tflite and ONNX fp32 of the tiny model."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from edge_model import LABELS, SAMPLES, committed_run, make_images, read_labels_csv

from contracts.errors import BackendError
from contracts.manifest import ManifestError
from contracts.preprocess import bgr_to_input, dequantize
from contracts.runners.classifier import Category, Classifier


@pytest.fixture(scope="module")
def pictures():
    return make_images(120, seed=11)


def _labels(clf: Classifier, bgr: np.ndarray) -> list[str]:
    return [clf.classify(b).categories[0].label for b in bgr]


@pytest.mark.parametrize("file", ["tflite_fp32.tflite", "tflite_int8.tflite", "onnx_fp32.onnx"])
def test_each_artifact_classifies_the_pictures(edge_run, pictures, file):
    bgr, y = pictures
    clf = Classifier.from_model(edge_run / "export" / file, threads=1)
    got = _labels(clf, bgr)
    accuracy = np.mean([g == LABELS[t] for g, t in zip(got, y, strict=True)])
    assert accuracy >= 0.85, f"{file}: accuracy {accuracy:.3f}"
    assert clf.backend.name == ("onnxruntime" if file.endswith(".onnx") else "litert")


def test_formats_agree(edge_run, pictures):
    bgr, _ = pictures
    fp32 = Classifier.from_model(edge_run / "export" / "tflite_fp32.tflite")
    int8 = Classifier.from_model(edge_run / "export" / "tflite_int8.tflite")
    onnx = Classifier.from_model(edge_run / "export" / "onnx_fp32.onnx")
    p32 = np.stack([fp32.predict(b)[0] for b in bgr])
    p8 = np.stack([int8.predict(b)[0] for b in bgr])
    pon = np.stack([onnx.predict(b)[0] for b in bgr])
    assert np.abs(pon - p32).max() < 1e-4  # same float graph in two runtimes
    assert np.mean(p8.argmax(1) == p32.argmax(1)) >= 0.95
    assert np.abs(p8 - p32).max() < 0.15  # int8 is close, not exact (never compare int8 exactly)


def test_int8_outputs_are_dequantized_probabilities(edge_run, pictures):
    clf = Classifier.from_model(edge_run / "export" / "tflite_int8.tflite")
    assert clf.backend.output.dtype == "uint8"
    for b in pictures[0][:30]:
        scores, _ = clf.predict(b)
        assert scores.dtype == np.float32
        assert scores.min() >= 0.0 and scores.max() <= 1.0
        assert abs(float(scores.sum()) - 1.0) < 0.02  # softmax, up to one uint8 step per class


def test_quantization_comes_from_the_interpreter(edge_run, pictures):
    from ai_edge_litert.interpreter import Interpreter

    path = edge_run / "export" / "tflite_int8.tflite"
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    clf = Classifier.from_model(path)
    assert clf.input_quantization == pytest.approx(i["quantization"])
    assert clf.output_quantization == pytest.approx(o["quantization"])
    assert clf.input_quantization == (1.0, 0)  # raw pixels (export.tflite.pin_pixel_input)
    assert clf.output_quantization == pytest.approx((1 / 256, 0))  # a real scale, read from the model

    # The classifier's input tensor and scores are exactly what the interpreter's own parameters give.
    frame = pictures[0][0]
    x = clf.preprocess(frame)
    rgb = bgr_to_input(frame, 32)  # the one preprocessing; what is checked here is the quantization
    scale, zp = i["quantization"]
    expected = np.clip(np.round(rgb.astype(np.float32) / scale) + zp, 0, 255).astype(np.uint8)
    assert x.dtype == np.uint8 and np.array_equal(x[0], expected)
    assert clf._lut is None  # scale 1, zero point 0: the pixels go in as they are, without a lookup per frame
    it.set_tensor(i["index"], x)
    it.invoke()
    raw = it.get_tensor(o["index"])[0]
    np.testing.assert_allclose(clf.predict(frame)[0], dequantize(raw, *o["quantization"]), atol=1e-7)
    # The input made beforehand (edge.reader's preparer thread) gives the same scores without the frame.
    np.testing.assert_array_equal(clf.classify(None, x).scores, clf.classify(frame).scores)


def _tampered_copy(edge_run, tmp_path, change):
    run = tmp_path / "run"
    shutil.copytree(edge_run, run)
    mpath = run / "export" / "manifest.json"
    d = json.loads(mpath.read_text())
    change(next(a for a in d["artifacts"] if a["format"] == "tflite_int8"))
    mpath.write_text(json.dumps(d))
    return run / "export" / "tflite_int8.tflite"


def test_manifest_quantization_must_agree_with_the_interpreter(edge_run, tmp_path):
    def change(a):
        a["input"]["scale"] *= 1.01

    with pytest.raises(ManifestError, match="input quantization .* in the model but .* in the manifest"):
        Classifier.from_model(_tampered_copy(edge_run, tmp_path, change))


def test_manifest_dtype_must_agree_with_the_interpreter(edge_run, tmp_path):
    def change(a):
        a["input"].update(dtype="float32", scale=None, zero_point=None)

    with pytest.raises(ManifestError, match="input is uint8 in the model but float32 in the manifest"):
        Classifier.from_model(_tampered_copy(edge_run, tmp_path, change))


def test_top_k_and_min_score(edge_run, pictures):
    path = edge_run / "export" / "tflite_fp32.tflite"
    frames = pictures[0][:40]
    full = [Classifier.from_model(path, top_k=3).classify(b) for b in frames]
    assert all(len(r.categories) == 3 for r in full)
    assert all(r.categories[0].score >= r.categories[1].score >= r.categories[2].score for r in full)
    assert all(isinstance(c, Category) for c in full[0].categories)
    best = np.array([r.categories[0].score for r in full])
    threshold = float(np.median(best))  # half the frames fall below it
    clf = Classifier.from_model(path, top_k=2, min_score=threshold)
    for frame, b in zip(frames, best, strict=True):
        got = clf.classify(frame)
        assert len(got.categories) <= 2
        assert (got.top is None) == (b < threshold)
        assert all(c.score >= threshold for c in got.categories)
    assert 0 < int(np.sum(best < threshold)) < len(best)


def test_gray_and_bgra_frames_and_any_size(edge_run):
    clf = Classifier.from_model(edge_run / "export" / "tflite_int8.tflite")
    bgr = make_images(1, seed=3, hw=(480, 640), boost=(100, 130))[0][0]
    label = clf.classify(bgr).top.label
    assert clf.classify(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)).top.label == label
    assert len(clf.classify(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).categories) == 3


def test_committed_pictures_give_their_committed_labels(edge_run):
    truth = read_labels_csv(SAMPLES / "labels.csv")
    clf = Classifier.from_model(edge_run / "export" / "tflite_int8.tflite")
    for name, label in truth.items():
        result = clf.classify(cv2.imread(str(SAMPLES / name)))
        assert result.top.label == label, name
        assert result.top.score > 0.9, name


def test_backend_must_match_the_artifact(edge_run):
    with pytest.raises(BackendError, match="is a litert model"):
        Classifier.from_model(edge_run / "export" / "tflite_int8.tflite", backend="onnxruntime")
    with pytest.raises(BackendError, match="unsupported backend 'tensorrt'"):
        Classifier.from_model(edge_run / "export" / "tflite_int8.tflite", backend="tensorrt")


def test_the_committed_model_is_what_the_builder_makes_now():
    """The edge tests run on tests/data/edge/model, so a session trains nothing, as long as its KEY matches the
    builder's sources (else they build their own, which takes a minute)."""
    assert committed_run() is not None, (
        "tests/data/edge/model is older than tests/edge_model.py's builder or contracts/preprocess.py: rebuild it "
        "with PYTHONPATH=. python tests/edge_model.py --commit"
    )
