"""benchmarks.device.soak on the tiny test model: a few hundred frames of edge's loop over a looping video, the report's
structure and figures, the verdict rule, RSS readings that follow memory both ways, and one-line refusals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from edge_model import HOST_ONLY, copy_shipped, import_blocker

from benchmarks.device import soak
from benchmarks.device.sampling import SUMMARY_KEYS, rss_mib, summarize
from benchmarks.device.settings import BenchError
from benchmarks.device.soak import SoakSettings, run_soak


def test_soak_classifies_every_frame_of_a_looping_video_and_reports_each_interval(int8, tmp_path):
    s = SoakSettings(model=str(int8), frames=300, interval=100, warmup=20, rss_every=10, video_frames=60, threads=1,
                     out=str(tmp_path / "soak.json"), plot=str(tmp_path / "soak.png"))  # fmt: skip
    lines = []
    report = run_soak(s, log=lines.append)
    r, rows = report["summary"], report["rows"]

    assert r["error"] is None and r["frames"] == 300 and r["intervals"] == 3
    assert [row["frames"] for row in rows] == [100, 200, 300]
    assert r["format"] == "tflite_int8" and r["threads"] == 1 and r["rss_source"] == "VmRSS"
    for row in rows:
        assert row["fps"] > 0 and row["rss_readings"] == 10  # every 10th frame, the interval's last included
        assert 0 < row["rss_min_mib"] <= row["rss_mib"] <= row["rss_max_mib"]
        assert row["open_fds"] > 0 and row["threads"] >= 1
    assert [row["elapsed_s"] for row in rows] == sorted(row["elapsed_s"] for row in rows)
    # 320 frames from a 60-frame video: it was started over at least 5 times, so the loop option is in play
    assert rows[-1]["captures_opened"] >= math.ceil(320 / 60)
    assert r["rss_start_mib"] == rows[0]["rss_mib"] and r["rss_end_mib"] == rows[-1]["rss_mib"] > 0
    assert r["rss_growth_pct"] == pytest.approx(100 * (r["rss_end_mib"] / r["rss_start_mib"] - 1), abs=0.01)
    assert r["verdict"] == ("flat" if r["rss_growth_pct"] < 5.0 else "growing")
    assert r["fps_first"] == rows[0]["fps"] and r["fps_last"] == rows[-1]["fps"] and r["fps_median"] > 0
    assert r["rss_after_warmup_mib"] > 0 and r["wall_s"] == rows[-1]["elapsed_s"] > 0
    assert len(lines) == 1 + 3 and "tflite_int8" in lines[0]  # the model line, then one per interval

    written = json.loads((tmp_path / "soak.json").read_text())
    assert written == json.loads(json.dumps(report)) and written["settings"]["frames"] == 300
    assert written["meta"]["device"] == r["device"]
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_ends_on_a_short_last_interval_and_exits_by_the_verdict(int8, tmp_path, capsys):
    out = tmp_path / "soak.json"
    flags = ["--model", str(int8), "--frames", "250", "--interval", "100", "--warmup", "10", "--video-frames", "40",
             "--threads", "1", "--out", str(out)]  # fmt: skip
    code = soak.main(flags)
    report = json.loads(out.read_text())
    assert [row["frames"] for row in report["rows"]] == [100, 200, 250]
    assert report["rows"][-1]["rss_readings"] == 5  # frames 210..250
    assert code == (0 if report["summary"]["verdict"] == "flat" else 1)
    printed = capsys.readouterr().out
    assert printed.startswith("250 frames in ") and f"wrote {out}" in printed


def _row(frames: int, rss: float, fps: float) -> dict:
    return {"frames": frames, "elapsed_s": frames / fps, "fps": fps, "rss_mib": rss, "rss_min_mib": rss - 2,
            "rss_max_mib": rss + 3, "rss_readings": 100, "open_fds": 9, "threads": 3, "captures_opened": 1}  # fmt: skip


def test_verdict_is_flat_only_below_the_growth_limit_of_the_first_interval():
    flat = summarize([_row(1000, 100.0, 30.0), _row(2000, 110.0, 20.0), _row(3000, 104.9, 25.0)])
    assert flat["verdict"] == "flat" and flat["rss_growth_pct"] == 4.9 and flat["rss_peak_mib"] == 113.0
    assert (flat["fps_first"], flat["fps_last"], flat["fps_median"], flat["fps_min"]) == (30.0, 25.0, 25.0, 20.0)
    assert summarize([_row(1000, 100.0, 30.0), _row(2000, 105.0, 30.0)])["verdict"] == "growing"
    assert summarize([_row(1000, 100.0, 30.0), _row(2000, 101.0, 30.0)], max_growth_pct=1.0)["verdict"] == "growing"
    assert summarize([]) == dict.fromkeys(SUMMARY_KEYS)  # stopped during warm-up: nothing to judge


def test_rss_reading_is_current_memory_not_the_peak():
    import mmap

    before, source = rss_mib()
    # 64 MiB mapped and touched, then unmapped: an anonymous mapping goes back to the OS when closed, whatever malloc
    # keeps (numpy's buffer may come from a heap that glibc does not trim once TensorFlow has run in this process).
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    grown = rss_mib()[0]
    block.close()
    after = rss_mib()[0]
    assert source == "VmRSS" and before > 0
    assert grown - before > 50 and grown - after > 50  # a leak shows, and so does its release


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames", "0"], "--frames 0 is below 1"),
        (["--warmup", "0"], "--warmup 0 is below 1"),
        (["--threads", "0"], "--threads 0 is below 1"),
        (["--max-growth", "0"], "--max-growth 0.0 is not a positive percentage"),
        (["--out", "no/such/folder/soak.json"], "--out no/such/folder/soak.json cannot be written"),
    ],
)
def test_bad_flags_are_one_line_before_the_soak(int8, flags, message, capsys):
    assert soak.main(["--model", str(int8), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1


def test_plot_without_the_host_side_is_refused_before_the_soak(int8, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "benchmarks.plots", None)  # as in a Pi bundle: no benchmarks/plots.py
    flags = ["--model", str(int8), "--frames", "20", "--warmup", "1", "--plot", str(tmp_path / "soak.png")]
    assert soak.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --plot needs benchmarks.plots (host side)") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_runs_from_what_the_bundle_ships_without_matplotlib_and_refuses_plot_there(int8, tmp_path):
    """As on the Pi: only the bundle's files, and TensorFlow, matplotlib & co. cannot even be tried."""
    env = {**os.environ, **import_blocker(tmp_path / "site", HOST_ONLY, tmp_path / "attempts.log")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(copy_shipped(tmp_path / "pkg"))])
    flags = ["--model", str(int8), "--frames", "30", "--interval", "10", "--warmup", "5", "--video-frames", "20",
             "--threads", "1", "--out", str(tmp_path / "soak.json")]  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "benchmarks.device.soak", *flags], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode in (0, 1) and not (tmp_path / "attempts.log").exists(), p.stderr
    assert json.loads((tmp_path / "soak.json").read_text())["summary"]["frames"] == 30
    plot = subprocess.run([sys.executable, "-m", "benchmarks.device.soak", *flags, "--plot", str(tmp_path / "s.png")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plot.returncode == 2 and plot.stderr.startswith("error: --plot needs benchmarks.plots (host side)")
    assert len(plot.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.png").exists()


def test_a_missing_model_is_one_line(tmp_path, capsys):
    assert soak.main(["--model", str(tmp_path / "none.tflite"), "--frames", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none.tflite not found" in err and len(err.splitlines()) == 1


def test_settings_are_checked_by_name():
    with pytest.raises(BenchError, match="--interval 0"):
        soak.check_soak_settings(SoakSettings(model="m.tflite", interval=0))
