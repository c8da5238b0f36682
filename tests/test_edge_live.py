"""The live view without a browser: LiveFeed's promises (encode once, only while watched, newest only, bounded
memory) and LiveServer's (token, routes only, one-line bind errors, streams that match the feed, stalled clients
dropped, collect actions).

    pytest tests/test_edge_live.py -q
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from contracts.errors import EdgeError
from edge.live import LiveFeed
from edge.page import PAGE, PAGE_CSP
from edge.serve import LiveServer, needs_token, parse_serve

WAIT = 15.0  # seconds any one condition may take on a loaded 2-core machine before the test fails


def _until(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _frame(value: int, size=(480, 640)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def _record(i: int) -> dict:
    return {"frame": i, "label": ["red", "green", "blue"][i % 3], "score": 0.5 + i / 1000, "top_k": []}


@pytest.fixture
def feed():
    f = LiveFeed(info={"model": "m.tflite", "sha256": "ab" * 32, "source": "test", "mode": "classify"}, max_fps=200)
    f.start()
    yield f
    f.stop()


@pytest.fixture
def serve(feed):
    servers = []

    def make(**kw) -> LiveServer:
        s = LiveServer(feed, "127.0.0.1", 0, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def _get(server: LiveServer, path: str, headers: dict | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def _raw(server: LiveServer, request: bytes) -> bytes:
    """Sends bytes as they are (no client library normalizes the path) and reads the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# The feed


def test_nothing_is_encoded_while_nobody_watches(feed):
    for i in range(30):
        feed.publish(_frame(i), _record(i), None, 30.0, True)
        time.sleep(0.005)  # paces the producer like a camera: an encoder that ran anyway would have had time
    assert feed.frames == 30 and feed.frames_encoded == 0
    assert feed.health()["watchers"] == 0


def test_the_newest_frame_is_encoded_once_for_every_watcher(feed):
    for i in range(5):  # published before anyone watches: only the newest may be shown
        feed.publish(_frame(10 * i), _record(i), None, None, True)
    n_watchers, got = 6, {}
    ready = threading.Barrier(n_watchers + 1)

    def watch(k):
        with feed.watching():
            ready.wait()
            seq, frames = 0, []
            while len(frames) < 4:
                out = feed.next_jpeg(seq, timeout=WAIT)
                assert out is not None, "no frame came"
                seq, jpeg = out
                frames.append(jpeg)
                ready.wait()  # in step with the publisher: every watcher has this frame before the next comes
            got[k] = frames

    threads = [threading.Thread(target=watch, args=(k,)) for k in range(n_watchers)]
    for t in threads:
        t.start()
    ready.wait()  # all watch
    ready.wait()  # all have the first frame: the newest of the five
    for value in (100, 150, 200):
        feed.publish(_frame(value), _record(value), None, None, True)
        ready.wait()
    for t in threads:
        t.join(WAIT)
    assert len(got) == n_watchers
    assert feed.frames_encoded == 4  # one JPEG per frame shown, not one per watcher
    for frames in got.values():
        assert frames == got[0]  # the same bytes for everyone
    values = [int(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).mean().round()) for j in got[0]]
    assert values == [40, 100, 150, 200]


def test_the_overlay_is_drawn_on_a_copy_when_the_loop_did_not_draw(feed):
    from contracts.runners.classifier import Category, Result

    image = _frame(0)
    result = Result([Category("red", 0.9)], 1.5, np.array([0.9, 0.05, 0.05], np.float32))
    feed.publish(image, _record(0), result, 25.0, False)
    with feed.watching():
        _, jpeg = feed.next_jpeg(0, timeout=WAIT)
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert shown.max() > 100  # the label was drawn on what is shown ...
    assert image.max() == 0  # ... and not on the loop's frame


def test_records_ring_is_bounded_and_a_late_client_skips_ahead(feed):
    small = LiveFeed(history=5)
    for i in range(12):
        small.publish(_frame(0), _record(i), None, None, True)
    small.publish_event({"event": "outage", "since": "x"})
    cursor, records = small.records_after(0, timeout=0)
    assert cursor == 13 and [r.get("frame") for r in records] == [8, 9, 10, 11, None]
    assert small.records_after(cursor, timeout=0) == (13, [])
    assert small.latest() == _record(11)  # the newest frame record, not the event
    assert small.health()["outage"] == {"event": "outage", "since": "x"}
    small.publish(_frame(0), _record(12), None, None, True)
    assert small.health()["outage"] is None


