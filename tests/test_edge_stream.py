"""Network streams: --stall-timeout bounds a stream's reads, and a real stream server on loopback that is killed
and frozen mid-stream is an outage that `python -m edge --headless` reports (JSON lines) and recovers from.

    python -m pytest tests/test_edge_stream.py -m slow -s     # the server test; -s shows the measured times

The slow test serves a video of the test pictures with ffmpeg's own HTTP server (mpegts, `-listen 1`, 127.0.0.1
only). That server takes one client: when the client goes, ffmpeg exits, so each reconnect needs a new one, as a
camera that reboots does.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import pytest
from edge_model import LABELS, REPO, CaptureSpy, make_images, write_video
from system_packages import apt_install, can_install

from edge import cli

STALL_S = 2.0  # --stall-timeout in the server test
FRAME_KEYS = {"time", "frame", "source", "label", "score", "top_k", "inference_ms", "fps"}


class _CaptureSpy(CaptureSpy):
    """Records the arguments of every open."""

    opened: list = []


def _timeouts(open_ms: int, read_ms: int) -> list[int]:
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]


@pytest.mark.parametrize(
    ("source", "flags", "opened_with"),
    [
        ("http://127.0.0.1:9/s.ts", [], (cv2.CAP_FFMPEG, _timeouts(10000, 10000))),  # the default: 10 s
        ("rtsp://127.0.0.1:9/cam", ["--stall-timeout", "2.5"], (cv2.CAP_FFMPEG, _timeouts(10000, 2500))),
        ("http://127.0.0.1:9/s.ts", ["--stall-timeout", "30"], (cv2.CAP_FFMPEG, _timeouts(30000, 30000))),
        ("0", ["--stall-timeout", "1.5"], ()),  # a camera: no FFmpeg params; V4L2 reads its timeout from the env
    ],
)
def test_stall_timeout_bounds_a_streams_reads_and_opens(int8, monkeypatch, capsys, source, flags, opened_with):
    monkeypatch.setattr(cv2, "VideoCapture", _CaptureSpy)
    monkeypatch.delenv("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", raising=False)
    _CaptureSpy.opened = []
    assert cli.main(["--model", str(int8), "--source", source, "--headless", "--max-frames", "3", *flags]) == 0
    target = int(source) if source.isdigit() else source
    assert _CaptureSpy.opened == [(target, *opened_with)]
    assert len(capsys.readouterr().out.splitlines()) == 3
    # V4L2 takes its read timeout from the environment only, in whole seconds; streams leave it alone
    assert os.environ.get("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT") == ("2" if source == "0" else None)


def test_a_v4l2_timeout_the_user_set_wins(int8, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", _CaptureSpy)
    monkeypatch.setenv("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "30")
    assert cli.main(["--model", str(int8), "--source", "0", "--headless", "--max-frames", "1"]) == 0
    assert os.environ["OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"] == "30"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_stall_timeout_must_be_a_positive_number_of_seconds(int8, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli.main(["--model", str(int8), "--source", "rtsp://127.0.0.1:9/cam", "--stall-timeout", value])
    assert e.value.code == 2 and "--stall-timeout" in capsys.readouterr().err


def test_stall_timeout_is_in_the_help():
    text = " ".join(cli.build_parser().format_help().split())
    assert "--stall-timeout SECONDS" in text and "(default 10)" in text and '"event": "outage"' in text


# -- a real stream server on loopback ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    """ffmpeg from Debian's packages: installed here when missing and this runs as root (CI, a fresh machine)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    if not can_install():
        pytest.skip("needs ffmpeg: sudo apt-get install ffmpeg (the test installs it itself when run as root)")
    error = apt_install("ffmpeg")
    if error:
        pytest.fail(error)
    return shutil.which("ffmpeg") or pytest.fail("apt-get installed ffmpeg, but it is not on PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _StreamServer:
    """ffmpeg serving a looping video as MPEG-TS over HTTP on 127.0.0.1, in real time, to one client."""

    def __init__(self, ffmpeg: str, clip, port: int, log):
        self.url = f"http://127.0.0.1:{port}/s.ts"
        self._cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                     "-i", str(clip), "-an", "-c:v", "mpeg2video", "-q:v", "2", "-g", "25", "-f", "mpegts",
                     "-listen", "1", self.url]  # fmt: skip
        self._log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Starts a server; returns time.monotonic() then."""
        self.proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        return time.monotonic()

    def freeze(self) -> float:
        """SIGSTOP: the connection stays open and no byte comes, as from a camera whose firmware hangs."""
        self.proc.send_signal(signal.SIGSTOP)
        return time.monotonic()

    def kill(self) -> float:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen process is killed as well, but let it go cleanly
            self.proc.kill()
            self.proc.wait(timeout=10)
        return time.monotonic()


class _Lines:
    """`python -m edge --headless` stdout, read on a thread: each line parsed, with when it came in."""

    def __init__(self, stream):
        self._queue: queue.Queue = queue.Queue()
        self.seen: list[tuple[float, dict]] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self._queue.put((time.monotonic(), json.loads(line)))  # a line that is not JSON fails the test here

    def wait_for(self, what: str, want, timeout: float, explain) -> tuple[float, dict]:
        """The next line for which want(line) holds; fails, saying what came instead, after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrived, d = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append((arrived, d))
            if want(d):
                return arrived, d
        pytest.fail(f"no {what} within {timeout:g} s; last lines {[d for _, d in self.seen[-5:]]}\n{explain()}")

    def frames(self, n: int, timeout: float, explain) -> tuple[float, dict]:
        for _ in range(n):
            last = self.wait_for("frame line", lambda d: "frame" in d, timeout, explain)
        return last


