"""The threaded frame reader: latest-frame and every-frame modes, and a live source that drops out and comes back.

Fake captures stand in for cameras; reconnect waits are set to milliseconds so nothing sleeps for long.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from edge_model import LABELS, make_images, run_edge, write_images

from contracts.runners.classifier import Classifier
from edge.app import EdgeOptions, run
from edge.cli import configure_logging
from edge.frames import Frame, Handoff, SourceEvent
from edge.reader import FrameReader
from edge.shape import SERIAL, THREADS, ShapeChooser


class FakeCamera:
    """A cv2.VideoCapture stand-in: read number k fails when k is in `fail_reads`, else gives the next picture.

    Pictures come from `frames` in turn (cycling), so what the reader hands over can be checked one by one.
    open() is the factory the reader calls to (re)connect; it counts the calls, release() counts releases.
    """

    def __init__(self, frames: np.ndarray, fail_reads=(), limit: int | None = None):
        self.frames, self.fail_reads, self.limit = frames, set(fail_reads), limit
        self.reads = self.delivered = self.opens = self.releases = 0

    def open(self):
        self.opens += 1
        return self

    def read(self):
        k = self.reads
        self.reads += 1
        if k in self.fail_reads or (self.limit is not None and self.delivered >= self.limit):
            return False, None
        img = self.frames[self.delivered % len(self.frames)].copy()
        self.delivered += 1
        return True, img

    def release(self):
        self.releases += 1


def _numbered(n: int) -> np.ndarray:
    """n tiny frames whose first pixel is their number."""
    f = np.zeros((n, 8, 8, 3), np.uint8)
    f[:, 0, 0, 0] = np.arange(n)
    return f


class Alternating(ShapeChooser):
    """A chooser that switches shape every few frames: 3 frames serially, then 5 on threads, and again."""

    def __init__(self):
        super().__init__(cores=2, report=lambda m: None)
        self.serial_frames = self.runs = 0

    def serial_frame(self, decode_ms, prepare_ms, loop_ms):
        self.serial_frames += 1
        if self.serial_frames % 3 == 0:
            self.runs += 1
            return THREADS, 5
        return SERIAL, None

    def threads_ended(self):
        return SERIAL, None


def _shape(name: str):
    """A FrameReader shape: "serial", "threads" or "switching" (Alternating: both, in turns)."""
    return Alternating() if name == "switching" else name


SHAPES = ["serial", "threads", "switching"]


def _wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_live_outage_is_reported_once_and_frames_after_it_arrive():
    cam = FakeCamera(_numbered(200), fail_reads=range(5, 12))
    messages: list[str] = []
    reader = FrameReader(cam.open, name="camera 7", live=True, every_frame=True, retry_initial_s=0.001,
                         retry_max_s=0.004, warn=messages.append)  # fmt: skip
    with reader:
        frames = [reader.get(timeout=5) for _ in range(20)]
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(20))  # nothing lost, nothing repeated, in order
    assert [f.index for f in frames] == list(range(20))
    assert reader.outages == 1
    lost = [m for m in messages if "no frames" in m]
    back = [m for m in messages if "frames are back" in m]
    assert len(lost) == 1 and "camera 7" in lost[0]
    assert len(back) == 1 and "(7 tries)" in back[0]  # reads 6..12 were the reconnect attempts
    assert len(messages) == 2
    assert cam.opens == 8 and cam.releases == 8  # opened once, then closed and reopened on each try; closed at stop


def test_two_outages_are_two_reports():
    cam = FakeCamera(_numbered(200), fail_reads=[3, 4, 10, 11, 12])
    messages: list[str] = []
    reader = FrameReader(cam.open, name="cam", live=True, every_frame=True, retry_initial_s=0.001,
                         retry_max_s=0.002, warn=messages.append)  # fmt: skip
    with reader:
        frames = [reader.get(timeout=5) for _ in range(15)]
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(15))
    assert reader.outages == 2
    assert sum("no frames" in m for m in messages) == 2 and sum("frames are back" in m for m in messages) == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_latest_frame_mode_hands_over_only_the_newest(shape):
    cam = FakeCamera(_numbered(100), limit=100)
    reader = FrameReader(cam.open, name="fast", live=False, every_frame=False, shape=_shape(shape)).start()
    assert reader.shape == THREADS  # whatever was asked: only a reader thread keeps the newest frame
    _wait_until(lambda: reader.frames_read == 100)
    frame = reader.get(timeout=1)
    assert frame.index == 99 and int(frame.image[0, 0, 0]) == 99  # no backlog: the newest, not the oldest
    assert reader.get(timeout=0.2) is None and reader.done
    assert reader.frames_dropped == 99
    reader.stop()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_frame_mode_hands_over_all_frames_in_order(shape):
    cam = FakeCamera(_numbered(100), limit=100)
    reader = FrameReader(cam.open, name="file", live=False, every_frame=True, queue_size=3, shape=_shape(shape))
    reader.start()
    time.sleep(0.05)  # a reader thread fills its queue and waits: it must not drop anything
    got, shapes = [], set()
    while (f := reader.get(timeout=2)) is not None:
        got.append((f.index, int(f.image[0, 0, 0])))
        shapes.add(reader.shape)
    assert got == [(i, i) for i in range(100)] and reader.done and reader.frames_dropped == 0
    assert shapes == ({SERIAL, THREADS} if shape == "switching" else {shape})
    reader.stop()
    assert cam.opens == cam.releases == 1


def test_stop_releases_the_capture():
    cam = FakeCamera(_numbered(10))
    reader = FrameReader(cam.open, name="cam", live=True, every_frame=False).start()
    assert reader.get(timeout=2) is not None
    reader.stop()
    assert cam.releases == 1 and reader.done


def test_the_loop_survives_an_outage_and_classifies_frames_after_it(edge_run, capsys):
    pictures, y = make_images(30, seed=21, boost=(90, 130))
    cam = FakeCamera(pictures, fail_reads=range(10, 16))
    configure_logging()
    model = edge_run / "export" / "tflite_int8.tflite"
    opts = EdgeOptions(model=str(model), headless=True, max_frames=30, every_frame=True, retry_initial_s=0.001,
                       retry_max_s=0.004)  # fmt: skip
    assert run(opts, open_source=cam.open) == 0
    out, err = capsys.readouterr()
    everything = [json.loads(line) for line in out.splitlines()]
    lines = [d for d in everything if "event" not in d]  # the frame lines, as they always were
    assert [d["frame"] for d in lines] == list(range(30))
    assert all(set(d) == {"time", "frame", "source", "label", "score", "top_k", "inference_ms", "fps"} for d in lines)
    # The outage is two lines, where it happened: after frame 9, before frame 10.
    assert [d.get("event", d.get("frame")) for d in everything[9:13]] == [9, "outage", "recovered", 10]
    outage, back = everything[10], everything[11]
    assert outage["reason"] == back["reason"] == "failed" and outage["last_frame"] == back["last_frame"] == 9
    assert outage["since"] == back["since"] and outage["source"] == "injected source"
    assert back["tries"] == 6 and 0 <= back["outage_s"] < 30
    clf = Classifier.from_model(model)
    expected = [clf.classify(p).top.label for p in pictures]
    assert [d["label"] for d in lines] == expected  # the frames after the outage are classified, in order
    assert np.mean([e == LABELS[t] for e, t in zip(expected, y, strict=True)]) >= 0.9
    assert err.count("no frames") == 1 and err.count("frames are back") == 1


def _first_pixel_times_two(img: np.ndarray) -> np.ndarray:
    return img[:1, :1, 0].astype(np.int32) * 2


@pytest.mark.parametrize("shape", SHAPES)
def test_prepare_runs_on_its_own_thread_or_the_loops_and_every_frame_keeps_its_input_in_order(shape):
    threads: set[str] = set()

    def prepare(img):
        threads.add(threading.current_thread().name)
        return _first_pixel_times_two(img)

    cam = FakeCamera(_numbered(100), limit=100)
    reader = FrameReader(cam.open, name="file", live=False, every_frame=True, queue_size=2, prepare=prepare,
                         shape=_shape(shape)).start()  # fmt: skip
    got = []
    while (f := reader.get(timeout=2)) is not None:
        got.append((f.index, int(f.image[0, 0, 0]), int(f.input[0, 0])))
    assert got == [(i, i, 2 * i) for i in range(100)] and reader.done and reader.frames_dropped == 0
    # Threads: never the loop's thread, nor the reader's. Serial: the loop's own, in get().
    loops = threading.current_thread().name
    assert threads == {"threads": {"preparer file"}, "serial": {loops}, "switching": {loops, "preparer file"}}[shape]
    reader.stop()


def test_latest_frame_mode_with_prepare_hands_over_the_newest_prepared_frame():
    cam = FakeCamera(_numbered(100), limit=100)
    reader = FrameReader(cam.open, name="fast", live=False, every_frame=False, prepare=_first_pixel_times_two).start()
    _wait_until(lambda: reader.frames_read == 100)
    _wait_until(lambda: reader.frames_dropped == 99)  # dropped before the preparer or before the loop took them
    frame = reader.get(timeout=1)
    assert frame.index == 99 and int(frame.input[0, 0]) == 198
    assert reader.get(timeout=0.2) is None and reader.done
    reader.stop()


@pytest.mark.parametrize("shape", SHAPES)
def test_an_error_in_prepare_is_raised_by_get_after_the_frames_prepared_before_it(shape):
    def prepare(img):
        if int(img[0, 0, 0]) == 5:
            raise ValueError("cannot prepare frame 5")
        return _first_pixel_times_two(img)

    cam = FakeCamera(_numbered(50), limit=50)
    with FrameReader(cam.open, name="file", live=False, every_frame=True, prepare=prepare, shape=_shape(shape)) as r:
        got = [r.get(timeout=2).index for _ in range(5)]
        with pytest.raises(ValueError, match="frame 5"):
            while r.get(timeout=2) is not None:
                pass
        assert r.get(timeout=0.1) is None and r.done  # the error ended the frames
    assert got == [0, 1, 2, 3, 4] and cam.releases == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_a_read_error_with_prepare_still_hands_over_the_frames_before_it(shape):
    class Broken(FakeCamera):
        def read(self):
            if self.reads == 3:
                raise OSError("disk gone")
            return super().read()

    cam = Broken(_numbered(10))
    with FrameReader(cam.open, name="file", live=False, every_frame=True, prepare=_first_pixel_times_two,
                     shape=_shape(shape)) as reader:  # fmt: skip
        got = [reader.get(timeout=2).index for _ in range(3)]
        with pytest.raises(OSError, match="disk gone"):
            reader.get(timeout=2)
    assert got == [0, 1, 2] and cam.releases == 1


def test_a_folder_of_only_unreadable_images_is_one_line_and_exit_2(edge_run, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg at all")
    (folder / "b.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image name: ignored, as before")
    model = edge_run / "export" / "tflite_int8.tflite"
    p = run_edge("--headless", "--source", folder, "--model", model)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("edge: error: "), p.stderr
    assert f"{folder} has no readable images" in lines[0] and "pass a folder of" in lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""

    write_images(folder, *make_images(1, seed=3))  # one readable picture: the run goes on, skipping the others
    p = run_edge("--headless", "--source", folder, "--model", model)
    assert p.returncode == 0, p.stderr
    assert [json.loads(line)["source"] for line in p.stdout.splitlines()] == ["img_000.png"]
    assert p.stderr.count("is not a readable image (skipped)") == 2


def _seen(reader: FrameReader, n_frames: int) -> list[Frame | SourceEvent]:
    """What the loop sees, in order: each get()'s events, then its frame, until n_frames frames."""
    seen: list = []
    while sum(isinstance(x, Frame) for x in seen) < n_frames:
        frame = reader.get(timeout=5)
        seen += reader.pop_events()
        assert frame is not None, f"no frame after {seen}"
        seen.append(frame)
    return seen