def test_health_is_ok_only_while_frames_are_fresh():
    now = [100.0]
    f = LiveFeed(info={"model": "m.tflite", "sha256": "cd" * 32}, stale_s=10.0, clock=lambda: now[0])
    h = f.health()
    assert h["ok"] is False and h["last_frame_age_s"] is None and h["frames"] == 0
    f.publish(_frame(0), _record(0), None, 12.5, True)
    now[0] += 3.0
    h = f.health()
    assert h["ok"] is True and h["last_frame_age_s"] == 3.0 and h["fps"] == 12.5 and h["frames"] == 1
    assert h["model"] == "m.tflite" and h["sha256"] == "cd" * 32
    now[0] += 8.0
    assert f.health()["ok"] is False


# The server: who may ask, and what


@pytest.mark.parametrize(
    "text, expected",
    [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:8080", ("0.0.0.0", 8080)), ("pi.local:9000", ("pi.local", 9000)),
     ("[::1]:8080", ("::1", 8080)), (" 0 ", ("127.0.0.1", 0))],
)  # fmt: skip
def test_parse_serve(text, expected):
    assert parse_serve(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":8080", "70000", "a:b", "1.2.3.4:", "http://x:80"])
def test_parse_serve_refuses_in_one_line(text):
    with pytest.raises(EdgeError, match="--serve") as e:
        parse_serve(text)
    assert "\n" not in str(e.value)


def test_only_loopback_goes_without_a_token():
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1"):
        assert not needs_token(host, None), host
        assert needs_token(host, "given"), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "pi.local"):
        assert needs_token(host, None), host


def test_loopback_without_a_token_serves_and_says_its_url(serve):
    server = serve()
    assert server.token is None and server.url == f"http://127.0.0.1:{server.port}/"
    assert _get(server, "/config.json")[0] == 200


