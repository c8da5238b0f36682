"""The watching benchmark (benchmarks.device.watching) runs to the end with every case, including a client that stops
reading, and its rows say what happened: nothing encoded with nobody watching, frames received with watchers, the
stalled client dropped. Speeds are reported, not asserted (that is the benchmark's job, on a quiet machine).

    pytest tests/test_watching.py -q
"""

from __future__ import annotations

import csv
import json

from edge_model import make_images

from benchmarks.device.loop import write_video
from benchmarks.device.watching import CASES, COLUMNS, main, measure_watching
from contracts.runners.classifier import Classifier


def test_every_case_runs_and_says_what_happened(int8, tmp_path):
    import cv2

    bgr, _ = make_images(12, seed=4)
    frames = [cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST) for img in bgr] * 5  # 60 frames
    video = write_video(frames, tmp_path / "clip.mp4")
    classifier = Classifier.from_model(int8, threads=1)
    rows = measure_watching(classifier, video, warmup=5, repeats=1, client_timeout_s=0.5)
    by_case = {r["watchers"]: r for r in rows}
    assert list(by_case) == list(CASES) and all(list(r)[: len(COLUMNS)] == list(COLUMNS) for r in rows)
    assert all(r["loop_fps"] > 0 and r["loop_frames"] == 60 - 5 - 1 for r in rows)
    assert by_case["off"]["frames_encoded"] is None and by_case["off"]["vs_off"] == 1.0
    assert by_case["0"]["frames_encoded"] == 0 and by_case["0"]["jpeg_fps"] is None
    for case in ("1", "4"):
        assert by_case[case]["frames_encoded"] > 0, case
        assert by_case[case]["jpeg_fps"] > 0 and by_case[case]["events_fps"] > 0, case
    assert by_case["1 stalled"]["stalled_dropped"] is True
    assert all(r["stalled_dropped"] is None for r in rows if r["watchers"] != "1 stalled")


def test_cli_writes_json_and_csv(int8, tmp_path, capsys):
    out, table = tmp_path / "watching.json", tmp_path / "watching.csv"
    code = main(["--model", str(int8), "--frames", "40", "--warmup", "5", "--repeats", "1", "--threads", "1",
                 "--client-timeout", "0.5", "--out", str(out), "--csv", str(table)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == list(COLUMNS) and "1 stalled" in printed
    report = json.loads(out.read_text())
    assert [r["watchers"] for r in report["rows"]] == list(CASES) and report["meta"]["threads"] == 1
    with open(table, newline="") as f:
        assert [r["watchers"] for r in csv.DictReader(f)] == list(CASES)


def test_cli_refuses_bad_flags_in_one_line(int8, tmp_path, capsys):
    assert main(["--model", str(int8), "--frames", "5"]) == 2
    assert main(["--model", str(int8), "--out", str(tmp_path / "missing" / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: --") for line in err)
