"""python -m benchmarks and python -m benchmarks.device.latency on the tiny exported run (conftest's `exported_run`).

Timings are measured, never asserted: the checks are on files, columns, figures, consistency and error handling. A
few iterations only (--runs 5 --warmup 1 --threads 1,2), so the whole file takes seconds beyond the shared fixture,
which trains and exports a MobileNetV2: every test that uses it is slow. Outputs go to each test's own folder
(--out), never into the shared run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from edge_model import HOST_ONLY, copy_shipped, import_blocker

from benchmarks import cli
from benchmarks.compare import comparisons, float_counterpart, pareto_front
from benchmarks.device.rows import COLUMNS, new_row
from benchmarks.report import loop_figures, loop_section
from contracts.manifest import load_manifest, sha256_file

THREADS = (1, 2)
FAST = ["--runs", "5", "--warmup", "1", "--threads", ",".join(map(str, THREADS)), "--loop-frames", "20"]
DEVICE = "test-pi"  # the merged "other device"
DEVICE_FORMATS = ("tflite_fp32", "tflite_int8")
SLOWER = 10.0  # the merged device's float rows are made this much slower, so a ratio mixing devices shows
REQUIRED = ("format", "runtime", "threads", "size_mb", "top1", "agreement", "latency_ms_median", "latency_ms_p90",
            "latency_ms_std", "fps", "loop_fps", "loop_overhead_ms", "capture_ms", "device", "error")  # fmt: skip
PLOTS = ("accuracy_vs_latency.png", "size.png", "per_class.png", "latency_vs_threads.png", "robustness.png")


slow = pytest.mark.slow  # the test uses exported_run (a MobileNetV2 trained and exported once per session)


@pytest.fixture(scope="module")
def device_rows(exported_run, tmp_path_factory):
    """benchmarks.device.latency run as on a Raspberry Pi: from the files deploy.bundle ships (nothing else of the
    repository), in a fresh interpreter that cannot import TensorFlow, scikit-learn, matplotlib & co."""
    tmp = tmp_path_factory.mktemp("device")
    pkg = copy_shipped(tmp / "pkg")
    env = {**os.environ, **import_blocker(tmp / "site", HOST_ONLY, tmp / "attempts.log")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "site"), str(pkg)])
    models = [str(exported_run / "export" / f"{f}.tflite") for f in DEVICE_FORMATS]
    flags = ["--threads", "1,2", "--runs", "5", "--warmup", "1", "--loop-frames", "14", "--device-name", DEVICE,
             "--out", str(tmp / "rows.json")]  # fmt: skip
    cmd = [sys.executable, "-m", "benchmarks.device.latency", "--model", *models, *flags]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    probe_env = {**env, "EDGE_BLOCK_LOG": str(tmp / "probe.log")}  # its own log: attempts.log is the run's alone
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env=probe_env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr  # the blocker works
    return proc, tmp


@pytest.fixture(scope="module")
def merge_file(device_rows):
    """The device's rows with its float rows made SLOWER times slower (as if the device were another machine)."""
    proc, tmp = device_rows
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp / "rows.json").read_text())
    for r in doc["rows"]:
        if r["format"] == "tflite_fp32":
            for k in ("latency_ms_median", "latency_ms_p90", "latency_ms_mean", "latency_ms_min"):
                r[k] *= SLOWER
            r["fps"] /= SLOWER
    (tmp / "merge.json").write_text(json.dumps(doc))
    return tmp / "merge.json"


@pytest.fixture(scope="module")
def bench(exported_run, merge_file, tmp_path_factory):
    """The benchmark of every published artifact, with the device's rows merged: (exit code, output folder)."""
    out = tmp_path_factory.mktemp("bench")
    rc = cli.main(["--run", str(exported_run), "--out", str(out), *FAST, "--merge", str(merge_file)])
    return rc, out


@pytest.fixture(scope="module")
def results(bench):
    rc, out = bench
    assert rc == 0
    return json.loads((out / "results.json").read_text())


def _host_rows(results):
    return [r for r in results["rows"] if r["device"] == results["meta"]["host"]]


