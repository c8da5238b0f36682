"""A model file reaches an interpreter only after its flatbuffer checks out; a measuring run survives a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_model import REPO, SAMPLES

from contracts.errors import BackendError
from contracts.runners.tflite_verify import ModelFileError, verify_tflite


def _corrupt(good: bytes, seed: int) -> bytes:
    """Truncated (1 in 3) or with 8 bytes changed in the flatbuffer's tables (its first and last 5%)."""
    rng = np.random.default_rng(seed)
    b = bytearray(good)
    if seed % 3 == 0:
        return bytes(b[: int(rng.integers(8, len(b)))])
    for _ in range(8):
        head = rng.random() < 0.5
        i = int(rng.integers(0, len(b) // 20)) if head else int(rng.integers(len(b) - len(b) // 20, len(b)))
        b[i] = int(rng.integers(0, 256))
    return bytes(b)


def test_published_models_pass(edge_run: Path):
    for p in (edge_run / "export").glob("*.tflite"):
        verify_tflite(p)


@pytest.mark.parametrize(
    "make, message",
    [(lambda g: b"", "is empty"), (lambda g: g[:5], "only 5 bytes"), (lambda g: b"\0" * 4 + b"ONNX" + g[8:], "no TFL3"),
     (lambda g: g[: len(g) // 2], "corrupt or truncated"), (lambda g: g[:-200], "corrupt or truncated")],
)  # fmt: skip
def test_broken_files_are_one_line_naming_the_file(edge_run: Path, tmp_path, make, message):
    good = (edge_run / "export" / "tflite_int8.tflite").read_bytes()
    bad = tmp_path / "model.tflite"
    bad.write_bytes(make(good))
    with pytest.raises(ModelFileError, match=message) as e:
        verify_tflite(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "re-run export" in str(e.value)


def test_the_backend_checks_before_the_interpreter_opens(edge_run: Path, tmp_path):
    from contracts.runners import create_backend

    bad = tmp_path / "cut.tflite"
    bad.write_bytes((edge_run / "export" / "tflite_fp32.tflite").read_bytes()[:4000])
    with pytest.raises(BackendError, match="corrupt or truncated"):
        create_backend("litert", bad, threads=1)


def test_most_corruptions_are_caught_and_what_passes_still_loads(edge_run: Path, tmp_path):
    """Seeded corruptions of the structure: the verifier rejects most; whatever it lets through, LiteRT opens
    without crashing this process (measured on tflite-runtime: 245 of 300 rejected, 1 of the rest crashed it)."""
    from contracts.runners import create_backend

    good = (edge_run / "export" / "tflite_int8.tflite").read_bytes()
    rejected = 0
    for seed in range(60):
        p = tmp_path / f"m{seed}.tflite"
        p.write_bytes(_corrupt(good, seed))
        try:
            verify_tflite(p)
        except ModelFileError:
            rejected += 1
            continue
        try:
            create_backend("litert", p, threads=1).close()
        except BackendError:
            pass
    assert rejected >= 30, rejected  # every truncation, and most changed tables


def test_latency_survives_a_model_that_crashes_its_interpreter(edge_run: Path, tmp_path, monkeypatch):
    """A model that kills the process (as tflite-runtime does on some corrupt graphs) is one error row."""
    import benchmarks.device.latency as lat

    crash = "import os, signal, sys\nif 'crash' in sys.argv[1]: os.kill(os.getpid(), signal.SIGSEGV)\n"
    monkeypatch.setattr(lat, "_PROBE", crash)
    good = tmp_path / "tflite_int8.tflite"
    good.write_bytes((edge_run / "export" / "tflite_int8.tflite").read_bytes())
    bad = tmp_path / "crash.tflite"
    bad.write_bytes(good.read_bytes())
    rows = lat.measure_models([good, bad, good], (1,), runs=5, warmup=1, rounds=1, loop_frames=0, log=lambda m: None)
    assert [r["error"] for r in rows][0] == "" and rows[2]["error"] == "", rows
    assert rows[0]["latency_ms_median"] > 0
    assert "crashed the interpreter (SIGSEGV)" in rows[1]["error"] and str(bad) in rows[1]["error"]


def test_latency_out_that_cannot_be_written_is_refused_before_measuring(edge_run: Path, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for out in (tmp_path / "notes.txt" / "rows.json", tmp_path / "missing" / "rows.json", tmp_path):
        r = subprocess.run([sys.executable, "-m", "benchmarks.device.latency", "--model",
                            str(edge_run / "export" / "tflite_int8.tflite"), "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 2, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and f"--out {out}" in errors[0], r.stderr
        assert "ms median" not in r.stderr, "it measured before refusing"
    assert not (tmp_path / "rows.json").exists()


def test_latency_loop_repeats_below_one_is_refused(edge_run: Path, capsys):
    import benchmarks.device.latency as lat

    assert lat.main(["--model", str(edge_run / "export" / "tflite_int8.tflite"), "--loop-repeats", "0"]) == 2
    assert "--loop-repeats must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, message",
    [(lambda m: m.update(image_size="96"), "Manifest.image_size is '96', not int"),
     (lambda m: m.update(labels="red green blue"), "Manifest.labels"),
     (lambda m: m["artifacts"][0]["input"].update(shape="1,32,32,3"), "TensorSpec.shape"),
     (lambda m: m["artifacts"][0]["output"].update(scale="0.1"), "TensorSpec.scale"),
     (lambda m: m.update(artifacts=["tflite_int8.tflite"]), "an artifact entry is a JSON str"),
     (lambda m: m.update(preprocessing=["RGB"]), "a Preprocessing entry is a JSON list")],
)  # fmt: skip
def test_a_damaged_manifest_is_one_line_in_edge(edge_run: Path, tmp_path, damage, message):
    export = tmp_path / "export"
    export.mkdir()
    (export / "tflite_int8.tflite").write_bytes((edge_run / "export" / "tflite_int8.tflite").read_bytes())
    manifest = json.loads((edge_run / "export" / "manifest.json").read_text())
    damage(manifest)
    (export / "manifest.json").write_text(json.dumps(manifest))
    r = subprocess.run([sys.executable, "-m", "edge", "--model", str(export / "tflite_int8.tflite"), "--source",
                        str(SAMPLES), "--headless"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and message in errors[0] and "manifest.json" in errors[0], r.stderr


@pytest.mark.parametrize(
    "doc, message",
    [('"rows"', "holds a JSON str"), ('{"rows": [{"format": "tflite_int8", "latency_ms_median": "3.1"}]}',
     "latency_ms_median = '3.1' where a number belongs"),
     ('{"rows": [{"format": "tflite_int8", "threads": "2"}]}', "threads = '2' where a int belongs"),
     ('{"rows": [{"format": "tflite_int8"}], "meta": [1]}', "meta is a JSON list")],
)  # fmt: skip
def test_damaged_rows_to_merge_are_one_line(tmp_path, doc, message):
    from benchmarks.device.rows import load_rows

    p = tmp_path / "pi4.json"
    p.write_text(doc)
    with pytest.raises(ValueError, match=message) as e:
        load_rows(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_bundle_out_that_cannot_be_written_is_refused(edge_run: Path, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    r = subprocess.run([sys.executable, "-m", "deploy.bundle", "--run", str(edge_run), "--out",
                        str(tmp_path / "notes.txt" / "dist")], cwd=REPO, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot be written" in r.stdout + r.stderr and "Traceback" not in r.stderr
