"""Saving photos on the device: files that never overwrite and are never half-written (a failing link, a file size
limit, a really full filesystem), the uncertain-frame keeper, and `python -m edge.collect` headless and in a window
(a fake one: the test OpenCV has no GUI); the slow proof collects two classes from videos and trains on them."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_model import REPO

from benchmarks.device.loop import write_video
from contracts.errors import EdgeError
from contracts.runners.classifier import Category, Result
from edge import saver as saver_mod
from edge.collect import CollectOptions, resolve_labels, run_collect
from edge.collector import QUIT, Collector, collect_window, label_for_key
from edge.frames import Frame
from edge.saver import DiskWarnings, FrameSaver, frame_stem, save_image
from edge.uncertain import UNSORTED, UncertainKeeper, check_uncertain_folder

LABELS = ["cat", "dog", "fox"]


@pytest.fixture
def edge_log():
    """The "edge" logger's messages (it does not propagate once edge.cli configured it, so caplog misses them)."""
    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("edge")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _noise(seed: int, hw=(48, 64), mean=(120, 120, 120), sd=30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, sd, (*hw, 3)), 0, 255).astype(np.uint8)


def _picture(seed: int, hw=(48, 64)) -> np.ndarray:
    """Smooth random BGR content: JPEG keeps it to about 1 level on average, and two seeds differ by about 10."""
    rng = np.random.default_rng(seed)
    return np.clip(cv2.GaussianBlur(rng.normal(128, 90, (*hw, 3)), (0, 0), 3), 0, 255).astype(np.uint8)


def _holds(path: Path, image: np.ndarray) -> bool:
    return np.abs(cv2.imread(str(path)).astype(int) - image).mean() < 3


def _decodes_whole(path: Path) -> bool:
    """A JPEG that ends with its end-of-image marker and decodes (a cut one fails one or the other)."""
    data = path.read_bytes()
    return data.endswith(b"\xff\xd9") and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


def _assert_nothing_half_written(folder: Path) -> list[Path]:
    jpgs = sorted(folder.rglob("*.jpg"))
    bad = [p.name for p in jpgs if not _decodes_whole(p)]
    assert not bad, f"half-written images: {bad}"
    assert not list(folder.rglob(".*partial*")), "a temporary file was left behind"
    return jpgs


# -- save_image -------------------------------------------------------------------------------------------------


def test_frame_stem_sorts_by_time_then_frame():
    t = 1_764_700_512.123
    assert frame_stem(5, t).endswith("-123-f000005") and len(frame_stem(5, t)) == len("20251202-183512-123-f000005")
    stems = [frame_stem(9, t), frame_stem(10, t), frame_stem(1, t + 0.5), frame_stem(0, t + 61)]
    assert stems == sorted(stems)


def test_save_image_never_overwrites(tmp_path):
    a, b = _picture(1), _picture(2)
    first = save_image(tmp_path, a, "stem")
    second = save_image(tmp_path, b, "stem", sidecar={"n": 2})
    third = save_image(tmp_path, a, "stem")
    assert [p.name for p in (first, second, third)] == ["stem.jpg", "stem-2.jpg", "stem-3.jpg"]
    assert _holds(first, a) and _holds(second, b) and not _holds(first, b) and _holds(third, a)
    assert json.loads((tmp_path / "stem-2.json").read_text()) == {"n": 2}  # named after the image it belongs to
    assert not (tmp_path / "stem.json").exists()
    _assert_nothing_half_written(tmp_path)


def test_an_interrupted_save_leaves_no_image(tmp_path, monkeypatch):
    (tmp_path / "keep.jpg").write_bytes(b"someone else's")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(saver_mod.os, "link", full)
    with pytest.raises(OSError) as e:
        save_image(tmp_path, _noise(0), "keep", sidecar={"x": 1})
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jpg"]  # no temp file, no sidecar, nothing replaced
    assert (tmp_path / "keep.jpg").read_bytes() == b"someone else's"


