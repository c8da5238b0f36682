"""The live view in a real browser: headless Chromium (Debian's package) opens the page that edge --serve serves while
edge's own loop classifies a video with the committed tiny model; the video shows frames, the label on the page is
the one the JSON stream sent, collect buttons save, and screenshots are kept (test-artifacts/live-view*.png).

    pytest tests/test_edge_page.py -q -m slow

Chromium is driven over --remote-debugging-pipe (the DevTools protocol as NUL-separated JSON on fds 3 and 4), so
nothing beyond the standard library is needed to talk to it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_model import REPO, make_images, write_video
from system_packages import apt_install, can_install

from contracts.runners.classifier import Classifier
from edge.app import EdgeOptions, run_loop
from edge.live import LiveFeed
from edge.reader import FrameReader
from edge.serve import LiveServer
from edge.sources import open_capture, parse_source

pytestmark = pytest.mark.slow
WAIT = 60.0  # seconds for the page to show something, on a loaded 2-core machine
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-test-token"


def _chromium() -> str:
    """The chromium binary, installed from Debian's packages when missing and this runs as root; else a skip."""
    found = shutil.which("chromium")
    if found is None and can_install():
        apt_install("chromium")
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and could not be (apt-get install chromium, as root)")
    return found


class Browser:
    """Headless Chromium with one page, driven by DevTools protocol commands over a pipe."""

    def __init__(self, binary: str, profile: Path, size=(1280, 800)):
        to_chrome, from_chrome = os.pipe(), os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4: move the pipe ends out of their way first.
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome[0], from_chrome[1])]
        for fd in (to_chrome[0], from_chrome[1]):
            os.close(fd)
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run", "--hide-scrollbars",
                f"--window-size={size[0]},{size[1]}", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4, *theirs), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=lambda: (os.dup2(theirs[0], 3), os.dup2(theirs[1], 4)),
        )  # fmt: skip
        for fd in theirs:
            os.close(fd)
        self._out, self._in = to_chrome[1], from_chrome[0]
        self._id, self._buffer = 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", self.session, width=size[0], height=size[1],
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium quit while answering {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", self.session, url=url)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (None while it throws, e.g. before the page loaded)."""
        out = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return None if "exceptionDetails" in out else out["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        while not (value := self.js(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not show {what} within {timeout:.0f} s")
            time.sleep(0.1)
        return value

    def screenshot(self, name: str, tmp_path: Path) -> Path:
        """Saves a PNG of the page in tmp_path and, where the repository is writable, test-artifacts/."""
        png = base64.b64decode(self.call("Page.captureScreenshot", self.session, format="png")["data"])
        path = tmp_path / name
        path.write_bytes(png)
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(path, ARTIFACTS / name)
        except OSError:
            pass
        return path

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._out, self._in):
            os.close(fd)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


class _Paced:
    """A capture that gives frames at about a camera's rate, so the loop leaves the browser some CPU."""

    def __init__(self, cap, fps: float = 15.0):
        self._cap, self._period, self._next = cap, 1.0 / fps, time.monotonic()

    def read(self):
        self._next += self._period
        time.sleep(max(0.0, self._next - time.monotonic()))
        return self._cap.read()

    def release(self):
        self._cap.release()


