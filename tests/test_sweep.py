"""python -m sweep: the Pareto front and the budget pick on hand-made tables, the report files they make, the Pi
latency prediction, and a 2-point sweep at tiny sizes (one point reused from a copy of conftest's `exported_run`,
one trained for real).

Timings are measured, never asserted: the checks are on rows, labels, files and what was (not) redone.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_settings

from sweep import devices, pareto
from sweep.cli import main
from sweep.report import write_report
from sweep.run import estimate_seconds, run_sweep
from sweep.settings import SweepSettings, resolve


def row(point: str, fmt: str, top1: float | None, ms: float | None, size_mb: float = 1.0, error: str = "") -> dict:
    return {"point": point, "format": fmt, "top1": top1, "latency_ms_device": ms, "size_mb": size_mb,
            "error": error, "device": "pi4", "latency_source": "predicted: test"}  # fmt: skip


def names(rows: list[dict]) -> list[str]:
    return [pareto.name(r) for r in rows]


TABLE = [
    row("a0.35-s96", "tflite_int8", 0.90, 5.0),
    row("a0.35-s96", "tflite_fp32", 0.91, 9.0),  # dominated by a0.5-s96 int8 (more accurate and faster)
    row("a0.5-s96", "tflite_int8", 0.93, 8.0),
    row("a0.5-s128", "tflite_int8", 0.95, 12.0, size_mb=0.9),
    row("a0.5-s128", "tflite_int8_qat", 0.95, 12.0, size_mb=0.8),  # a tie with the row above: both on the front
    row("a0.5-s128", "tflite_dynamic", 0.95, 15.0),  # as accurate as the tie, slower: dominated
    row("a1.0-s160", "tflite_int8", 0.97, 40.0),
    row("a1.0-s160", "tflite_int8", 0.97, 40.0),  # an exact duplicate: neither dominates the other
    row("a1.0-s224", "tflite_fp32", 0.99, 1.0, error="bench: load failed"),  # would dominate all; has an error
    row("a1.0-s224", "tflite_int8", None, 2.0),  # no top-1
    row("a1.0-s224", "onnx_int8", 0.99, None),  # no device latency
]


def test_pareto_front_on_a_hand_made_table():
    front = pareto.front_rows(TABLE)
    assert names(front) == ["a0.35-s96 tflite_int8", "a0.5-s96 tflite_int8", "a0.5-s128 tflite_int8",
                            "a0.5-s128 tflite_int8_qat", "a1.0-s160 tflite_int8", "a1.0-s160 tflite_int8"]  # fmt: skip
    assert TABLE[3] in front and TABLE[4] in front and TABLE[6] in front and TABLE[7] in front  # ties: all on it
    assert TABLE[1] not in front and TABLE[5] not in front  # dominated
    assert all(not r["error"] and r["top1"] is not None and r["latency_ms_device"] is not None for r in front)
    assert pareto.front_rows([]) == [] and pareto.front_rows(TABLE[8:]) == []


def test_pick_within_budget_ties_and_runner_up():
    best, other, text = pareto.verdict(TABLE, 30, "pi4")
    assert best is TABLE[4]  # 0.95 at 12 ms twice: the smaller file wins the tie
    assert (best["top1"], best["latency_ms_device"], best["size_mb"]) == (0.95, 12.0, 0.8)
    assert other is TABLE[6]  # the next step up the front: more accurate, over budget
    assert (other["top1"], other["latency_ms_device"]) == (0.97, 40.0)
    assert pareto.name(best) in text
    assert pareto.pick(TABLE, 12.0) is TABLE[4]  # the budget is inclusive
    assert pareto.pick(TABLE, 11.9) is TABLE[2]
    top = pareto.pick(TABLE, 100)  # the most accurate overall: the runner-up is the next best that fits
    assert top is TABLE[6] and pareto.runner_up(TABLE, top, 100) is TABLE[7]
    assert pareto.runner_up(TABLE, None, 30) is None
    assert pareto.verdict(TABLE[:1], 30, "pi4")[:2] == (TABLE[0], None)  # one usable row: no runner-up


def test_nothing_fits_names_the_fastest_option():
    best, other, _ = pareto.verdict(TABLE, 4.0, "pi4")
    assert best is None and other is None
    quick = pareto.fastest(TABLE)
    assert quick is TABLE[0] and quick["latency_ms_device"] == 5.0
    assert pareto.budget_to_fit(quick) == 5.0 and pareto.pick(TABLE, pareto.budget_to_fit(quick)) is quick
    # The budget advised is rounded up, so the fastest option fits it (rounded to nearest, 5.0004 would not).
    odd = row("a0.35-s96", "tflite_int8", 0.9, 5.0004)
    assert pareto.budget_to_fit(odd) == 5.001 and pareto.pick([odd], pareto.budget_to_fit(odd)) is odd
    assert pareto.verdict(TABLE[8:], 100.0, "pi4")[:2] == (None, None) and pareto.fastest(TABLE[8:]) is None


def test_report_files_carry_the_pick_and_the_rows(tmp_path):
    rows = [{**r, "alpha": 0.5, "size": 96, "run": f"runs/s/{r['point']}"} for r in TABLE]
    best, other, message = pareto.verdict(rows, 30, "pi4")
    result = {"rows": rows, "pick": best, "runner_up": other, "message": message, "not_run": [], "host": "host-x"}
    settings = {"device": "pi4", "threads": 4, "budget_ms": 30.0, "measured_device": "pi4"}
    write_report(tmp_path, result, settings, plots=False)
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert (doc["pick"], doc["runner_up"]) == ("a0.5-s128 tflite_int8_qat", "a1.0-s160 tflite_int8")
    assert doc["rows"] == rows and doc["settings"] == settings
    got = read_csv(tmp_path / "sweep.csv")
    assert [(r["point"], r["format"], r["latency_ms_device"], r["top1"]) for r in got] == [
        (r["point"], r["format"], r["latency_ms_device"], r["top1"]) for r in rows
    ]
    assert "make bundle RUN=runs/s/a0.5-s128 FORMAT=tflite_int8_qat" in (tmp_path / "sweep.md").read_text()
    assert not (tmp_path / "pareto.png").exists()


def test_python_m_sweep_help():
    done = subprocess.run([sys.executable, "-m", "sweep", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m sweep") and "--budget-ms" in done.stdout


def sweep_row(point: str, fmt: str, runtime: str, macs: float, here: float, sha: str = "", how: str = "table"):
    return {"point": point, "format": fmt, "runtime": runtime, "threads": 4, "macs_m": macs, "macs_source": how,
            "latency_ms_here": here, "sha256": sha, "error": "", "device": "pi4", "alpha": 1.0}  # fmt: skip


def test_device_prediction_from_the_table():
    assert devices.macs_m(1.0, 224) == (300.0, "table") and devices.macs_m(0.35, 96) == (11.0, "table")
    macs, how = devices.macs_m(0.35, 32)
    assert macs == pytest.approx(59 * (32 / 224) ** 2, rel=1e-3) and how.startswith("derived")
    with pytest.raises(devices.DeviceError, match="widths 0.35, 0.5"):
        devices.macs_m(0.6, 224)
    rows = [
        sweep_row("a1.0-s224", "tflite_fp32", "litert", 300, 30.0),
        sweep_row("a1.0-s224", "tflite_int8", "litert", 300, 12.0),  # 0.4 of fp32 here
        sweep_row("a1.0-s112", "tflite_fp32", "litert", 75, 8.0, sha="abc"),  # a quarter of the MACs; measured
        sweep_row("a1.0-s112", "tflite_int8", "litert", 75, 2.0, sha="def"),  # 0.25 of fp32 here
        sweep_row("a1.0-s96", "tflite_int8", "litert", 56, 2.0),  # no fp32 here: the ratio is unknown, an error
    ]
    measured = [
        {"device": "pi4", "format": "tflite_fp32", "sha256": "abc", "threads": 4, "latency_ms_median": 9.5},
        {"device": "pi4", "format": "tflite_fp32", "sha256": "zzz", "threads": 4, "latency_ms_median": 1.0},
        {"device": "pi5", "format": "tflite_int8", "sha256": "def", "threads": 4, "latency_ms_median": 1.0},
    ]
    devices.add_device_latency(rows, "pi4", measured)
    assert rows[0]["latency_ms_device"] == pytest.approx(44.0)  # the reference reproduces the XNNPACK figure
    assert rows[0]["latency_source"].startswith("predicted: XNNPACK")
    assert rows[1]["latency_ms_device"] == pytest.approx(44.0 * 0.4)  # int8: scaled by the ratio measured here
    assert rows[1]["latency_source"].endswith("x ratio to float32 measured here")
    assert rows[2]["latency_ms_device"] == 9.5 and rows[2]["latency_source"] == "measured: pi4"
    assert rows[3]["latency_ms_device"] == pytest.approx(44.0 / 4 * 2.0 / 8.0)  # ratio to fp32 as measured HERE
    assert rows[3]["latency_source"].startswith("predicted")  # the pi5 row of this file is another device
    assert rows[4].get("latency_ms_device") is None and "tflite_fp32 of a1.0-s96 was not measured" in rows[4]["error"]
    quarter = devices.predict_ms(devices.DEVICES["pi4"], 75)
    assert quarter == pytest.approx(11.0) and devices.predict_ms(devices.DEVICES["pi4"], 300, 0.5) == 22.0
    assert devices.predict_ms(devices.DEVICES["pi5"], 300) == pytest.approx(44.0 / devices.PI5_SPEEDUP_OVER_PI4)
    this = [sweep_row("a1.0-s224", "tflite_int8", "litert", 300, 12.0)]
    this[0]["device"] = "host-x"
    devices.add_device_latency(this, "this")
    assert this[0]["latency_ms_device"] == 12.0 and this[0]["latency_source"] == "measured: host-x"


def test_settings_checks_and_time_estimate(tmp_path, capsys):
    (tmp_path / "flowers").mkdir()
    s = resolve(SweepSettings(data=str(tmp_path / "flowers"), formats="tflite_int8", alphas=(0.5,), sizes=(96,)))
    assert s.out == "runs/sweep-flowers" and s.threads == 4 and s.measured_device == "pi4"
    assert s.formats == "tflite_fp32,tflite_int8"  # a Pi prediction scales int8 by its float32 counterpart here
    assert resolve(SweepSettings(device="this", formats="tflite_int8")).formats == "tflite_int8"
    assert estimate_seconds([], 10) is None and estimate_seconds([(10, 60), (30, 100)], 20) == pytest.approx(80)
    assert main(["--device", "pi4", "--alphas", "0.6", "--out", str(tmp_path)]) == 2
    assert "width 0.6 is not in the MobileNetV2 MACs table" in capsys.readouterr().err
    assert main(["--merge", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "--merge" in capsys.readouterr().err
    assert main(["--formats", "tflite_int9", "--out", str(tmp_path)]) == 2
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("top1", "latency_ms_device", "size_mb", "latency_ms_here"):
            r[k] = float(r[k]) if r[k] else None
    return rows


def stamps(run) -> dict:
    """mtimes of what train, export and the benchmark write: a re-run must leave them all alone."""
    files = ["model_float.keras", "model_qat.h5", "metrics.json", "export/manifest.json", "export/tflite_fp32.tflite",
             "export/tflite_int8.tflite", "bench/results.json"]  # fmt: skip
    return {f: (run / f).stat().st_mtime_ns for f in files}


@pytest.mark.slow
def test_two_point_sweep_reuses_a_done_point_and_trains_a_new_one(exported_run, color_folder, tmp_path):
    out = tmp_path / "sweep-colors"
    # A copy, never the shared folder itself; copy2 keeps the mtimes. What other tests may have added to the
    # shared run (a benchmark) stays behind: this sweep measures for itself.
    shutil.copytree(exported_run, out / "a0.35-s32", symlinks=True, ignore=shutil.ignore_patterns("bench"))
    model_mtime = (out / "a0.35-s32" / "model_float.keras").stat().st_mtime_ns
    base = tiny_settings(color_folder, "")  # exported_run's own training choices, so its settings hash matches
    s = SweepSettings(data=str(color_folder), out=str(out), alphas=(0.35,), sizes=(32, 48), device="pi4",
                      budget_ms=1.0, formats="tflite_fp32,tflite_int8", threads=1, runs=5, warmup=1)  # fmt: skip
    result = run_sweep(s, train_base=base)

    assert (out / "a0.35-s32" / "model_float.keras").stat().st_mtime_ns == model_mtime  # reused, not retrained
    assert (out / "a0.35-s48" / "metrics.json").is_file()
    rows = read_csv(out / "sweep.csv")
    points = [(p, f) for p in ("a0.35-s32", "a0.35-s48") for f in ("tflite_fp32", "tflite_int8")]
    assert [(r["point"], r["format"]) for r in rows] == points
    for r in rows:
        assert not r["error"] and r["top1"] > 0.8 and r["latency_ms_here"] > 0 and r["threads"] == "1"
        assert r["device"] == "pi4" and r["latency_source"].startswith("predicted: XNNPACK")
        assert r["macs_source"].startswith("derived") and r["within_budget"] in ("True", "False")
    fp32 = {r["point"]: r for r in rows if r["format"] == "tflite_fp32"}  # MACs ratio: (48/32)^2 between the points
    assert fp32["a0.35-s48"]["latency_ms_device"] / fp32["a0.35-s32"]["latency_ms_device"] == pytest.approx(2.25, 1e-3)
    best = pareto.pick(rows, 1.0)
    assert best is not None and result["exit_code"] == 0 and pareto.name(result["pick"]) == pareto.name(best)
    assert result["pick"]["latency_ms_device"] <= 1.0 and result["pick"]["within_budget"] is True
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["pick"] == pareto.name(best) and doc["runner_up"] == pareto.name(result["runner_up"])
    assert f"make bundle RUN={out / best['point']} FORMAT={best['format']}" in (out / "sweep.md").read_text()
    import matplotlib.image

    img = matplotlib.image.imread(out / "pareto.png")
    assert img.shape[0] > 300 and img.shape[1] > 500 and float(np.std(img[..., :3])) > 0.05  # not a blank canvas
    assert json.loads((out / "sweep_settings.json").read_text())["train_base"]["learning_rate"] == 3e-3

    # Again, with a point added and a time budget already spent: nothing is retrained, re-exported or re-measured;
    # the new point is listed as not run; a budget below every option exits 3 with no pick.
    before = {p: stamps(out / p) for p in ("a0.35-s32", "a0.35-s48")}
    again = run_sweep(SweepSettings(**{**s.to_dict(), "sizes": (32, 40, 48), "budget_ms": 0.001,
                                       "max_minutes": 1e-6}), train_base=base)  # fmt: skip
    assert {p: stamps(out / p) for p in before} == before
    assert not (out / "a0.35-s40").exists() and [n["point"] for n in again["not_run"]] == ["a0.35-s40"]
    assert again["exit_code"] == 3 and again["pick"] is None and again["runner_up"] is None
    assert pareto.fastest(again["rows"])["latency_ms_device"] > 0.001
    assert {r["error"].split(":")[0] for r in again["rows"] if r["point"] == "a0.35-s40"} == {"not run"}
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["pick"] is None and [n["point"] for n in doc["not_run"]] == ["a0.35-s40"]

    # A row measured on the Pi replaces the prediction, labelled measured, and can make the pick.
    int8 = next(r for r in rows if r["point"] == "a0.35-s48" and r["format"] == "tflite_int8")
    merge = tmp_path / "pi4-rows.json"
    merge.write_text(json.dumps({"rows": [{"device": "pi4", "format": "tflite_int8", "runtime": "litert", "threads": 1,
                                           "sha256": int8["sha256"], "latency_ms_median": 0.0005}]}))  # fmt: skip
    third = run_sweep(SweepSettings(**{**s.to_dict(), "budget_ms": 0.001, "merge": (str(merge),)}), train_base=base)
    assert {p: stamps(out / p) for p in before} == before
    assert pareto.name(third["pick"]) == "a0.35-s48 tflite_int8" and third["pick"]["latency_source"] == "measured: pi4"
    assert third["pick"]["latency_ms_device"] == 0.0005
    merged = {(r["point"], r["format"]): r for r in read_csv(out / "sweep.csv")}[("a0.35-s48", "tflite_int8")]
    assert merged["latency_ms_device"] == 0.0005 and merged["latency_source"] == "measured: pi4"