def test_a_failing_write_leaves_no_image(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(saver_mod.os, "fsync", fsync)
    with pytest.raises(OSError):
        save_image(tmp_path, _noise(0), "x")
    assert list(tmp_path.iterdir()) == []


def test_without_hard_links_a_name_is_claimed_first(tmp_path, monkeypatch):
    """FAT and exFAT (USB sticks) have no hard links: the name is claimed with O_EXCL, then the file renamed."""

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted", str(dst))

    monkeypatch.setattr(saver_mod.os, "link", no_links)
    (tmp_path / "s.jpg").write_bytes(b"older")
    path = save_image(tmp_path, _noise(3), "s")
    assert path.name == "s-2.jpg" and _decodes_whole(path) and (tmp_path / "s.jpg").read_bytes() == b"older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-2.jpg", "s.jpg"]


# -- FrameSaver and the warnings ----------------------------------------------------------------------------------


def test_frame_saver_drops_when_busy_and_keeps_going_after_errors(tmp_path, edge_log):
    gate = threading.Event()
    calls = []

    def slow_then_failing(folder, image, stem, sidecar):
        gate.wait(10)
        calls.append(stem)
        if stem.startswith("bad"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_image(folder, image, stem, sidecar)

    s = FrameSaver(queue_size=2, save=slow_then_failing)
    accepted = [s.submit(tmp_path, _noise(i), f"{'bad' if i in (1, 2) else 'ok'}{i}") for i in range(6)]
    # One is taken by the thread (waiting at the gate), two wait in the queue, the rest are dropped at once.
    assert accepted.count(True) in (2, 3) and accepted[:2] == [True, True] and s.dropped == accepted.count(False)
    gate.set()
    s.close()
    assert s.saved + s.failed == accepted.count(True) and s.failed >= 1
    warnings = [m for m in edge_log if "could not save" in m]
    assert len(warnings) == 1, edge_log  # ENOSPC twice in a row: said once
    assert str(tmp_path) in warnings[0] and "disk is full" in warnings[0] and "still running" in warnings[0]


def test_disk_warnings_once_per_kind_per_interval(edge_log):
    now = [0.0]
    w = DiskWarnings(every_s=30.0, clock=lambda: now[0])
    full, gone = OSError(errno.ENOSPC, "No space left on device"), OSError(errno.ENOENT, "No such file")
    for t in (0.0, 1.0, 29.0):
        now[0] = t
        w.warn("/photos/cat", full)
    w.warn("/photos/cat", gone)  # another kind: said at once
    now[0] = 30.5
    w.warn("/photos/cat", full)  # the same kind again after the interval
    assert w.failed == 5
    assert len(edge_log) == 3
    assert "disk is full" in edge_log[0] and "mkdir -p /photos/cat" in edge_log[1] and "(5 not saved" in edge_log[2]


# -- UncertainKeeper ----------------------------------------------------------------------------------------------


def _result(scores) -> Result:
    scores = np.asarray(scores, np.float32)
    order = np.argsort(-scores)[:2]
    return Result([Category(LABELS[i], float(scores[i])) for i in order], 1.0, scores)


def test_uncertain_keeper_keeps_unsure_frames_rate_limited(tmp_path, edge_log):
    now = [100.0]
    keeper = UncertainKeeper(tmp_path / "unsure", below=0.6, every_s=1.0, labels=LABELS, model="m.tflite",
                             clock=lambda: now[0])  # fmt: skip
    root = tmp_path / "unsure"
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", UNSORTED, *sorted(LABELS)]
    readme = (root / "README.txt").read_text()
    assert "move each image from _unsorted/ into the folder of its class" in readme and "-m train --data" in readme
    offers = [  # (time, scores): which are kept
        (100.0, [0.9, 0.05, 0.05]),  # sure: not kept
        (100.1, [0.5, 0.3, 0.2]),  # kept
        (100.5, [0.4, 0.35, 0.25]),  # unsure but 0.4 s later: rate-limited
        (101.2, [0.59, 0.4, 0.01]),  # kept
        (101.3, [0.6, 0.3, 0.1]),  # at the threshold: sure enough
        (103.0, [0.2, 0.3, 0.5]),  # kept
    ]
    originals = []
    for i, (t, scores) in enumerate(offers):
        now[0] = t
        frame = Frame(i, _picture(i), "cam", 1_764_700_000.0 + i)
        keeper.offer(frame, _result(scores))
        originals.append(frame.image.copy())
        frame.image[:] = 255  # the loop draws on the frame right after offering it: the keeper must have copied it
    line = keeper.close()
    assert (keeper.kept, keeper.skipped) == (3, 1)
    assert (
        line == f"kept 3 uncertain frames in {root / UNSORTED} (below 0.6); 1 more below it were not kept (one per 1 s)"
    )
    assert line in edge_log
    jpgs = _assert_nothing_half_written(root)
    assert [p.parent.name for p in jpgs] == [UNSORTED] * 3
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in jpgs]
    assert [s["frame"] for s in sidecars] == [1, 3, 5]
    s = sidecars[2]
    assert s["top_k"] == [
        {"label": "fox", "score": 0.5},
        {"label": "dog", "score": 0.3},
        {"label": "cat", "score": 0.2},
    ]
    assert (s["score"], s["below"], s["model"], s["source"]) == (0.5, 0.6, "m.tflite", "cam")
    assert s["time"].startswith("2025-12-0") and s["time"][-6] in "+-"  # ISO, local time with its offset
    assert all(_holds(p, originals[i]) for p, i in zip(jpgs, [1, 3, 5], strict=True))  # as it was offered