def _records(server: LiveServer, into: list, stop: threading.Event) -> threading.Thread:
    """Reads /events as any client would, appending each record to `into`, until `stop`."""

    def read():
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/events", headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        try:
            while not stop.is_set() and (line := r.fp.readline()):
                if line.startswith(b"data: "):
                    into.append(json.loads(line[6:]))
        except OSError:  # the stream went quiet once the loop ended
            pass
        conn.close()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_the_page_shows_the_video_and_the_label_the_stream_sent(browser, int8, tmp_path):
    bgr, _ = make_images(30, seed=3, boost=(90, 130))
    frames = np.stack([cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST) for img in bgr])
    video = write_video(tmp_path / "clip.avi", frames, fps=15)
    classifier = Classifier.from_model(int8, threads=1)
    feed = LiveFeed(info={"model": int8.name, "sha256": classifier.entry.sha256, "source": video.name}).start()
    page = {"labels": classifier.labels, "model": int8.name, "source": video.name}
    server = LiveServer(feed, "127.0.0.1", 0, token=TOKEN, page=page).start()
    spec, stop, seen = parse_source(str(video)), threading.Event(), []
    reader = FrameReader(lambda: _Paced(open_capture(spec)), name=video.name, live=False, every_frame=True,
                         loop=True, prepare=classifier.preprocess).start()  # fmt: skip
    loop = threading.Thread(target=run_loop, args=(EdgeOptions(model=str(int8)), classifier, reader),
                            kwargs={"stop": stop, "feed": feed}, daemon=True)  # fmt: skip
    loop.start()
    listener = _records(server, seen, stop)
    try:
        browser.open(server.url)  # with ?token=: the page carries it, and gets the cookie
        width = browser.wait("document.getElementById('video').naturalWidth", "a video frame")
        assert width == 640
        browser.wait("Number(document.getElementById('label').dataset.frame) >= 20", "20 frames' records")
        stop.set()  # the loop ends: the last record published is the last the page may show
        loop.join(WAIT)
        last = feed.latest()
        browser.wait(f"document.getElementById('label').dataset.frame === '{last['frame']}'", "the last record")
        shown = browser.js("['label', 'score', 'fps', 'topk'].map(id => document.getElementById(id).innerText)")
        listener.join(WAIT)
        time.sleep(1.0)  # not a check: the video's last frame comes again after REPEAT_S, for the screenshot
        path = browser.screenshot("live-view.png", tmp_path)
    finally:
        stop.set()
        reader.stop()
        server.stop()
        feed.stop()
    label, score, fps, topk = shown
    assert label == (last["label"] or "unknown") and score == f"{last['score'] * 100:.1f}%"
    assert fps == f"{last['fps']:.1f}" and topk.split("\n")[0] == last["top_k"][0]["label"]
    assert label in {r["label"] for r in seen}  # what the stream sent a client, too
    assert {r["label"] for r in seen} <= set(classifier.labels) and len(seen) > 5
    shot = cv2.imread(str(path))
    assert shot.shape == (800, 1280, 3) and shot.std() > 10  # a picture, not a blank page


class _Actions:
    labels = ["cat", "dog", "empty"]

    def __init__(self):
        self.saved: dict[str, int] = dict.fromkeys(self.labels, 0)

    def counts(self):
        return dict(self.saved)

    def save(self, label):
        self.saved[label] += 1
        return f"{label}/{label}_{self.saved[label]:04d}.jpg"


def test_collect_buttons_save_and_an_outage_shows_a_banner(browser, tmp_path):
    feed, actions = LiveFeed(info={"mode": "collect"}).start(), _Actions()
    server = LiveServer(feed, "127.0.0.1", 0, page={"title": "edge collect"}, actions=actions).start()
    bgr, _ = make_images(1, seed=5, boost=(90, 130))
    image = cv2.resize(bgr[0], (640, 480), interpolation=cv2.INTER_NEAREST)
    feed.publish(image, {"frame": 0, "time": time.time(), "source": "camera 0"}, None, None, False)
    try:
        browser.open(server.url)
        browser.wait("document.querySelectorAll('button.collect').length === 3", "the collect buttons")
        browser.wait("document.getElementById('video').naturalWidth === 640", "the video")
        for label, name in (("dog", "dog/dog_0001.jpg"), ("dog", "dog/dog_0002.jpg"), ("cat", "cat/cat_0001.jpg")):
            # each click's own file before the next click: the page shows the last answer that came back, and a
            # slow answer to an earlier click could otherwise overwrite a later one's
            browser.js(f"document.querySelector('button.collect[data-label=\"{label}\"]').click()")
            browser.wait(f"document.getElementById('saved').innerText.includes('{name}')", f"the saved {name}")
        browser.wait("document.getElementById('counts').innerText.includes('dog: 2')", "the counts")
        browser.screenshot("live-view-collect.png", tmp_path)
        assert actions.saved == {"cat": 1, "dog": 2, "empty": 0}
        assert browser.js("document.getElementById('classify').hidden") is True
        feed.publish_event({"event": "outage", "time": time.time(), "source": "camera 0", "reason": "stalled",
                            "since": "2024-05-01T12:00:00.000+00:00", "last_frame": 0})  # fmt: skip
        banner = browser.wait("!document.getElementById('banner').hidden && "
                              "document.getElementById('banner').innerText", "the outage banner")  # fmt: skip
        assert banner.startswith("No frames since") and "camera 0" in banner
    finally:
        server.stop()
        feed.stop()
