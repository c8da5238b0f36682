"""`python -m edge` as a user runs it: JSON lines, videos, recordings, faults, Ctrl-C, and no TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from edge_model import (
    REPO,
    SAMPLES,
    TF_MODULES,
    CaptureSpy,
    import_blocker,
    make_images,
    read_labels_csv,
    run_edge,
    write_images,
    write_video,
)

from contracts.runners.classifier import Classifier
from edge import cli
from edge.display import draw_overlay


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 60-frame mp4v video of pictures, some of them ambiguous, and the pictures themselves."""
    bgr, y = make_images(60, seed=31)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", bgr), bgr, y


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line must be JSON


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_runs_without_tensorflow_and_labels_each_picture(int8, tmp_path):
    env = import_blocker(tmp_path / "site", TF_MODULES, tmp_path / "attempts.log")
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env={**os.environ, **env}, capture_output=True)
    assert probe.returncode != 0 and b"blocked by the test" in probe.stderr  # the blocker works
    (tmp_path / "attempts.log").unlink()

    p = run_edge("--headless", "--source", SAMPLES, "--model", int8, env=env)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "attempts.log").exists(), "edge tried to import " + (tmp_path / "attempts.log").read_text()
    lines = _lines(p.stdout)
    truth = read_labels_csv(SAMPLES / "labels.csv")
    assert [d["source"] for d in lines] == sorted(truth)  # each picture once, in name order (labels.csv skipped)
    assert [d["label"] for d in lines] == [truth[name] for name in sorted(truth)]
    assert [d["frame"] for d in lines] == list(range(len(truth)))
    d = lines[0]
    assert set(d) == {"time", "frame", "source", "label", "score", "top_k", "inference_ms", "fps"}
    assert len(d["top_k"]) == 3 and d["top_k"][0]["label"] == d["label"] and d["inference_ms"] > 0


def test_video_predictions_match_the_pictures(int8, clip):
    path, bgr, _ = clip
    p = run_edge("--headless", "--source", path, "--model", int8)
    assert p.returncode == 0, p.stderr
    lines = _lines(p.stdout)
    assert [d["frame"] for d in lines] == list(range(len(bgr)))  # every frame, in order, then a clean exit
    expected = [r.top.label for r in map(Classifier.from_model(int8).classify, bgr)]
    agreement = np.mean([d["label"] == e for d, e in zip(lines, expected, strict=True)])
    assert agreement >= 0.95, f"video vs pictures agreement {agreement:.3f}"


def test_onnx_backend_gives_the_same_labels(edge_run, clip):
    path, bgr, _ = clip
    tfl = _lines(run_edge("--headless", "--source", path, "--model", edge_run / "export" / "tflite_fp32.tflite").stdout)
    p = run_edge("--headless", "--source", path, "--model", edge_run / "export" / "onnx_fp32.onnx", "--threads", "1")
    assert p.returncode == 0, p.stderr
    onnx = _lines(p.stdout)
    assert len(onnx) == len(tfl) == len(bgr)
    assert [d["label"] for d in onnx] == [d["label"] for d in tfl]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(onnx, tfl, strict=True)) < 1e-3


def test_record_and_max_frames(int8, clip, tmp_path):
    path, bgr, _ = clip
    out = tmp_path / "rec" / "annotated.mp4"
    out.parent.mkdir()  # --record does not create folders: a mistyped one is an error, not a new folder
    p = run_edge("--headless", "--source", path, "--model", int8, "--record", out, "--max-frames", 25)
    assert p.returncode == 0, p.stderr
    assert len(_lines(p.stdout)) == 25
    cap = cv2.VideoCapture(str(out))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (r := cap.read())[0]:
        frames.append(r[1])
    cap.release()
    assert len(frames) == 25 and frames[0].shape == bgr[0].shape
    assert fps == pytest.approx(10.0)  # the clip's own rate
    assert not np.array_equal(frames[0], bgr[0])  # the overlay is drawn on it
    assert os.listdir(out.parent) == ["annotated.mp4"]  # no partial file left beside it