def _kinds(seen) -> list:
    return [x.index if isinstance(x, Frame) else x.kind for x in seen]


class StallingCamera(FakeCamera):
    """A stream that stalls at read `stall_at`, as FFmpeg with a read timeout gives it to OpenCV: that read waits
    `wait_s` (the timeout) and still returns a frame left in the decoder, the next one fails at once."""

    def __init__(self, frames, stall_at: int, wait_s: float):
        super().__init__(frames, fail_reads=[stall_at + 1])
        self.stall_at, self.wait_s = stall_at, wait_s

    def read(self):
        if self.reads == self.stall_at:
            time.sleep(self.wait_s)
        return super().read()


@pytest.mark.parametrize("prepare", [None, _first_pixel_times_two], ids=["no prepare", "prepare"])
def test_a_stalled_stream_is_one_outage_event_and_one_recovery_in_order_with_the_frames(prepare):
    cam = StallingCamera(_numbered(50), stall_at=5, wait_s=0.3)
    messages: list[str] = []
    reader = FrameReader(cam.open, name="rtsp://cam", live=True, every_frame=True, retry_initial_s=0.001,
                         retry_max_s=0.004, warn=messages.append, prepare=prepare, stall_timeout_s=0.4)  # fmt: skip
    with reader:
        seen = _seen(reader, 12)
    assert _kinds(seen) == [0, 1, 2, 3, 4, 5, "outage", "recovered", 6, 7, 8, 9, 10, 11]
    frames = [x for x in seen if isinstance(x, Frame)]
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(12))  # nothing lost, nothing repeated
    outage, back = seen[6], seen[7]
    assert outage.reason == back.reason == "stalled" and outage.last_frame == back.last_frame == 5
    assert outage.source == "rtsp://cam" and back.tries == 1
    # The stream went quiet when the read that waited began, not when the frame it still gave came out.
    assert frames[5].time - outage.since >= 0.25 and outage.since == back.since
    assert frames[4].time <= outage.since <= outage.time <= back.time <= frames[6].time
    assert back.outage_s == pytest.approx(back.time - back.since)
    assert len(messages) == 2 and "no frames since" in messages[0] and "stalled" in messages[0]
    assert "0.4 s stall timeout" in messages[0] and "frames are back" in messages[1]
    assert reader.pop_events() == [] and reader.outages == 1