@slow
def test_writes_every_output_with_the_columns(bench, results):
    _, out = bench
    for name in ("results.csv", "results.json", "results.md", "report.md", "bench_settings.json", *PLOTS):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial*")), "a temporary file was left behind"
    with open(out / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert set(REQUIRED) <= set(csv_rows[0]) and list(csv_rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert len(csv_rows) == len(results["rows"])
    meta = results["meta"]["devices"][results["meta"]["host"]]
    assert meta["cpu_count"] >= 1 and meta["cpu_model"] and meta["python"]
    assert {"ai-edge-litert", "onnxruntime", "numpy"} <= set(meta["packages"])
    assert json.loads((out / "bench_settings.json").read_text())["threads"] == list(THREADS)


@slow
def test_every_published_artifact_has_a_row_per_thread_count(exported_run, results):
    published = load_manifest(exported_run / "export").formats
    host = _host_rows(results)
    assert sorted((r["format"], r["threads"]) for r in host) == sorted((f, t) for f in published for t in THREADS)
    assert not [r for r in host if r["error"]], [r["error"] for r in host if r["error"]]
    assert {r["runtime"] for r in host if r["format"].startswith("onnx")} == {"onnxruntime"}
    assert {r["runtime"] for r in host if r["format"].startswith("tflite")} == {"litert"}


@slow
def test_figures_are_sane(exported_run, results):
    manifest = load_manifest(exported_run / "export")
    for r in _host_rows(results):
        name = f"{r['format']} at {r['threads']} threads"
        assert 0 < r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_p90"], name
        assert r["latency_ms_std"] >= 0 and r["n_runs"] == 5, name
        assert r["fps"] == pytest.approx(1000 / r["latency_ms_median"], rel=1e-3), name
        assert 0 <= r["top1"] <= 1 and 0 <= r["agreement"] <= 1, name
        assert r["reference"] == "keras_float" and r["n_test"] > 0
        assert set(r["per_class_top1"]) == set(manifest.labels)
        entry = manifest.entry(r["format"])
        assert r["size_mb"] == pytest.approx(entry.size_bytes / 1e6, abs=1e-4)
        assert abs(r["top1"] - entry.test_top1) <= 1 / r["n_test"] + 1e-9, f"{name}: top-1 differs from export's"
        assert r["loop_fps"] > 0 and r["loop_ms"] == pytest.approx(1000 / r["loop_fps"], rel=1e-2), name
        assert r["loop_overhead_ms"] == pytest.approx(r["loop_ms"] - r["loop_inference_ms"], abs=1e-3), name
        assert r["capture_ms"] > 0 and r["loop_frames"] == 20 - 10 - 1 and r["loop_top1"] >= r["top1"] - 0.2
        assert 0 <= r["loop_wait_ms"] < r["loop_ms"], name  # the threads' work shows up as wait, never beyond it
        assert r["loop_capture_ms"] > 0 and r["loop_preprocess_ms"] > 0 and r["preprocess_ms"] > 0, name
        if r["format"] in ("tflite_fp32", "onnx_fp32"):
            assert r["agreement"] == 1.0, name


@slow
def test_table_has_a_line_per_row(bench, results):
    _, out = bench
    assert (out / "results.md").read_text().count("| ok |") == len(results["rows"])


@slow
def test_int8_is_compared_with_float_on_every_thread_count_and_the_report_embeds_the_plots(bench, results):
    _, out = bench
    host = results["meta"]["host"]
    comps = {(c["format"], c["threads"]): c for c in results["comparisons"] if c["device"] == host}
    for fmt in ("tflite_int8", "tflite_int8_qat", "onnx_int8"):
        for t in THREADS:
            c = comps[(fmt, t)]
            assert c["float_format"] == float_counterpart(fmt).name and c["size_ratio"] > 1.1 and c["speedup"] > 0
            assert c["top1_delta_points"] is not None and 0 <= c["agreement"] <= 1, c
    report = (out / "report.md").read_text()
    assert "## int8 against float" in report  # the section is there; its figures are the comparisons above
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(links) == sorted(PLOTS) and all((out / link).is_file() for link in links)


@slow
def test_plots_are_not_blank(bench):
    _, out = bench
    for name in PLOTS:
        img = cv2.imread(str(out / name))
        assert img is not None and min(img.shape[:2]) > 200, name
        ink = np.mean(img.min(axis=2) < 200)  # share of pixels that are not (near) white
        colours = np.unique(img.reshape(-1, 3).astype(np.int32) @ np.array([1, 256, 65536]))
        assert 0.01 < ink < 0.9 and len(colours) > 20, name


@slow
def test_latency_runs_without_tensorflow_sklearn_or_matplotlib(device_rows, exported_run):
    proc, tmp = device_rows
    assert proc.returncode == 0, proc.stderr
    assert not (tmp / "attempts.log").exists(), (
        "benchmarks.device.latency tried to import " + (tmp / "attempts.log").read_text()
    )
    doc = json.loads((tmp / "rows.json").read_text())
    assert set(doc["meta"]["devices"]) == {DEVICE}
    rows = doc["rows"]
    assert sorted((r["format"], r["threads"]) for r in rows) == sorted((f, t) for f in DEVICE_FORMATS for t in (1, 2))
    for r in rows:
        assert r["device"] == DEVICE and not r["error"] and r["latency_ms_median"] > 0 and r["loop_fps"] > 0
        assert r["sha256"] == sha256_file(exported_run / "export" / r["file"])[:12]
    assert "| Format | Runtime | Threads |" in proc.stdout


@slow
def test_merged_rows_keep_their_device_and_are_never_mixed_in_ratios(results, merge_file):
    host = results["meta"]["host"]
    rows = {(r["device"], r["format"], r["runtime"], r["threads"]): r for r in results["rows"]}
    device = [r for r in results["rows"] if r["device"] == DEVICE]
    assert sorted((r["format"], r["threads"]) for r in device) == sorted((f, t) for f in DEVICE_FORMATS for t in (1, 2))
    assert all(r["accuracy_from"] == host and r["top1"] is not None for r in device)  # the same files as the host's
    assert DEVICE in results["meta"]["devices"]
    comps = results["comparisons"]
    assert comps == comparisons(results["rows"])
    for c in comps:
        own = rows[(c["device"], c["format"], c["runtime"], c["threads"])]
        ref = rows[(c["device"], c["float_format"], c["runtime"], c["threads"])]
        assert c["speedup"] == pytest.approx(ref["latency_ms_median"] / own["latency_ms_median"], rel=1e-3)
    on_device = [c for c in comps if c["device"] == DEVICE]
    assert sorted(c["threads"] for c in on_device) == [1, 2] and {c["format"] for c in on_device} == {"tflite_int8"}
    merged = {(r["format"], r["threads"]): r for r in json.loads(merge_file.read_text())["rows"]}
    for c in on_device:  # the device's own float rows (made SLOWER times slower in merge.json), never the host's
        own_float = merged[("tflite_fp32", c["threads"])]["latency_ms_median"]
        host_ref = rows[(host, "tflite_fp32", "litert", c["threads"])]["latency_ms_median"]
        assert c["float_latency_ms_median"] == pytest.approx(own_float, rel=1e-6), (own_float, host_ref)


@slow
def test_a_broken_artifact_is_an_error_row_not_a_crash(exported_run, tmp_path):
    run = tmp_path / "broken"
    (run / "export").mkdir(parents=True)
    for name in ("settings.json", "splits.json", "labels.txt"):
        shutil.copy(exported_run / name, run / name)
    for f in (exported_run / "export").iterdir():
        shutil.copy(f, run / "export" / f.name)
    with open(run / "export" / "tflite_int8.tflite", "r+b") as f:  # flipped bytes: the checksum catches it
        f.seek(100)
        f.write(b"\x00" * 64)
    (run / "export" / "onnx_int8.onnx").write_bytes(b"not an onnx model")  # ... and a matching checksum: the runtime
    doc = json.loads((run / "export" / "manifest.json").read_text())
    for a in doc["artifacts"]:
        if a["format"] == "onnx_int8":
            a["sha256"], a["size_bytes"] = sha256_file(run / "export" / "onnx_int8.onnx"), 17
    (run / "export" / "manifest.json").write_text(json.dumps(doc))

    args = ["--run", str(run), "--formats", "tflite_fp32,tflite_int8,onnx_int8", "--threads", "1", "--runs", "3",
            "--warmup", "0", "--loop-frames", "0", "--no-plots", "--reference", "tflite_fp32"]  # fmt: skip
    assert cli.main(args) == 0
    rows = {r["format"]: r for r in json.loads((run / "bench" / "results.json").read_text())["rows"]}
    assert set(rows) == {"tflite_fp32", "tflite_int8", "onnx_int8"}
    assert not rows["tflite_fp32"]["error"] and rows["tflite_fp32"]["agreement"] == 1.0
    assert "does not match its manifest" in rows["tflite_int8"]["error"] and rows["tflite_int8"]["top1"] is None
    assert "onnxruntime" in rows["onnx_int8"]["error"] and rows["onnx_int8"]["latency_ms_median"] is None
    report = (run / "bench" / "report.md").read_text()
    assert "## Not measured" in report and "tflite_int8 (" in report.split("## Not measured")[1]
    assert cli.main([*args, "--min-accuracy", "0"]) == 1  # an artifact that cannot run does not meet any floor


@slow
def test_min_accuracy_fails_ci_naming_the_format(exported_run, tmp_path, capsys):
    quick = ["--threads", "1", "--runs", "3", "--warmup", "0", "--loop-frames", "0", "--no-plots"]
    args = ["--run", str(exported_run), "--out", str(tmp_path), "--formats", "tflite_fp32,tflite_int8", *quick,
            "--reference", "tflite_fp32"]  # fmt: skip
    assert cli.main([*args, "--min-accuracy", "0.3"]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--min-accuracy", "1.01"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"tflite_fp32: top-1 [01]\.\d+ < --min-accuracy 1\.01", err), err
    assert "tflite_int8: top-1" in err


@slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "no/such/run"], "no/such/run not found"),
        (["--threads", "0"], "--threads 0"),
        (["--formats", "tflite_int3"], "unknown format tflite_int3"),
        (["--merge", "no-such-rows.json"], "no-such-rows.json not found"),
    ],
)
def test_bad_input_exits_2_naming_it(exported_run, args, message, capsys, tmp_path):
    argv = ["--run", str(exported_run), "--no-plots", "--out", str(tmp_path / "out"), *args]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing is measured or written before the inputs check out


