"""python -m sweep --pick-by: the front, the pick, the runner-up, sweep.md and pareto.png read the accuracy that
--pick-by names (top-1 under one corruption, or the mean / worst over them) on hand-made rows."""

from __future__ import annotations

import csv
import json

import pytest

from sweep import pareto
from sweep.report import write_report
from sweep.rows import COLUMNS
from sweep.run import check_metric
from sweep.settings import SweepError, SweepSettings, resolve


def row(point: str, fmt: str, top1: float, blur: float | None, ms: float, noise: float = 0.5) -> dict:
    return {"point": point, "format": fmt, "top1": top1, "robust_gaussian_blur": blur, "robust_gaussian_noise": noise,
            "robust_mean": None if blur is None else round((blur + noise) / 2, 4),
            "robust_worst": None if blur is None else min(blur, noise), "latency_ms_device": ms, "size_mb": 1.0,
            "error": "", "device": "pi4", "latency_source": "predicted: test", "alpha": 0.5, "size": 96,
            "run": f"runs/s/{point}"}  # fmt: skip


# Clean top-1 ranks A > B > C; under blur C > B > A. C is over a 30 ms budget.
TABLE = [
    row("a0.35-s96", "tflite_int8", 0.97, 0.60, 10.0),  # A: best clean, falls apart under blur
    row("a0.5-s96", "tflite_int8", 0.95, 0.85, 12.0, noise=0.9),  # B: holds up under blur
    row("a1.0-s160", "tflite_int8", 0.90, 0.88, 40.0, noise=0.3),  # C: best under blur, too slow
]
BLUR = pareto.metric("gaussian_blur")


def test_metric_names_the_column():
    assert (pareto.metric("top1"), BLUR, pareto.metric("robust_worst")) == ("top1", "robust_gaussian_blur",
                                                                           "robust_worst")  # fmt: skip
    assert pareto.metric_label(BLUR) == "top-1 under gaussian_blur (severity 3)"
    assert set(pareto.PICK_BY) >= {"top1", "robust_mean", "robust_worst", "pixelate"}


def test_pick_by_blur_changes_the_pick_and_the_runner_up():
    best, other, text = pareto.verdict(TABLE, 30, "pi4")
    assert (pareto.name(best), pareto.name(other)) == ("a0.35-s96 tflite_int8", "a0.5-s96 tflite_int8")
    best, other, text = pareto.verdict(TABLE, 30, "pi4", BLUR)
    assert pareto.name(best) == "a0.5-s96 tflite_int8"
    assert pareto.name(other) == "a1.0-s160 tflite_int8"  # the next step up the blur front (over budget)
    assert text.startswith("Picked by top-1 under gaussian_blur (severity 3): a0.5-s96 tflite_int8: top-1 under "
                           "gaussian_blur (severity 3) 85.0% (clean 95.0%)")  # fmt: skip
    assert "3.0 points more accurate but 40" in text
    front = [pareto.name(r) for r in pareto.front_rows(TABLE, BLUR)]
    assert front == ["a0.35-s96 tflite_int8", "a0.5-s96 tflite_int8", "a1.0-s160 tflite_int8"]
    assert [pareto.name(r) for r in pareto.front_rows(TABLE)] == ["a0.35-s96 tflite_int8"]  # clean: A dominates


def test_pick_by_mean_and_worst():
    assert pareto.name(pareto.pick(TABLE, 100, "robust_mean")) == "a0.5-s96 tflite_int8"  # (0.85+0.9)/2
    assert pareto.name(pareto.pick(TABLE, 100, "robust_worst")) == "a0.5-s96 tflite_int8"  # min 0.85
    assert pareto.pick(TABLE, 5, "robust_worst") is None
    _, _, text = pareto.verdict(TABLE, 5, "pi4", "robust_worst")
    assert text.startswith("Picked by worst top-1 over the camera corruptions (severity 3): Nothing fits")


def test_a_missing_metric_is_an_error_saying_to_rerun_bench():
    old = [*TABLE, row("a1.0-s224", "tflite_fp32", 0.99, None, 20.0)]  # benchmarked before robustness
    with pytest.raises(SweepError, match=r"--pick-by gaussian_blur: no robust_gaussian_blur for a1.0-s224 "
                       r"tflite_fp32 .*re-run `python -m benchmarks --run") as e:  # fmt: skip
        check_metric(old, "gaussian_blur")
    assert "\n" not in str(e.value)
    check_metric(old, "top1")  # clean top-1 needs no robustness figures
    check_metric([*TABLE, {**old[-1], "error": "bench: load failed"}], "gaussian_blur")  # unusable anyway


def test_settings_check_pick_by():
    assert resolve(SweepSettings(pick_by="motion_blur")).pick_by == "motion_blur"
    with pytest.raises(SweepError, match="--pick-by 'blur' is not one of top1, robust_mean, robust_worst, gaussian"):
        resolve(SweepSettings(pick_by="blur"))


def test_report_says_what_it_picked_by(tmp_path):
    best, other, message = pareto.verdict(TABLE, 30, "pi4", BLUR)
    result = {"rows": TABLE, "pick": best, "runner_up": other, "message": message, "not_run": [], "host": "h"}
    settings = {"device": "pi4", "threads": 4, "budget_ms": 30.0, "measured_device": "pi4", "pick_by": "gaussian_blur"}
    write_report(tmp_path, result, settings, plots=True)
    md = (tmp_path / "sweep.md").read_text()
    assert "**Pick:** Picked by top-1 under gaussian_blur (severity 3): a0.5-s96 tflite_int8" in md
    assert "at least as accurate (accuracy: top-1 under gaussian_blur (severity 3), --pick-by gaussian_blur)" in md
    assert "| Top-1 | robust_gaussian_blur | Agreement |" in md and "| 0.9500 | 0.8500 |" in md
    with open(tmp_path / "sweep.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == list(COLUMNS) and got[1]["robust_gaussian_blur"] == "0.85"
    assert json.loads((tmp_path / "sweep.json").read_text())["pick"] == "a0.5-s96 tflite_int8"
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