def test_a_failed_read_is_not_called_a_stall():
    cam = FakeCamera(_numbered(50), fail_reads=[3])
    reader = FrameReader(cam.open, name="cam", live=True, every_frame=True, retry_initial_s=0.001,
                         retry_max_s=0.004, warn=lambda m: None, stall_timeout_s=10.0)  # fmt: skip
    with reader:
        seen = _seen(reader, 6)
    assert _kinds(seen) == [0, 1, 2, "outage", "recovered", 3, 4, 5]
    assert seen[3].reason == "failed" and seen[3].last_frame == 2 and seen[3].since == seen[2].time


def test_a_source_that_never_opens_reports_an_outage_since_reading_began():
    cam = FakeCamera(_numbered(10), fail_reads=[0, 1])
    reader = FrameReader(cam.open, name="cam", live=True, every_frame=False, retry_initial_s=0.001,
                         retry_max_s=0.004, warn=lambda m: None)  # fmt: skip
    with reader:
        seen = _seen(reader, 1)
    assert _kinds(seen)[:2] == ["outage", "recovered"] and seen[0].last_frame is None and seen[1].tries == 2
    assert seen[0].since <= seen[0].time


def test_latest_frame_handoff_drops_frames_but_never_events_nor_their_place():
    h = Handoff(every_frame=False, size=4, stop=threading.Event())
    img = np.zeros((1, 1, 3), np.uint8)
    event = SourceEvent("outage", "cam", 2.0, 1.0, "stalled", 1)
    for item in [Frame(0, img, "cam", 0.0), Frame(1, img, "cam", 1.0), event, event, Frame(2, img, "cam", 3.0),
                 Frame(3, img, "cam", 4.0)]:  # fmt: skip
        h.put(item)
    h.close()
    got = []
    while (item := h.get(timeout=0)) is not None:
        got.append(item)
    assert _kinds(got) == [1, "outage", "outage", 3] and h.dropped == 2 and h.ended


@pytest.mark.parametrize("shape", SHAPES)
def test_a_looped_file_starts_over_in_either_shape(shape):
    cam = FakeCamera(_numbered(7), limit=7)

    def reopen():
        cam.delivered = 0  # the file from its start again
        return cam.open()

    with FrameReader(reopen, name="clip", live=False, every_frame=True, loop=True, shape=_shape(shape)) as reader:
        got = [(f.index, int(f.image[0, 0, 0])) for f in (reader.get(timeout=2) for _ in range(30))]
    assert got == [(i, i % 7) for i in range(30)] and cam.opens >= 5 and cam.releases == cam.opens


def test_a_live_source_keeps_its_reader_thread_whatever_shape_is_asked():
    cam = FakeCamera(_numbered(10))
    with FrameReader(cam.open, name="camera 0", live=True, every_frame=True, shape="serial") as reader:
        assert reader.get(timeout=2) is not None and reader.shape == THREADS
    with pytest.raises(ValueError, match="shape 'pipelined' is not one of auto, threads, serial"):
        FrameReader(cam.open, name="camera 0", live=True, every_frame=True, shape="pipelined")