def _event(kind: str):
    return lambda d: d.get("event") == kind


@pytest.mark.slow
def test_a_stream_that_dies_or_freezes_is_reported_and_reconnected(int8, ffmpeg, tmp_path):
    bgr, _ = make_images(50, seed=41, boost=(90, 130))
    clip = write_video(tmp_path / "clip.mp4", bgr, fps=25.0)  # 2 s of pictures, looped by the server
    server_log = open(tmp_path / "ffmpeg.log", "w")  # noqa: SIM115 (closed in finally)
    server = _StreamServer(ffmpeg, clip, _free_port(), server_log)
    edge_err = tmp_path / "edge.err"
    edge = None

    def explain() -> str:
        return f"edge stderr:\n{edge_err.read_text()[-3000:]}\nffmpeg:\n{(tmp_path / 'ffmpeg.log').read_text()[-1000:]}"

    try:
        server.start()
        with open(edge_err, "w") as err:
            edge = subprocess.Popen(
                [sys.executable, "-m", "edge", "--model", str(int8), "--source", server.url, "--headless",
                 "--stall-timeout", str(STALL_S), "--threads", "1"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        lines = _Lines(edge.stdout)
        lines.frames(10, 60, explain)  # the stream is being classified

        # (a) The server dies mid-stream, stays down a while, and comes back.
        server.kill()
        _, dead = lines.wait_for("outage line after the server was killed", _event("outage"), 30, explain)
        time.sleep(1.5)  # down: reconnects are refused meanwhile
        restarted = server.start()
        lines.wait_for("recovered line after the restart", _event("recovered"), 60, explain)
        first_after_kill, _ = lines.frames(1, 30, explain)
        lines.frames(10, 30, explain)

        # (b) The server freezes: the connection stays open, nothing comes. Only the stall timeout can notice.
        frozen = server.freeze()
        noticed, stalled = lines.wait_for("outage line after the server froze", _event("outage"), 60, explain)
        server.kill()  # SIGCONT, then gone: its one client has left, as a hung camera rebooting would
        restarted2 = server.start()
        lines.wait_for("recovered line after the frozen server was replaced", _event("recovered"), 60, explain)
        first_after_stall, _ = lines.frames(1, 30, explain)
        lines.frames(10, 30, explain)

        edge.send_signal(signal.SIGTERM)  # as systemd stops it: exit 0
        assert edge.wait(timeout=30) == 0, explain()
    finally:
        if edge is not None and edge.poll() is None:
            edge.kill()
            edge.wait(timeout=10)
        server.kill()
        server_log.close()

    detect_s = noticed - frozen
    recovery_kill_s, recovery_stall_s = first_after_kill - restarted, first_after_stall - restarted2
    print(f"\nstall detected {detect_s:.2f} s after SIGSTOP (--stall-timeout {STALL_S:g}); first frame line "
          f"{recovery_kill_s:.2f} s after the killed server restarted, {recovery_stall_s:.2f} s after the frozen one "
          f"was replaced; outages {stalled['since']} (stalled), {dead['since']} (failed)")  # fmt: skip

    # What was reported, in order: each outage once, each recovery once, frame lines right after each recovery.
    seen = [d for _, d in lines.seen]
    first_frame = next(i for i, d in enumerate(seen) if "frame" in d)
    events = [(i, d) for i, d in enumerate(seen) if "event" in d and i > first_frame]
    assert [d["event"] for _, d in events] == ["outage", "recovered", "outage", "recovered"]
    assert [d["reason"] for _, d in events] == ["failed", "failed", "stalled", "stalled"]
    for (i, outage), (j, back) in zip(events[::2], events[1::2], strict=True):
        before = [d for d in seen[:i] if "frame" in d][-1]
        assert outage["last_frame"] == back["last_frame"] == before["frame"]  # the last frame line before it
        assert back["since"] == outage["since"] and back["outage_s"] > 0 and back["tries"] >= 1
        assert outage["source"] == back["source"] == server.url
        assert "frame" in seen[j + 1]  # frames are classified again at once
    # The stall was noticed about when the stall timeout ran out: far sooner than OpenCV's own 30 s.
    assert detect_s < STALL_S + 15

    frames = [d for d in seen if "frame" in d]
    assert all(set(d) == FRAME_KEYS for d in frames)  # the frame lines are what they always were
    assert all(a["frame"] < b["frame"] for a, b in itertools.pairwise(frames))
    assert {d["label"] for d in frames} <= set(LABELS) and len({d["label"] for d in frames}) >= 2
    err = edge_err.read_text()
    at_start = sum(d.get("event") == "outage" for d in seen[:first_frame])  # edge came up before the server did
    assert err.count("no frames since") == err.count("frames are back") == 2 + at_start and "Traceback" not in err
