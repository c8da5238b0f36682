"""The live view's routes: one Handler per HTTP request, on the server's thread for that client (edge.serve).

    GET /              the page (edge.page; a ?token= in its address sets an HttpOnly cookie for what follows)
    GET /video.mjpg    the newest annotated frames as multipart/x-mixed-replace JPEGs
    GET /events        every record as a Server-Sent Event (data: JSON), batched
    GET /latest.json   the newest frame record (503 before the first)
    GET /health        feed.health() (503 while no frame came for stale_s)
    GET /config.json   mode, labels, counts
    POST /collect/L    collect mode: save a photo labelled L

The handler reaches the server through self.server.live (edge.serve.LiveServer) and matches paths exactly, before
any decoding: "..", "%2e%2e", "//" and absolute URLs match no route and get 404. Nothing here opens a file.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from edge.page import PAGE, PAGE_CSP

log = logging.getLogger("edge")
COOKIE = "edge_token"
GONE = (ConnectionError, TimeoutError)  # a client that went away or stopped reading: dropped quietly
SSE_INTERVAL_S = 0.05  # an event-stream client writes at most 20 times a second, every record since its last write
KEEPALIVE_S = 15.0  # an SSE comment when nothing else was sent for this long, so proxies keep the stream open
WAIT_S = 1.0  # a stream's thread looks at the stop flag at least this often
REPEAT_S = 0.3  # a video client gets its last frame again when no new one came for this long (see _video)
BOUNDARY = "edgeframe"
# Each part ends with the next boundary: browsers show a part only once the boundary after it came.
PART_END = f"\r\n--{BOUNDARY}\r\n".encode()
MAX_BODY = 4096  # POST bodies are not used; a larger one is refused


class Handler(BaseHTTPRequestHandler):
    """One request of the live view (see the module docstring)."""

    server_version = "edge"  # no Python version in the Server header
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: streams end by closing

    def setup(self) -> None:
        live = self.server.live
        self.timeout = live.client_timeout_s  # every read and write of this connection; sendall included
        super().setup()
        if live.send_buffer:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, live.send_buffer)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("live view: %s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")  # the token may be in the address
        self.send_header("X-Frame-Options", "DENY")  # no other site can frame the page (and its buttons)
        super().end_headers()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        live = self.server.live
        path, _, query = self.path.partition("?")
        if not live.host_allowed(self.headers.get("Host")):
            return self._text(403, "this server answers only to localhost: open http://127.0.0.1:PORT/\n")
        ok, self.token_in_query = live.authorized(query, self.headers)
        if not ok:
            return self._text(401, "token required: open the address edge printed when it started (…/?token=…)\n",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if path.startswith("/collect/") and live.actions is not None:
            return self._collect(unquote(path[len("/collect/") :]))
        get = {"/": self._page, "/video.mjpg": self._video, "/events": self._events, "/latest.json": self._latest,
               "/health": self._health, "/config.json": self._config}.get(path)  # fmt: skip
        if get is None:
            return self._text(404, "not found\n")
        if self.command == "POST":
            return self._text(405, "GET or HEAD only\n", {"Allow": "GET, HEAD"})
        get()

    def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str, headers: dict | None = None) -> None:
        self._send(code, text.encode(), "text/plain; charset=utf-8", headers)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", None)

    def _page(self) -> None:
        headers = {"Content-Security-Policy": PAGE_CSP}
        live = self.server.live
        if self.token_in_query:  # the page was opened with ?token=: later requests of the browser carry it as a cookie
            headers["Set-Cookie"] = f"{COOKIE}={live.token}; Path=/; HttpOnly; SameSite=Strict"
        self._send(200, PAGE.encode(), "text/html; charset=utf-8", headers)

    def _latest(self) -> None:
        record = self.server.live.feed.latest()
        self._json(200, record) if record is not None else self._json(503, {"error": "no frame yet"})

    def _health(self) -> None:
        health = self.server.live.feed.health()
        self._json(200 if health["ok"] else 503, health)

    def _config(self) -> None:
        self._json(200, self.server.live.config())

    def _collect(self, label: str) -> None:
        if self.command != "POST":
            return self._text(405, "POST only\n", {"Allow": "POST"})
        if not self._same_origin():
            return self._text(403, "cross-site request refused\n")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            return self._text(413, "no body expected\n")
        length = int(length)
        self.rfile.read(length)
        code, body = self.server.live.collect(label)
        self._json(code, body)

    def _same_origin(self) -> bool:
        """A browser's POST from another site names it in Origin (and Sec-Fetch-Site): refused (CSRF)."""
        origin, host = self.headers.get("Origin"), self.headers.get("Host", "")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return False
        return self.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")

    def _stream(self, ctype: str, body) -> None:
        """Sends the headers of an endless response, then runs body() until the client goes or the server stops."""
        live = self.server.live
        if not live.count_stream(1):
            return self._text(503, "too many viewers; close another one\n", {"Retry-After": "5"})
        try:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            if self.command != "HEAD":
                body()
        except GONE as e:
            live.note_dropped(self.address_string(), e)
        finally:
            live.count_stream(-1)
        self.close_connection = True

    def _client_gone(self) -> bool:
        """Whether the client closed its end (it sends nothing more, so a readable socket with no data is closed):
        found out without writing, so one that left during an outage does not keep the encoder busy."""
        if not select.select([self.connection], [], [], 0)[0]:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _video(self) -> None:
        live = self.server.live

        def part(jpeg: bytes) -> None:
            head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            self.wfile.write(head + jpeg + PART_END)  # one write: one frame, whole

        def body() -> None:
            with live.feed.watching():
                self.wfile.write(PART_END[2:])
                seq, jpeg, repeated = 0, None, True
                while not live.stopping.is_set() and not live.feed.stopped:
                    got = live.feed.next_jpeg(seq, timeout=REPEAT_S if not repeated else WAIT_S)
                    if got is not None:
                        (seq, jpeg), repeated = got, False
                        part(jpeg)
                    elif not repeated:  # Chromium shows a part only once the next one begins: send it again
                        part(jpeg)
                        repeated = True
                    elif self._client_gone():  # no frames (an outage): is anyone still there?
                        raise ConnectionResetError("closed while no frames came")

        self._stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", body)

    def _events(self) -> None:
        live = self.server.live

        def body() -> None:
            feed = live.feed
            cursor = max(0, feed.cursor() - 1)  # starts with the newest record: the page has something at once
            self.wfile.write(b"retry: 2000\n\n")
            last = time.monotonic()
            while not live.stopping.is_set() and not feed.stopped:
                woke = time.monotonic()
                cursor, records = feed.records_after(cursor, timeout=WAIT_S)
                if records:
                    self.wfile.write(b"".join(b"data: %s\n\n" % json.dumps(r).encode() for r in records))
                    last = time.monotonic()
                elif self._client_gone():
                    raise ConnectionResetError("closed while no records came")
                elif time.monotonic() - last >= KEEPALIVE_S:
                    self.wfile.write(b": keepalive\n\n")
                    last = time.monotonic()
                live.stopping.wait(max(0.0, SSE_INTERVAL_S - (time.monotonic() - woke)))

        self._stream("text/event-stream", body)