def test_ratios_only_within_one_device_runtime_and_thread_count():
    def row(device, fmt, threads, ms, runtime="litert"):
        size = 1.0 if "fp32" in fmt else 0.25
        return {"device": device, "format": fmt, "runtime": runtime, "threads": threads, "latency_ms_median": ms,
                "size_mb": size, "top1": 0.9, "agreement": 0.99, "quantization": None}  # fmt: skip

    rows = [row("a", "tflite_fp32", 1, 4.0), row("a", "tflite_int8", 1, 2.0), row("a", "tflite_int8", 2, 1.0),
            row("b", "tflite_int8", 1, 8.0), row("b", "onnx_int8", 1, 1.0, "onnxruntime")]  # fmt: skip
    comps = comparisons(rows)
    assert [(c["device"], c["format"], c["threads"], c["speedup"], c["size_ratio"]) for c in comps] == [
        ("a", "tflite_int8", 1, 2.0, 4.0)
    ]
    assert float_counterpart("tflite_int8_qat").name == "tflite_fp32"
    assert float_counterpart("onnx_int8").name == "onnx_fp32" and float_counterpart("onnx_fp32") is None
    assert pareto_front([(1.0, 0.90), (2.0, 0.95), (1.5, 0.80), (3.0, 0.95), (0.5, 0.70)]) == [4, 0, 1]