def test_a_token_is_required_of_every_request(serve, feed):
    feed.publish(_frame(0), _record(0), None, 30.0, True)
    server = serve(token="s3cret-token")
    assert server.url.endswith("/?token=s3cret-token")
    for path in ("/", "/health", "/latest.json", "/config.json", "/events", "/video.mjpg", "/nope"):
        status, headers, body = _get(server, path)
        assert status == 401 and b"token" in body and len(body) < 200, path
        assert _get(server, path, {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(server, "/health?token=wrong")[0] == 401
    assert _get(server, "/health?token=s3cret-token")[0] == 200
    assert _get(server, "/health", {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert _get(server, "/health", {"Cookie": "edge_token=s3cret-token"})[0] == 200
    assert _get(server, "/health", {"Cookie": "edge_token=nope"})[0] == 401
    status, headers, body = _get(server, "/?token=s3cret-token")
    cookie = headers["Set-Cookie"]
    assert status == 200 and "edge_token=s3cret-token" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


@pytest.mark.parametrize(
    "target",
    ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/page/../../x", "/.%2e/.%2e/etc/passwd",
     "/video.mjpg/../../../etc/passwd", "/health/../../../../etc/passwd", "http://localhost/etc/passwd",
     "/etc/passwd", "/edge/page.py", "/%2fetc%2fpasswd", "/collect/../../etc/passwd", "/..%5c..%5cetc%5cpasswd"],
)  # fmt: skip
def test_nothing_outside_the_routes_is_served(serve, target):
    server = serve()
    answer = _raw(server, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 404"), answer[:80]
    assert b"root:" not in answer and b"import" not in answer


def test_requests_named_for_another_host_are_refused_without_a_token(serve):
    server = serve()  # loopback, no token: a page elsewhere must not reach it by pointing its own name here
    assert _get(server, "/config.json", {"Host": f"evil.example:{server.port}"})[0] == 403
    assert _get(server, "/config.json", {"Host": f"localhost:{server.port}"})[0] == 200


def test_page_headers(serve):
    status, headers, body = _get(serve(), "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert headers["Content-Security-Policy"] == PAGE_CSP and "default-src 'none'" in PAGE_CSP
    script = re.search(r"<script>(.*?)</script>", PAGE, re.S)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in PAGE_CSP  # the page's own script is the one allowed
    assert b'id="video"' in body and b"http" not in body.replace(b"http-equiv", b"")  # no external resources


# The server: binding


def test_a_port_in_use_is_one_line(feed):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EdgeError) as e:
            LiveServer(feed, "127.0.0.1", port)
    message = str(e.value)
    assert f"port {port} on 127.0.0.1 is in use" in message and "--serve HOST:PORT" in message
    assert "\n" not in message


@pytest.mark.parametrize("host", ["203.0.113.7", "no-such-host.invalid"])
def test_a_host_that_is_not_this_machine_is_one_line(feed, host):
    with pytest.raises(EdgeError, match=f"{host} is not an address of this machine") as e:
        LiveServer(feed, host, 0)
    assert "\n" not in str(e.value)


# The server: what it streams


def _read_headers(f) -> dict:
    """The status line and headers of a stream (and an MJPEG stream's first boundary)."""
    status = f.readline()
    assert status.startswith(b"HTTP/1.0 200"), status
    headers = {}
    while (line := f.readline().strip()) != b"":
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers["content-type"].startswith("multipart/"):
        assert f.readline() == b"--edgeframe\r\n"
    return headers


def _open_stream(server: LiveServer, path: str, rcvbuf: int | None = None):
    s = socket.socket()
    if rcvbuf:  # set before connecting: the window the server may fill
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    return s


def _mjpeg_part(f) -> bytes:
    """The next JPEG of a multipart/x-mixed-replace stream (file-like over the socket, after the first boundary)."""
    length = None
    while (line := f.readline().strip()) != b"":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    jpeg = f.read(length)
    assert f.read(2) == b"\r\n" and f.readline() == b"--edgeframe\r\n"  # the part ends with the next boundary
    return jpeg


class _Publisher(threading.Thread):
    """Publishes frames like a camera loop would (noise: big JPEGs), counting every publish; stop() ends it."""

    def __init__(self, feed, noise=False, period=0.01):
        super().__init__(daemon=True)
        self.feed, self.noise, self.period, self.count = feed, noise, period, 0
        self._done = threading.Event()
        self._rng = np.random.default_rng(0)

    def run(self):
        while not self._done.is_set():
            img = self._rng.integers(0, 256, (480, 640, 3), np.uint8) if self.noise else _frame(self.count % 250)
            self.feed.publish(img, _record(self.count), None, 30.0, True)
            self.count += 1
            self._done.wait(self.period)

    def stop(self):
        self._done.set()
        self.join(WAIT)


def test_mjpeg_parts_are_jpegs_of_the_frames(serve, feed):
    server = serve()
    pub = _Publisher(feed)
    pub.start()
    with _open_stream(server, "/video.mjpg") as s, s.makefile("rb") as f:
        assert _read_headers(f)["content-type"] == "multipart/x-mixed-replace; boundary=edgeframe"
        shown = [cv2.imdecode(np.frombuffer(_mjpeg_part(f), np.uint8), cv2.IMREAD_COLOR) for _ in range(5)]
    pub.stop()
    assert all(img is not None and img.shape == (480, 640, 3) for img in shown)
    assert len({int(img.mean().round()) for img in shown}) > 1  # it moves: newer frames, not one repeated
    _until(lambda: feed.watchers == 0, "the watcher to leave")


def test_events_are_the_published_records(serve, feed):
    server = serve()
    with _open_stream(server, "/events") as s, s.makefile("rb") as f:
        assert _read_headers(f)["content-type"] == "text/event-stream"
        assert f.readline() == b"retry: 2000\n" and f.readline() == b"\n"  # from here on, it has its cursor
        sent = [_record(i) for i in range(40)]
        sent.insert(17, {"event": "outage", "time": 1.0, "source": "cam", "since": "t", "reason": "stalled"})
        for r in sent:
            if "event" in r:
                feed.publish_event(r)
            else:
                feed.publish(_frame(0), r, None, None, True)
        got = []
        while len(got) < len(sent):
            line = f.readline()
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:]))
    assert got == sent


def test_health_is_503_until_a_frame_comes(serve, feed):
    server = serve()
    status, _, body = _get(server, "/health")
    assert status == 503 and json.loads(body)["ok"] is False
    assert _get(server, "/latest.json")[0] == 503
    feed.publish(_frame(0), _record(7), None, 30.0, True)
    status, _, body = _get(server, "/health")
    health = json.loads(body)
    assert status == 200 and health["ok"] is True and health["frames"] == 1 and health["sha256"] == "ab" * 32
    status, _, body = _get(server, "/latest.json")
    assert status == 200 and json.loads(body) == _record(7)


def test_a_stalled_client_is_dropped_while_another_keeps_watching(serve, feed, capfd):
    server = serve(client_timeout_s=0.5, send_buffer=32 * 1024)
    pub = _Publisher(feed, noise=True, period=0.02)  # ~200 kB JPEGs: the stalled socket is full at once
    pub.start()
    shown, done = [], threading.Event()

    def watch():  # a client that reads everything
        with _open_stream(server, "/video.mjpg") as s, s.makefile("rb") as f:
            _read_headers(f)
            while not done.is_set():
                shown.append(cv2.imdecode(np.frombuffer(_mjpeg_part(f), np.uint8), cv2.IMREAD_COLOR).shape)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stalled = _open_stream(server, "/video.mjpg", rcvbuf=4096)  # asks, then never reads
    _until(lambda: server.stalled == 1, "the stalled client to be dropped")
    published, seen = pub.count, len(shown)
    _until(lambda: len(shown) > seen + 3, "the other client to get more frames")
    _until(lambda: pub.count > published + 3, "the loop to go on publishing")
    done.set()
    watcher.join(WAIT)
    stalled.close()
    pub.stop()
    assert server.stalled == 1 and set(shown) == {(480, 640, 3)}
    _until(lambda: feed.watchers == 0, "the other client to be gone too")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_too_many_streams_get_503(serve, feed):
    server = serve(max_clients=1)
    with _open_stream(server, "/events") as s, s.makefile("rb") as f:
        _read_headers(f)
        assert _get(server, "/video.mjpg")[0] == 503


# Collect mode


class _Actions:
    labels = ["cat", "dog"]

    def __init__(self):
        self.saved = {"cat": 0, "dog": 0}
        self.fail = None

    def counts(self):
        return dict(self.saved)

    def save(self, label):
        if self.fail:
            raise self.fail
        if label not in self.saved:
            raise ValueError(f"unknown label {label}")
        self.saved[label] += 1
        return f"{label}/{label}_{self.saved[label]:04d}.jpg"


def test_collect_saves_and_counts(serve):
    actions = _Actions()
    server = serve(token="tok", actions=actions, page={"title": "collect"})
    auth = {"Authorization": "Bearer tok"}
    status, _, body = _get(server, "/config.json", auth)
    assert status == 200 and json.loads(body) == {"title": "collect", "mode": "collect", "labels": ["cat", "dog"],
                                                  "counts": {"cat": 0, "dog": 0}}  # fmt: skip
    status, _, body = _get(server, "/collect/dog", auth, "POST")
    assert status == 200 and json.loads(body) == {"saved": "dog/dog_0001.jpg", "counts": {"cat": 0, "dog": 1}}
    same = {**auth, "Origin": f"http://127.0.0.1:{server.port}", "Host": f"127.0.0.1:{server.port}"}
    assert _get(server, "/collect/cat", same, "POST")[0] == 200
    assert _get(server, "/collect/cat", {}, "POST")[0] == 401
    assert _get(server, "/collect/bird", auth, "POST")[0] == 404
    assert _get(server, "/collect/cat", auth, "GET")[0] == 405
    assert _get(server, "/health", auth, "POST")[0] == 405
    cross = {**auth, "Origin": "http://evil.example"}
    assert _get(server, "/collect/cat", cross, "POST")[0] == 403
    assert _get(server, "/collect/cat", {**auth, "Sec-Fetch-Site": "cross-site"}, "POST")[0] == 403
    actions.fail = OSError(28, "No space left on device")
    status, _, body = _get(server, "/collect/cat", auth, "POST")
    assert status == 507 and "No space left on device" in json.loads(body)["error"]
    assert actions.counts() == {"cat": 1, "dog": 1}


def test_classify_mode_has_no_collect_route(serve):
    server = serve(page={"labels": ["red", "green", "blue"]})
    assert _get(server, "/collect/red", {}, "POST")[0] == 404
    config = json.loads(_get(server, "/config.json")[2])
    assert config["mode"] == "classify" and config["labels"] == ["red", "green", "blue"]
