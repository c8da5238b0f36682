"""python -m edge --serve and --save-uncertain, end to end: the flags as a user gives them, a real server, real files.

(The server and feed alone: tests/test_edge_live.py; the page in a browser: tests/test_edge_page.py; the keeper and
the saver alone: tests/test_edge_collect.py.)
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import cv2
import pytest
from edge_model import REPO, make_images, run_edge, write_images


@pytest.fixture()
def pics(tmp_path):
    folder = tmp_path / "pics"
    write_images(folder, *make_images(6, seed=5))
    return folder


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge: error: ") and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_port_in_use_is_one_line_before_any_frame(int8, pics):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_edge("--headless", "--source", pics, "--model", int8, "--serve", str(port))
    line = _one_line_error(p)
    assert f"port {port}" in line and "in use" in line and "--serve" in line
    assert p.stdout == ""  # nothing was classified


@pytest.mark.parametrize(
    "serve, words",
    [("203.0.113.7:8080", ["203.0.113.7", "not an address of this machine"]), ("localhost:http", ["[HOST:]PORT"])],
)
def test_bad_serve_address_is_one_line(int8, pics, serve, words):
    line = _one_line_error(run_edge("--headless", "--source", pics, "--model", int8, "--serve", serve))
    assert all(w in line for w in words), line


def test_unwritable_save_uncertain_folder_is_one_line(int8, pics, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_line_error(run_edge("--headless", "--source", pics, "--model", int8, "--save-uncertain", blocker))
    assert str(blocker) in line and "--save-uncertain" in line


def test_save_uncertain_keeps_unsure_frames_with_their_predictions(int8, pics, tmp_path):
    out = tmp_path / "unsure"
    # --below 1: every frame is unsure; --uncertain-every 1e-6: no rate limit in the way (the saver may still drop a
    # frame while it is busy writing: it never makes the loop wait)
    p = run_edge("--headless", "--source", pics, "--model", int8, "--save-uncertain", out, "--below", "1",
                 "--uncertain-every", "0.000001")  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = {d["frame"]: d for d in map(json.loads, p.stdout.splitlines())}
    kept = sorted((out / "_unsorted").glob("*.jpg"))
    assert len(lines) == 6 and 1 <= len(kept) <= 6 and f"kept {len(kept)} uncertain frame" in p.stderr
    for jpg in kept:
        assert cv2.imread(str(jpg)) is not None  # whole images only
        side = json.loads(jpg.with_suffix(".json").read_text())
        line = lines[side["frame"]]
        assert side["top_k"][0]["label"] == line["label"] and abs(side["score"] - line["score"]) < 1e-4
        assert side["below"] == 1.0 and side["source"] == line["source"]
    for label in json.loads((int8.parent / "manifest.json").read_text())["labels"]:  # a folder each to sort into
        assert (out / label).is_dir()


def test_save_uncertain_is_rate_limited(int8, pics, tmp_path):
    out = tmp_path / "unsure"
    p = run_edge("--headless", "--source", pics, "--model", int8, "--save-uncertain", out, "--below", "1")
    assert p.returncode == 0, p.stderr
    kept = sorted((out / "_unsorted").glob("*.jpg"))  # 6 pictures in far less than the default 1 s: the first only
    assert len(kept) == 1 and json.loads(kept[0].with_suffix(".json").read_text())["frame"] == 0
    assert "5 more below it were not kept (one per 1 s, at most 1000 files)" in p.stderr


def test_save_uncertain_stops_at_its_cap(int8, pics, tmp_path):
    out = tmp_path / "unsure"
    args = ("--headless", "--source", pics, "--model", int8, "--save-uncertain", out, "--below", "1")
    assert run_edge(*args).returncode == 0
    p = run_edge(*args, "--uncertain-max", "1")  # the first run's frame fills it: nothing more, and a warning
    assert p.returncode == 0, p.stderr
    assert len(list((out / "_unsorted").glob("*.jpg"))) == 1 and "no more uncertain frames are kept" in p.stderr


def test_serve_shows_the_run_and_stops_on_sigterm(int8, pics):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "--headless", "--loop", "--print-every", "50", "--source", str(pics),
         "--model", str(int8), "--serve", "127.0.0.1:0", "--serve-token", "s3cret"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = None
        for line in proc.stderr:
            m = re.search(r"live view: (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url is not None and url.endswith("/?token=s3cret")
        base = url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:  # a token given on loopback is still required
            urllib.request.urlopen(base + "health", timeout=10)
        assert refused.value.code == 401
        head = {"Authorization": "Bearer s3cret"}
        for _ in range(50):  # the first frame may take a moment: /health is 503 until then
            try:
                health = json.load(
                    urllib.request.urlopen(urllib.request.Request(base + "health", headers=head), timeout=10)
                )
                break
            except urllib.error.HTTPError as e:
                assert e.code == 503
        assert health["ok"] and health["model"] == "tflite_int8.tflite" and len(health["sha256"]) == 64
        latest = json.load(
            urllib.request.urlopen(urllib.request.Request(base + "latest.json", headers=head), timeout=10)
        )
        labels = json.loads((int8.parent / "manifest.json").read_text())["labels"]
        assert latest["label"] in labels and latest["source"].endswith(".png")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
