"""python -m benchmarks' robustness pass on the committed tiny model (tests/edge_model.py): rows complete, the clean
figure is the plain accuracy, robust_* columns in the results, the report's section and headline, bad flags.

The tiny run gets a test split of the committed sample pictures (tests/data/edge/images and their labels.csv), so
nothing is trained; latency and the camera loop are cut to the minimum (--runs 2, --loop-frames 0).
"""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
from edge_model import SAMPLES

from benchmarks import cli
from benchmarks.device.corruptions import CORRUPTIONS, MIDDLE
from benchmarks.device.rows import COLUMNS
from benchmarks.report_robustness import robustness_headline, robustness_section
from benchmarks.robustness import (
    CLEAN,
    ROBUST_COLUMNS,
    measure_robustness,
    parse_corruptions,
    parse_severities,
    robust_columns,
)
from benchmarks.settings import BenchError

FAST = ["--runs", "2", "--warmup", "0", "--rounds", "1", "--threads", "1", "--loop-frames", "0",
        "--reference", "tflite_fp32", "--no-plots"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(edge_run, tmp_path_factory):
    """A copy of the tiny edge model's run with settings.json and a splits.json whose test split is the samples."""
    from train.settings import TrainSettings, resolve

    run = tmp_path_factory.mktemp("robust") / "tiny-rgb"
    shutil.copytree(edge_run, run)
    s = resolve(TrainSettings(data=str(SAMPLES), out=str(run), image_size=32, alpha=0.35, weights="none"))
    (run / "settings.json").write_text(json.dumps(dict(s.to_dict(), settings_sha256=s.sha256())))
    labels = ["red", "green", "blue"]
    with open(SAMPLES / "labels.csv") as f:
        samples = list(csv.DictReader(f))
    test = {"labels": [labels.index(r["label"]) for r in samples], "paths": [str(SAMPLES / r["file"]) for r in samples]}
    (run / "splits.json").write_text(json.dumps({"source": "samples", "class_names": labels, "splits": {"test": test}}))
    return run


@pytest.fixture(scope="module")
def bench(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = cli.main(["--run", str(tiny_run), "--out", str(out), *FAST, "--severities", "1,3",
                   "--corruptions", "gaussian_noise,low_light,motion_blur"])  # fmt: skip
    assert rc == 0
    return out, json.loads((out / "results.json").read_text()), json.loads((out / "robustness.json").read_text())


def test_rows_are_complete(bench, tiny_run):
    out, results, robust = bench
    formats = {r["format"] for r in results["rows"]}
    assert formats == {"tflite_fp32", "tflite_int8", "onnx_fp32"}
    rows = robust["rows"]
    want = {(f, CLEAN, 0) for f in formats} | {
        (f, c, s) for f in formats for c in ("gaussian_noise", "low_light", "motion_blur") for s in (1, 3)
    }
    assert {(r["format"], r["corruption"], r["severity"]) for r in rows} == want and len(rows) == len(want)
    n = len(list(SAMPLES.glob("*.png")))
    assert all(r["n"] == n and 0 <= r["top1"] <= 1 for r in rows)
    for r in rows:  # drop is against the same artifact's clean figure, in points
        clean = next(c for c in rows if c["format"] == r["format"] and c["corruption"] == CLEAN)
        assert r["drop"] == pytest.approx((clean["top1"] - r["top1"]) * 100, abs=0.01)
    with open(out / "robustness.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert robust["meta"]["severities"] == [1, 3] and robust["meta"]["n"] == n


def test_clean_figure_is_the_plain_accuracy_and_columns_are_filled(bench):
    _, results, robust = bench
    for r in results["rows"]:
        assert set(ROBUST_COLUMNS) <= set(r)
        assert r["robust_clean"] == r["top1"]  # every sample: the same images as the accuracy pass
        mine = {x["corruption"]: x["top1"] for x in robust["rows"] if x["format"] == r["format"] and x["severity"] == 3}
        assert r["robust_gaussian_noise"] == mine["gaussian_noise"] and r["robust_jpeg"] is None
        assert r["robust_mean"] == pytest.approx(np.mean(list(mine.values())), abs=1e-4)
        assert r["robust_worst"] == min(mine.values())


def test_noise_costs_the_tiny_model_something(bench):
    """The tiny model tells colours apart; at severity 3 Gaussian noise (sd 0.18) and dusk must cost it accuracy
    on some artifact, or the corruptions are not reaching the model."""
    _, _, robust = bench
    assert max(r["drop"] for r in robust["rows"] if r["severity"] == 3) > 0


def test_report_has_the_section_and_headline(bench):
    out, _, _ = bench
    text = (out / "report.md").read_text()
    assert "## Robustness" in text
    head = text.split("## int8 against float")[0]
    assert "**Robustness** (severity 3 of 5" in head and "costs most" in head
    verdicts = ("no clear difference from tflite_fp32", "than tflite_fp32", "as much as tflite_fp32")
    assert "tflite_int8" in head and any(v in head for v in verdicts)
    table = text.split("## Robustness")[1].split("\n## ")[0]
    assert "| Artifact | clean | gaussian_noise | low_light | motion_blur | mean | worst |" in table
    assert table.count("\n| tflite_int8 |") == 1 and "| low_light | onnx_fp32 |" in table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--corruptions", "fog"], "fog unknown; choose from all, none, gaussian_blur"),
        (["--severities", "0,6"], "--severities"),
        (["--robustness-images", "-1"], "--robustness-images -1 is below 0"),
    ],
)
def test_bad_flags_exit_2_naming_them(tiny_run, tmp_path, capsys, flags, message):
    assert cli.main(["--run", str(tiny_run), "--out", str(tmp_path), *FAST, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_corruptions_none_skips_the_pass(tiny_run, tmp_path):
    assert cli.main(["--run", str(tiny_run), "--out", str(tmp_path), *FAST, "--corruptions", "none"]) == 0
    assert not (tmp_path / "robustness.json").exists()
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert all(r["robust_mean"] is None for r in rows)
    assert "## Robustness" not in (tmp_path / "report.md").read_text()


def test_parsers():
    assert parse_corruptions("all") == tuple(CORRUPTIONS) and parse_corruptions("none") == ()
    assert parse_corruptions("jpeg, gaussian_blur") == ("gaussian_blur", "jpeg")  # table order
    with pytest.raises(BenchError, match="blur unknown"):
        parse_corruptions("blur")
    assert parse_severities("5,1,3,3") == (1, 3, 5)
    with pytest.raises(BenchError, match="--severities"):
        parse_severities("")
    assert list(ROBUST_COLUMNS) == [c for c in COLUMNS if c.startswith("robust_")]  # documented, in order


Y = np.array([0, 1, 2] * 100)


def _fake(fmt_right: dict[str, dict[str, np.ndarray]]):
    """measure_robustness on fake predictors that answer from a table keyed by the set being measured."""
    order = iter([CLEAN] + ["gaussian_blur"] * 1)
    current = {}

    def predictor(fmt):
        def predict(images):
            if fmt == next(iter(fmt_right)):  # the first format asked advances the set
                current["name"] = next(order)
            return np.where(fmt_right[fmt][current["name"]], Y, (Y + 1) % 3)

        return predict

    quant = {"tflite_fp32": "none", "tflite_int8": "int8"}
    return measure_robustness({f: predictor(f) for f in fmt_right}, np.zeros((300, 8, 8, 3), np.uint8), Y,
                              ["gaussian_blur"], [MIDDLE], quant)  # fmt: skip


def test_headline_says_int8_loses_more_only_beyond_the_noise():
    """Float loses 10% of 300 images to blur; int8 loses 30% (clear) or 11% (within the noise)."""
    ok = np.ones(300, bool)
    lose = lambda k: np.r_[np.zeros(k, bool), np.ones(300 - k, bool)]  # noqa: E731
    rows, summary = _fake({"tflite_fp32": {CLEAN: ok, "gaussian_blur": lose(30)},
                           "tflite_int8": {CLEAN: ok, "gaussian_blur": lose(90)}})  # fmt: skip
    assert summary["worst"] == "gaussian_blur" and summary["reference_drop"] == 10.0
    (c,) = summary["int8"]
    assert c["excess_points"] == 20.0 and c["clear"] and 0 < c["noise_points"] < 10
    meta = {"robustness": {"summary": summary, "corruptions": ["gaussian_blur"], "severities": [MIDDLE], "n": 300}}
    text = robustness_headline(meta)[1]
    assert "20.0 more than tflite_fp32" in text and "30.0 points" in text
    _, summary = _fake({"tflite_fp32": {CLEAN: ok, "gaussian_blur": lose(30)},
                        "tflite_int8": {CLEAN: ok, "gaussian_blur": lose(33)}})  # fmt: skip
    assert not summary["int8"][0]["clear"]
    meta["robustness"]["summary"] = summary
    assert "no clear difference from tflite_fp32" in robustness_headline(meta)[1]
    host = [{"device": "h", "format": f, **robust_columns(rows, f)} for f in ("tflite_fp32", "tflite_int8")]
    table = "\n".join(robustness_section(host, {**meta, "host": "h"}, rows))
    assert "| tflite_int8 | 100.0% | 70.0% (−30.0) | 70.0% | 70.0% |" in table


def test_device_side_robustness_on_the_sample_pictures(edge_run, tmp_path, capsys):
    """python -m benchmarks.device.robustness on the committed pictures: the clean row agrees with itself and its
    top-1 is the model's on those pictures; corrupted rows agree less or equally; the JSON is written."""
    from benchmarks.device import robustness as device
    from contracts.runners.classifier import Classifier

    model = edge_run / "export" / "tflite_int8.tflite"
    args = ["--model", str(model), "--images", str(SAMPLES), "--labels", str(SAMPLES / "labels.csv"),
            "--corruptions", "low_light,pixelate", "--severities", "1,5",
            "--out", str(tmp_path / "r.json")]  # fmt: skip
    assert device.main(args) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        ("none", 0), ("low_light", 1), ("low_light", 5), ("pixelate", 1), ("pixelate", 5)]  # fmt: skip
    clf = Classifier.from_model(model)
    pictures = device.list_pictures(SAMPLES)
    labels = device.read_labels(SAMPLES / "labels.csv", clf.labels, pictures)
    right = [int(np.argmax(clf.predict(cv2.imread(str(p)))[0])) == y for p, y in zip(pictures, labels)]
    assert rows[0]["agreement"] == 1.0 and rows[0]["top1"] == round(float(np.mean(right)), 4)
    assert rows[2]["agreement"] <= rows[1]["agreement"] and all(r["n"] == len(pictures) for r in rows)
    assert "| low_light | 5 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--corruptions", "rain"], "rain unknown"), (["--labels", "nope.csv"], "--labels nope.csv"),
     (["--images", "no-such-dir"], "--images no-such-dir: no such folder")],
)  # fmt: skip
def test_device_side_bad_input_is_one_line(edge_run, flags, message, capsys):
    from benchmarks.device import robustness as device

    args = ["--model", str(edge_run / "export" / "tflite_int8.tflite"), "--images", str(SAMPLES), *flags]
    assert device.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