def test_uncertain_keeper_stops_at_max_files_counting_earlier_runs(tmp_path, edge_log):
    (tmp_path / UNSORTED).mkdir()
    save_image(tmp_path / UNSORTED, _noise(0), "from-an-earlier-run")
    now = [0.0]
    keeper = UncertainKeeper(tmp_path, below=0.5, every_s=0.0, max_files=3, clock=lambda: now[0])
    for i in range(5):
        now[0] = float(i)
        keeper.offer(Frame(i, _noise(i), "cam", 0.0), _result([0.4, 0.3, 0.3]))
    keeper.close()
    assert len(list((tmp_path / UNSORTED).glob("*.jpg"))) == 3 and keeper.skipped == 3
    assert sum("no more uncertain frames are kept" in m for m in edge_log) == 1
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name != UNSORTED]  # no labels, no class folders


def test_uncertain_folder_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "under"):
        with pytest.raises(EdgeError, match=r"--save-uncertain .*(is a file|cannot be written).*pass a folder"):
            check_uncertain_folder(bad)
    check_uncertain_folder(tmp_path / "new" / "folder")  # made when missing: fine
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "cat").write_text("a file where a class folder goes")
    with pytest.raises(EdgeError, match="cannot make its folders"):
        UncertainKeeper(tmp_path / "u", below=0.5, labels=["cat", "dog"])


# -- Collector and the window -------------------------------------------------------------------------------------


def test_collector_counts_saves_and_refuses(tmp_path):
    (tmp_path / "cat").mkdir()
    save_image(tmp_path / "cat", _noise(0), "old")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    c = Collector(tmp_path, ["cat", "dog"])
    assert c.labels == ["cat", "dog"] and c.counts() == {"cat": 1, "dog": 0} and (tmp_path / "dog").is_dir()
    with pytest.raises(ValueError, match="no frame"):
        c.save("cat")
    c.update(Frame(7, _noise(7), "cam", 1_764_700_000.0))
    path = Path(c.save("dog"))
    assert path.parent == tmp_path / "dog" and path.name.endswith("-f000007.jpg") and _decodes_whole(path)
    assert Path(c.save("dog")).name.endswith("-f000007-2.jpg")  # the same frame twice: a second name
    assert c.counts() == {"cat": 1, "dog": 2} and c.saved == 2
    with pytest.raises(ValueError, match="'bird' is not one of the labels cat, dog"):
        c.save("bird")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    failing = Collector(tmp_path, ["cat"], saver=full)
    failing.update(Frame(8, _noise(8), "cam", 0.0))
    with pytest.raises(OSError):
        failing.save("cat")
    assert failing.counts() == {"cat": 1}


class FakeReader:
    def __init__(self, frames):
        self.frames, self.done = list(frames), False

    def get(self, timeout=None):
        if not self.frames:
            self.done = True
            return None
        return self.frames.pop(0)

    def pop_events(self):
        return []


class FakeWindow:
    """Answers show_key with the keys given, one per frame shown."""

    def __init__(self, keys):
        self.keys, self.shown = list(keys), []

    def show_key(self, img, wait_ms=1):
        self.shown.append(img)
        return self.keys.pop(0) if self.keys else None

    def poll(self, wait_ms=1):
        return False