def _loop_row(fmt: str, threads: int, loop_ms: float, inference: float, wait: float, decode: float, prep: float):
    return new_row("dev", fmt, "litert", threads, loop_ms=loop_ms, loop_fps=1000 / loop_ms, loop_inference_ms=inference,
                   loop_overhead_ms=loop_ms - inference, loop_wait_ms=wait, loop_capture_ms=decode,
                   loop_preprocess_ms=prep, capture_ms=0.5, preprocess_ms=0.4, draw_ms=0.1,
                   latency_ms_median=inference / 1.5)  # fmt: skip


def test_loop_figures_count_rows_below_capture_plus_inference_and_name_the_slowest_stage():
    rows = [
        _loop_row("tflite_fp32", 1, loop_ms=5.3, inference=5.0, wait=0.05, decode=0.6, prep=0.5),  # 5.3 < 0.5 + 5.0
        _loop_row("tflite_int8", 1, loop_ms=1.1, inference=0.3, wait=0.6, decode=1.05, prep=0.45),  # 1.1 > 0.5 + 0.3
        _loop_row("tflite_int8", 2, loop_ms=1.3, inference=0.4, wait=0.7, decode=1.2, prep=0.5),  # slower: not best
    ]
    f = loop_figures(rows, target_ms=2.0)["dev"]
    assert [(r["format"], r["threads"]) for r in f["best"]] == [("tflite_fp32", 1), ("tflite_int8", 1)]
    assert [r["format"] for r in f["below"]] == ["tflite_fp32"]
    assert f["bottlenecks"] == {("tflite_int8", 1): ("decoding (reader thread)", 1.05)}
    assert f["overhead_ms"] == pytest.approx((0.3, 0.8)) and f["target_met"]
    assert (f["worst"]["format"], f["worst"]["threads"]) == ("tflite_int8", 2)  # any thread count: 0.9 ms
    assert f["slowdown"] == pytest.approx(1.5) and f["capture_ms"] == 0.5 and f["faster"] == 2
    rows[0]["loop_overhead_ms"] = 2.5
    assert not loop_figures(rows, target_ms=2.0)["dev"]["target_met"]
    assert loop_section(rows, cores={"dev": 2})  # the section exists; its sentences are these figures'
    assert loop_figures([new_row("dev", "tflite_int8", "litert", 1)]) == {}  # no loop figures: no section