def _count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run refused before it started (no log lines: nothing was loaded or opened)."""
    lines = _error_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("edge: error: "), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    return lines[0]


def test_record_refuses_an_existing_file(int8, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    out.write_bytes(b"yesterday's recording")
    p = run_edge("--headless", "--source", clip[0], "--model", int8, "--record", out, "--max-frames", 5)
    assert _one_error_line(p) == f"edge: error: --record {out} exists: pass --overwrite to replace it, or another name"
    assert out.read_bytes() == b"yesterday's recording"
    assert os.listdir(tmp_path) == ["annotated.mp4"]


def test_record_overwrite_replaces_an_existing_file(int8, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    out.write_bytes(b"yesterday's recording")
    p = run_edge("--headless", "--source", clip[0], "--model", int8, "--record", out, "--overwrite", "--max-frames", 5)
    assert p.returncode == 0, p.stderr
    assert _count_frames(out) == 5
    assert os.listdir(tmp_path) == ["annotated.mp4"]  # replaced atomically: no partial file left beside it


@pytest.mark.parametrize("name", ["same path, --overwrite", "other spelling", "symlink, --overwrite"])
def test_record_never_writes_over_the_source(int8, clip, tmp_path, name):
    source = tmp_path / "clip.mp4"
    shutil.copy(clip[0], source)
    (tmp_path / "sub").mkdir()
    record = {
        "same path, --overwrite": source,
        "other spelling": tmp_path / "sub" / ".." / "clip.mp4",
        "symlink, --overwrite": tmp_path / "sub" / "link.mp4",
    }[name]
    if name.startswith("symlink"):
        record.symlink_to(source)
    flags = ["--overwrite"] if "--overwrite" in name else []
    before = sorted(os.listdir(tmp_path)), source.read_bytes()
    p = run_edge("--headless", "--source", source, "--model", int8, "--record", record, *flags, "--max-frames", 5)
    assert f"--record {record} is the --source: record to another name" in _one_error_line(p)
    assert (sorted(os.listdir(tmp_path)), source.read_bytes()) == before
    assert _count_frames(source) == len(clip[1])


@pytest.mark.parametrize("case", ["missing folder", "under a file"])
def test_record_into_a_folder_that_cannot_be_written_is_one_line(int8, clip, tmp_path, case):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    folder, message = {
        "missing folder": (tmp_path / "no" / "such", "is not a writable folder): mkdir -p"),
        "under a file": (tmp_path / "notes.txt", "is not a writable folder): record to a folder you can write"),
    }[case]
    p = run_edge("--headless", "--source", clip[0], "--model", int8, "--record", folder / "out.mp4", "--max-frames", 5)
    line = _one_error_line(p)
    assert str(folder) in line and message in line
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no folder made


def test_record_into_a_read_only_folder_is_one_line(int8, clip, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root: mode bits do not bind it, so answer as the kernel would for a user
        access = os.access
        denied = os.path.abspath(folder)
        monkeypatch.setattr(
            os,
            "access",
            lambda p, mode, **kw: access(p, mode, **kw) and not (mode & os.W_OK and os.path.abspath(p) == denied),
        )
    try:
        code = cli.main(["--headless", "--source", str(clip[0]), "--model", str(int8), "--record",
                         str(folder / "out.mp4"), "--max-frames", "5"])  # fmt: skip
    finally:
        folder.chmod(0o700)
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"{folder} is not a writable folder): record to a folder you can write" in lines[0]
    assert os.listdir(folder) == []


def test_overlay_draws_in_place_but_copies_a_strided_or_read_only_frame(int8, clip):
    _, bgr, _ = clip
    result = Classifier.from_model(int8).classify(bgr[0])
    frame = bgr[0].copy()
    assert draw_overlay(frame, result, 30.0) is frame and not np.array_equal(frame, bgr[0])  # no copy per frame
    bgra = cv2.cvtColor(bgr[0], cv2.COLOR_BGR2BGRA)
    strided, locked = bgra[..., :3], bgr[0].copy()
    locked.flags.writeable = False
    for img in (strided, locked):
        before = img.copy()
        canvas = draw_overlay(img, result, 30.0)
        assert canvas is not img and not np.array_equal(canvas, before) and np.array_equal(img, before)


def test_min_score_reports_unknown(edge_run, clip):
    path, bgr, _ = clip
    model = edge_run / "export" / "tflite_fp32.tflite"
    scores = np.array([d["score"] for d in _lines(run_edge("--headless", "--source", path, "--model", model).stdout)])
    threshold = float(np.round(np.quantile(scores, 0.3), 3))
    assert 0 < np.sum(scores < threshold) < len(scores)
    p = run_edge("--headless", "--source", path, "--model", model, "--min-score", threshold, "--top-k", 2)
    assert p.returncode == 0, p.stderr
    for d, s in zip(_lines(p.stdout), scores, strict=True):
        assert (d["label"] is None) == (s < threshold)
        assert len(d["top_k"]) <= 2 and all(c["score"] >= threshold for c in d["top_k"])
        assert d["score"] == pytest.approx(s, abs=1e-5)  # the best score is still reported


def test_print_every(int8, clip):
    p = run_edge("--headless", "--source", clip[0], "--model", int8, "--print-every", 10)
    assert [d["frame"] for d in _lines(p.stdout)] == [0, 10, 20, 30, 40, 50]


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


FAULTS = {
    # name: (how to break a copy of the run, extra flags, what the error line must name)
    "missing model": (lambda e: (e / "tflite_int8.tflite").unlink(), [], "tflite_int8.tflite not found"),
    # A missing manifest, or one that does not list the model, is no fault: tests/test_foreign_models.py
    "checksum": (lambda e: _corrupt(e / "tflite_int8.tflite"), [], "tflite_int8.tflite does not match its manifest"),
    "bad backend": (lambda e: None, ["--backend", "tensorrt"], "unsupported backend 'tensorrt' for"),
    "wrong backend": (lambda e: None, ["--backend", "onnxruntime"], "tflite_int8.tflite is a litert model"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_are_one_line_and_exit_2(edge_run, tmp_path, fault):
    shutil.copytree(edge_run, tmp_path / "run")
    export = tmp_path / "run" / "export"
    breaks, flags, message = FAULTS[fault]
    breaks(export)
    p = run_edge("--headless", "--source", SAMPLES, "--model", export / "tflite_int8.tflite", *flags)
    assert p.returncode == 2
    lines = _error_lines(p.stderr)
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), p.stderr
    assert message in lines[0] and str(export) in lines[0]
    assert p.stdout == ""


def test_onnxruntime_not_installed(edge_run, tmp_path):
    env = import_blocker(tmp_path / "site", ("onnxruntime",), tmp_path / "attempts.log")
    model = edge_run / "export" / "onnx_fp32.onnx"
    p = run_edge("--headless", "--source", SAMPLES, "--model", model, env=env)
    assert p.returncode == 2
    lines = _error_lines(p.stderr)
    assert len(lines) == 1 and "onnxruntime is not installed" in lines[0] and str(model) in lines[0]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no/such/clip.mp4", "source no/such/clip.mp4 not found"),
        ("picamera", "needs picamera2, which is not"),
        ("broken.mp4", "broken.mp4 is not a video OpenCV can read"),
    ],
)
def test_bad_sources_are_one_line_and_exit_2(int8, tmp_path, source, message):
    if source == "broken.mp4":
        source = tmp_path / source
        source.write_bytes(b"not a video")
    p = run_edge("--headless", "--source", source, "--model", int8)
    lines = _error_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("edge: error: ") and message in lines[0]


def test_window_without_a_display_is_a_clear_error(int8):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run([sys.executable, "-m", "edge", "--source", str(SAMPLES), "--model", str(int8)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = _error_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1 and "--headless" in lines[0]


class _CameraSpy(CaptureSpy):
    """Records the camera (the first argument) of every open."""

    opened: list = []
    pictures, seed = 10, 5

    @staticmethod
    def record(args: tuple):
        return args[0]


def test_checksum_mismatch_opens_no_camera(edge_run, tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", _CameraSpy)
    _CameraSpy.opened = []
    good = edge_run / "export" / "tflite_int8.tflite"
    assert cli.main(["--model", str(good), "--source", "0", "--headless", "--max-frames", "3"]) == 0
    assert _CameraSpy.opened == [0]  # the spy does see a camera being opened

    shutil.copytree(edge_run, tmp_path / "run")
    bad = tmp_path / "run" / "export" / "tflite_int8.tflite"
    _corrupt(bad)
    _CameraSpy.opened = []
    assert cli.main(["--model", str(bad), "--source", "0", "--headless"]) == 2
    assert _CameraSpy.opened == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_exit_0(int8, tmp_path, sig):
    folder = tmp_path / "pics"
    write_images(folder, *make_images(6, seed=2))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "--headless", "--loop", "--source", str(folder), "--model", str(int8)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = [json.loads(proc.stdout.readline()) for _ in range(20)]  # more than one pass over 6 pictures
        assert [d["frame"] for d in first] == list(range(20))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted, stopping" in err and "Traceback" not in err
    for line in out.splitlines():
        json.loads(line)  # no half-written line at the end