def test_window_keys_save_into_their_labels(tmp_path):
    c = Collector(tmp_path, ["cat", "dog"])
    frames = [Frame(i, _picture(i, hw=(120, 160)), "cam", 1_764_700_000.0 + i) for i in range(6)]
    window = FakeWindow([ord("1"), None, ord("2"), ord("3"), ord("1"), QUIT])
    n = collect_window(c, FakeReader(frames), window, still=False, stop=threading.Event())
    assert n == 3 and c.counts() == {"cat": 2, "dog": 1}  # "3" is no label: nothing saved
    assert [p.name[-11:] for p in sorted((tmp_path / "cat").iterdir())] == ["f000000.jpg", "f000004.jpg"]
    assert len(window.shown) == 6 and not np.array_equal(window.shown[0], frames[0].image)  # the help is drawn ...
    assert _holds(next((tmp_path / "dog").iterdir()), frames[2].image)  # ... on a copy: the photo is the frame
    assert [label_for_key(k, ["a"]) for k in (ord("1"), ord("2"), ord("0"), None)] == ["a", None, None, None]


def test_labels_are_checked(tmp_path):
    (tmp_path / "owl").mkdir()
    (tmp_path / "_unsorted").mkdir()
    assert resolve_labels(CollectOptions(out=str(tmp_path))) == ["owl"]  # the class folders already there
    assert resolve_labels(CollectOptions(out=str(tmp_path), headless=True, label="new")) == ["owl", "new"]
    for o, match in [
        (CollectOptions(out=str(tmp_path / "empty")), "no classes: pass --labels"),
        (CollectOptions(out=str(tmp_path), labels=("_x",)), "starts with . or _"),
        (CollectOptions(out=str(tmp_path), labels=("a/b",)), "not a folder name"),
        (CollectOptions(out=str(tmp_path), headless=True), "pass --label NAME"),
        (CollectOptions(out=str(tmp_path), label="cat"), "--label is for --headless"),
        (CollectOptions(out=str(tmp_path), labels=tuple("abcdefghij")), "keys 1-9"),
    ]:
        with pytest.raises(EdgeError, match=match):
            resolve_labels(o)


# -- python -m edge.collect -------------------------------------------------------------------------------------