def _with_serial(row: dict, serial_ms: float) -> dict:
    """The row with a one-thread reference loop measured beside it, taking serial_ms a frame."""
    row.update(serial_loop_ms=serial_ms, serial_loop_fps=1000 / serial_ms, loop_shape="threads",
               serial_loop_inference_ms=row["loop_inference_ms"], serial_loop_wait_ms=0.9, serial_loop_capture_ms=0.6,
               serial_loop_preprocess_ms=0.3, loop_vs_serial=round(serial_ms / row["loop_ms"], 3))  # fmt: skip
    return row


def test_the_measured_one_thread_loop_replaces_the_estimate_and_shows_under_each_row():
    rows = [
        _with_serial(_loop_row("tflite_fp32", 1, loop_ms=5.3, inference=5.0, wait=0.05, decode=0.6, prep=0.5), 6.2),
        _with_serial(_loop_row("tflite_int8", 1, loop_ms=1.1, inference=0.3, wait=0.6, decode=1.05, prep=0.45), 1.0),
    ]
    # The estimate (capture 0.5 + preprocess 0.4 + inference + draw 0.1 = 1.3 ms) says int8's loop beats one thread;
    # the one-thread loop measured beside it took 1.0 ms, so it does not.
    f = loop_figures(rows, target_ms=2.0, noise=0.05)["dev"]
    assert f["faster"] == 1 and f["measured"] == 2 and f["not_slower"] == 1
    assert f["ratios"] == pytest.approx((1.0 / 1.1, 6.2 / 5.3))
    text = "\n".join(loop_section(rows, noise=0.05))
    assert text.count("| one thread (reference) |") == 2 and "| edge (threads) |" in text
    assert "| 1.17x |" in text and "| 0.91x |" in text  # edge's loop FPS / the reference's, on edge's line
    assert "at least as fast (within the ±5% run-to-run noise) for 1 of 2 artifacts" in text
    assert "slower: tflite_int8 (0.91x)" in text
    assert "at least as fast (within the ±10% run-to-run noise) for 2 of 2" in "\n".join(loop_section(rows))
    rows[1]["loop_shape"] = "serial"  # a loop that read serially has one stage: all of it
    assert loop_figures(rows)["dev"]["bottlenecks"][("tflite_int8", 1)][0].startswith("reading, preprocessing")


def test_loop_columns_time_edge_and_the_one_thread_loop_on_the_same_video(int8, tmp_path):
    from benchmarks.device import loop
    from contracts.runners.classifier import Classifier

    video = loop.write_video(loop.synthetic_frames(40, (160, 120)), tmp_path / "loop.mp4")
    clf = Classifier.from_model(int8, threads=1)
    serial = loop.measure_serial_loop(clf, video, warmup=5, labels=[0] * 40)
    assert serial["loop_frames"] == 40 - 5 - 1 and serial["loop_ms"] == pytest.approx(1000 / serial["loop_fps"], 1e-2)
    assert 0 < serial["loop_wait_ms"] < serial["loop_ms"] and 0 <= serial["loop_top1"] <= 1
    assert serial["loop_wait_ms"] == pytest.approx(serial["loop_capture_ms"] + serial["loop_preprocess_ms"], 1e-3)
    cols = loop.loop_columns(clf, video, warmup=5, repeats=2)
    assert cols["loop_shape"] in ("serial", "threads") and cols["loop_frames"] == 40 - 5 - 1
    assert cols["loop_vs_serial"] == pytest.approx(cols["loop_fps"] / cols["serial_loop_fps"], abs=1e-3)
    assert {f"serial_{k}" for k in loop.SERIAL_KEYS} <= set(cols) and cols["serial_loop_capture_ms"] > 0


@slow
def test_every_host_row_has_the_one_thread_reference_loop(bench, results):
    _, out = bench
    for r in _host_rows(results):
        assert r["serial_loop_fps"] > 0 and r["loop_shape"] in ("serial", "threads"), r["format"]
        assert r["loop_vs_serial"] == pytest.approx(r["loop_fps"] / r["serial_loop_fps"], abs=1e-3)
    assert "| one thread (reference) |" in (out / "report.md").read_text()
    with open(out / "results.csv", newline="") as f:
        assert {"serial_loop_fps", "loop_vs_serial", "loop_shape"} <= set(next(csv.DictReader(f)))