def _collect(*args, preexec_fn=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.collect", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)  # fmt: skip


@pytest.fixture(scope="module")
def noise_video(tmp_path_factory) -> Path:
    """40 frames of 64x48 noise at 10 fps."""
    return write_video((_noise(i) for i in range(40)), tmp_path_factory.mktemp("v") / "noise.mp4", fps=10.0)


def test_headless_collect_saves_count_frames(tmp_path, noise_video):
    p = _collect("--headless", "--source", noise_video, "--label", "cat", "--every", "0", "--count", "25",
                 "--out", tmp_path / "photos")  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    files = _assert_nothing_half_written(tmp_path / "photos")
    assert len(files) == 25 and sorted(Path(d["saved"]) for d in lines) == files
    assert [d["count"] for d in lines] == list(range(1, 26)) and {d["label"] for d in lines} == {"cat"}
    assert [f.name[-11:] for f in files] == [f"f{i:06d}.jpg" for i in range(25)]  # every frame, in order
    assert "saved 25 photos into" in p.stderr and "Traceback" not in p.stderr


def test_headless_every_counts_video_time(tmp_path, noise_video):
    """A video steps by its own clock: --every 1 at 10 fps is every 10th frame, however fast it is read."""
    p = _collect("--headless", "--source", noise_video, "--label", "dog", "--every", "1", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert [Path(json.loads(line)["saved"]).name[-11:] for line in p.stdout.splitlines()] == [
        "f000000.jpg", "f000010.jpg", "f000020.jpg", "f000030.jpg"]  # fmt: skip


_ENDLESS_CAMERA = """
import sys, time
import numpy as np
from edge.cli import configure_logging
from edge.collect import CollectOptions, run_collect

class Camera:  # a live source that never ends
    def read(self):
        time.sleep(0.01)
        return True, np.full((48, 64, 3), 90, np.uint8)

    def release(self):
        pass

configure_logging()
options = CollectOptions(out=sys.argv[1], headless=True, label="a", every_s=0.05)
sys.exit(run_collect(options, open_source=Camera, source_live=True))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_live_collect_cleanly(tmp_path, sig):
    p = subprocess.Popen([sys.executable, "-c", _ENDLESS_CAMERA, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = json.loads(p.stdout.readline())  # it is collecting
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err
    n = 1 + len(out.splitlines())
    assert first["count"] == 1 and f"saved {n} photo" in err
    assert len(_assert_nothing_half_written(tmp_path)) == n


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{file}", "--label", "a"], "--out {file} is a file, not a folder: pass a folder you can write"),
        (["--out", "{tmp}/p", "--label", "_a"], "label '_a' starts with . or _"),
        (["--out", "{tmp}/p", "--source", "{tmp}/missing.mp4", "--label", "a"], "missing.mp4 not found"),
        (["--out", "{tmp}/p"], "--headless saves into one class: pass --label NAME"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, noise_video, args, message):
    (tmp_path / "file").write_text("x")
    fill = {"file": tmp_path / "file", "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    p = _collect("--headless", *(["--source", noise_video] if "--source" not in args else []), *args)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge.collect: error: ") and message.format(**fill) in lines[0]
    assert not (tmp_path / "p").exists()  # nothing made before the checks passed


class GatedCamera:
    """A file-like source (it ends) that gives pictures until `finished` is set."""

    def __init__(self):
        self.finished, self.n = threading.Event(), 0

    def read(self):
        if self.finished.wait(0.01):
            return False, None
        self.n += 1
        return True, _picture(self.n)

    def release(self):
        pass


def _http(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict | str]:
    """(status, the JSON body, or the text of one that is not JSON)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
    return status, json.loads(body) if ctype.startswith("application/json") else body.decode()


def test_serve_buttons_save_through_the_collector(tmp_path, edge_log):
    """--headless --serve without --label: only the page's buttons (POST /collect/LABEL) save, into the folders."""
    camera, result = GatedCamera(), []
    o = CollectOptions(out=str(tmp_path), labels=("cat", "dog"), headless=True, serve="127.0.0.1:0", serve_token="t")
    thread = threading.Thread(target=lambda: result.append(run_collect(o, lambda: camera, source_live=False)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (urls := [m for m in edge_log if m.startswith("live view: http")]) and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for the server to start; the assertions do not depend on how long
        base = urls[0].split()[2].split("?")[0]
        auth = {"Authorization": "Bearer t"}
        assert _http(base + "config.json")[0] == 401  # the token is asked for
        status, config = _http(base + "config.json", headers=auth)
        assert status == 200 and config["mode"] == "collect" and config["labels"] == ["cat", "dog"]
        assert config["counts"] == {"cat": 0, "dog": 0}
        while camera.n < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # a frame has come, so a save has something to save
        status, body = _http(base + "collect/dog", "POST", auth)
        assert status == 200 and body["counts"] == {"cat": 0, "dog": 1}
        assert Path(body["saved"]).parent == tmp_path / "dog" and _decodes_whole(Path(body["saved"]))
        assert _http(base + "collect/bird", "POST", auth)[0] == 404
        status, health = _http(base + "health", headers=auth)
        assert status == 200 and health["mode"] == "collect" and health["frames"] >= 2 and health["fps"] > 0
    finally:
        camera.finished.set()
        thread.join(30)
    assert result == [0] and not thread.is_alive()
    assert [p.parent.name for p in _assert_nothing_half_written(tmp_path)] == ["dog"]  # nothing saved on its own
    with pytest.raises(urllib.error.URLError):  # the server stopped with the collect
        urllib.request.urlopen(base + "health", timeout=5)


def test_serve_address_problems_are_one_line(tmp_path, noise_video):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for serve, message in ((f"127.0.0.1:{port}", f"port {port} on 127.0.0.1 is in use"),
                               ("nope", "--serve nope: give [HOST:]PORT")):  # fmt: skip
            p = _collect("--headless", "--label", "a", "--source", noise_video, "--out", tmp_path, "--serve", serve)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 2 and len(lines) == 1 and message in lines[0], p.stderr


def _fsize_limit(limit: int):
    def preexec():  # a real write error from the OS (EFBIG) past `limit` bytes, instead of the default kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_file_size_limit_is_a_warning_and_the_collect_goes_on(tmp_path):
    """Flat frames make small JPEGs, noisy ones large: past the limit each large one fails as the OS refuses the
    write; the collect warns (once), keeps going, and leaves no half-written image."""
    frames = [_noise(i, hw=(120, 160), sd=60.0 if i % 3 == 1 else 2.0) for i in range(12)]
    sizes = [len(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]) for f in frames]
    limit = 8192
    assert max(sizes[0::3]) < limit < min(sizes[1::3])  # the test means something
    video = write_video(frames, tmp_path / "v.avi", codec="MJPG", fps=10.0)
    p = _collect("--headless", "--source", video, "--label", "a", "--every", "0", "--out", tmp_path / "photos",
                 preexec_fn=_fsize_limit(limit))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    warnings = [line for line in p.stderr.splitlines() if "could not save an image in" in line]
    assert len(warnings) == 1 and "ulimit -f" in warnings[0] and str(tmp_path / "photos" / "a") in warnings[0]
    files = _assert_nothing_half_written(tmp_path / "photos")
    assert len(files) == len(p.stdout.splitlines()) == 8  # the 4 noisy ones failed, all 8 others were saved


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 200 kB tmpfs (root only: skipped where mount is refused)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_filesystem_is_a_warning_and_the_collect_goes_on(tmp_path, tiny_filesystem):
    frames = [_noise(i, hw=(120, 160), sd=60.0) for i in range(30)]  # about 30 kB each: the disk fills at 6 or 7
    video = write_video(frames, tmp_path / "v.avi", codec="MJPG", fps=10.0)
    p = _collect("--headless", "--source", video, "--label", "a", "--every", "0", "--out", tiny_filesystem)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    warnings = [line for line in p.stderr.splitlines() if "could not save an image in" in line]
    assert len(warnings) == 1 and "disk is full" in warnings[0], p.stderr
    files = _assert_nothing_half_written(tiny_filesystem)
    assert 3 <= len(files) == len(p.stdout.splitlines()) < 30
    assert f"saved {len(files)} photos" in p.stderr


@pytest.mark.slow
def test_collected_photos_train(tmp_path):
    """The issue's proof: collect from two videos into two classes, then `python -m train --data photos/`.

    Settings: the smallest model, from random init (nothing downloaded). Without pretrained weights the batch-norm
    statistics need steps before validation leaves chance (epoch 5 or 6 here), so: batch 8, 12 epochs, no early
    stop, no augmentation; 60 photos a class (84/18/18 split). About 2 minutes on 2 cores.
    """
    reddish = [_noise(i, hw=(96, 128), mean=(60, 60, 200), sd=40.0) for i in range(70)]  # BGR
    blueish = [_noise(1000 + i, hw=(96, 128), mean=(200, 60, 60), sd=40.0) for i in range(70)]
    photos = tmp_path / "photos"
    for name, frames in (("a", reddish), ("b", blueish)):
        video = write_video(frames, tmp_path / f"{name}.mp4", fps=10.0)
        p = _collect("--headless", "--source", video, "--label", name, "--every", "0", "--count", "60",
                     "--out", photos)  # fmt: skip
        assert p.returncode == 0 and len(p.stdout.splitlines()) == 60, p.stderr
    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "train", "--data", str(photos), "--out", str(run), "--weights", "none",
         "--image-size", "32", "--alpha", "0.35", "--batch-size", "8", "--epochs", "12", "--patience", "12",
         "--fine-tune-epochs", "1", "--qat-epochs", "1", "--learning-rate", "3e-3", "--no-augment"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (run / "labels.txt").read_text().split() == ["a", "b"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["a", "b"] and metrics["n_images"] == {"train": 84, "val": 18, "test": 18}
    assert metrics["test_top1_float"] >= 0.75, metrics  # 18 test photos, two classes: chance is 0.5
    # The trained model on the last 10 frames of each video, which were never collected, preprocessed as edge does.
    import tf_keras as keras

    from contracts.preprocess import bgr_to_input

    model = keras.models.load_model(str(run / "model_float.keras"), compile=False)
    for index, frames in enumerate((reddish[60:], blueish[60:])):
        predicted = model.predict(np.stack([bgr_to_input(f, 32) for f in frames]), verbose=0).argmax(axis=1)
        assert np.mean(predicted == index) >= 0.8, (index, predicted)


def test_hidden_files_in_a_picture_folder_are_not_pictures(tmp_path):
    """An interrupted write's .NAME.partial.jpg (contracts.atomic, edge.saver) never becomes a frame."""
    from edge.sources import list_images

    img = np.full((8, 8, 3), 200, np.uint8)
    for name in ("a.jpg", ".a.partial.jpg", "._b.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), img)
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
