"""The live view's HTTP server (edge --serve [HOST:]PORT): the page, the annotated video as MJPEG, the records as
Server-Sent Events, the latest record and a health check, from a LiveFeed (edge.live), with the standard library.

    server = LiveServer(feed, *parse_serve("0.0.0.0:8080"), page={"labels": labels}).start()
    print(server.url)        # http://HOST:8080/?token=...: on any address but loopback, every request needs it
    ...
    server.stop()

Routes (GET and HEAD): / (the page, edge.page), /video.mjpg, /events, /latest.json, /health (503 while no frame
came for stale_s), /config.json; in collect mode POST /collect/LABEL saves a photo (actions.save). Nothing else:
every other path is 404, and nothing is read from disk at request time.

Each client has a thread of its own that holds only a sequence number or a cursor, so a slow client skips frames
and records instead of queueing them; a client that stops reading is dropped when its socket's send buffer stays
full for client_timeout_s, and nothing it does reaches the classifier's loop, which only ever calls feed.publish().
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import re
import secrets
import socket
import socketserver
import sys
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from contracts.errors import EdgeError
from edge.live import LiveFeed
from edge.routes import COOKIE, GONE, Handler

log = logging.getLogger("edge")
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def parse_serve(text: str) -> tuple[str, int]:
    """--serve [HOST:]PORT -> (host, port); PORT alone binds to 127.0.0.1 (this machine only). IPv6 as [ADDR]:PORT.

    Raises:
        EdgeError: no port, or a port outside 0-65535.
    """
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]:|(?P<host>[^:\[\]/\s]+):)?(?P<port>\d{1,5})", text.strip())
    port = int(m["port"]) if m else -1
    if not m or port > 65535:
        raise EdgeError(f"--serve {text}: give [HOST:]PORT, e.g. --serve 8080 (this machine only) or 0.0.0.0:8080")
    return m["v6"] or m["host"] or "127.0.0.1", port


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, as bound) is reachable only from this machine."""
    if host.lower().strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def needs_token(host: str, token: str | None) -> bool:
    """Whether requests need a token: always on a non-loopback address, and on loopback only when one was given."""
    return token is not None or not is_loopback(host)


def _bind_error(e: OSError, host: str, port: int) -> EdgeError:
    where = f"--serve {host}:{port}"
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return EdgeError(f"{where}: {host} is not an address of this machine: use 0.0.0.0 (every interface), "
                         "127.0.0.1, or one of its own addresses (hostname -I)")  # fmt: skip
    if e.errno == errno.EADDRINUSE:
        return EdgeError(f"port {port} on {host} is in use (another edge, or another server): pick another with "
                         "--serve HOST:PORT")  # fmt: skip
    if e.errno in (errno.EACCES, errno.EPERM):
        return EdgeError(f"{where}: ports below 1024 need root: pick 1024 or above, e.g. --serve {host}:8080")
    return EdgeError(f"{where} cannot be opened ({e.strerror or e})")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's thread never keeps the process alive
    live: LiveServer

    def server_bind(self) -> None:  # HTTPServer's would look the host up in DNS (getfqdn): slow, and not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        e = sys.exc_info()[1]
        if isinstance(e, GONE):
            log.debug("live view: %s went away (%s)", client_address[0], e)
        else:  # a bug: one line in the log, the server and the loop go on
            log.warning("live view: request from %s failed: %s: %s", client_address[0], type(e).__name__, e)


class LiveServer:
    """Serves a LiveFeed over HTTP on a thread of its own (see the module docstring)."""

    def __init__(
        self,
        feed: LiveFeed,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        page: dict | None = None,
        actions=None,
        client_timeout_s: float = 5.0,
        send_buffer: int | None = 256 * 1024,
        max_clients: int = 16,
    ):
        """Binds at once, so a port in use or a foreign address fails before any camera opens.

        Args:
            feed: what is served.
            host, port: where (port 0: any free port; `port` says which afterwards).
            token: required of every request when given; None: one is made when the host is not loopback.
            page: what /config.json tells the page (labels, title, model, mode), beside the counts.
            actions: collect mode (edge.collect): labels, counts() and save(label) -> file name, behind
                POST /collect/LABEL. None: classify mode, no route changes anything.
            client_timeout_s: a client whose socket takes no data for this long is dropped.
            send_buffer: SO_SNDBUF per client (bytes held for a slow client; None: the kernel's, up to MBs).
            max_clients: video and event streams at once; more get 503.

        Raises:
            EdgeError: the port is in use, the host is not an address of this machine, or the port needs root.
        """
        self.feed, self.page, self.actions = feed, dict(page or {}), actions
        self.client_timeout_s, self.send_buffer, self.max_clients = client_timeout_s, send_buffer, max_clients
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            self._server = server_class((host, port), Handler)
        except OSError as e:
            raise _bind_error(e, host, port) from None
        self._server.live = self
        self.host, self.port = host, self._server.server_address[1]
        bound = str(self._server.server_address[0])  # a name as bound: "localhost" is 127.0.0.1, "pi" may be too
        self.token = (token or secrets.token_urlsafe(16)) if needs_token(bound, token) else None
        self.stopping = threading.Event()
        self.dropped = 0  # stream clients that went away or were dropped
        self.stalled = 0  # ... of them, those dropped because they stopped reading for client_timeout_s
        self.streams = 0  # video and event streams open now
        self._lock = threading.Lock()
        self._actions_lock = threading.Lock()  # one save at a time: the actions object need not be thread-safe
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address, with the token when one is needed (0.0.0.0 shown as this machine's name)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> LiveServer:
        """Serves on a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="live-server", daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving: the streams end within a second, the socket is closed."""
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(2.0)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def authorized(self, query: str, headers) -> tuple[bool, bool]:
        """(whether the request carries the token, whether it came in the query: the page then sets the cookie)."""
        if self.token is None:
            return True, False
        given = parse_qs(query).get("token", [""])[0]
        if given:
            return _same(given, self.token), True
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return _same(auth[7:].strip(), self.token), False
        try:
            cookie = SimpleCookie(headers.get("Cookie", ""))
        except CookieError:
            return False, False
        return (COOKIE in cookie and _same(cookie[COOKIE].value, self.token)), False

    def host_allowed(self, host_header: str | None) -> bool:
        """Without a token, only requests addressed to a loopback name: a web page elsewhere that points a name of
        its own at 127.0.0.1 (DNS rebinding) gets 403, not the video."""
        if self.token is not None or not host_header:
            return True
        name = urlsplit(f"//{host_header}").hostname or ""
        return is_loopback(name) or name == self.host.lower()

    def count_stream(self, delta: int) -> bool:
        with self._lock:
            if delta > 0 and self.streams >= self.max_clients:
                return False
            self.streams += delta
            return True

    def note_dropped(self, who: str, e: BaseException) -> None:
        with self._lock:
            self.dropped += 1
            self.stalled += isinstance(e, TimeoutError)
        log.debug("live view: dropped %s (%s)", who, type(e).__name__)

    def collect(self, label: str) -> tuple[int, dict]:
        """POST /collect/LABEL: (HTTP status, JSON body)."""
        with self._actions_lock:
            if label not in self.actions.labels:
                return 404, {"error": f"no label {label!r}; labels: {', '.join(self.actions.labels)}"}
            try:
                name = self.actions.save(label)
            except ValueError as e:
                return 404, {"error": str(e)}
            except OSError as e:  # the disk is full or gone: say so, the classifier goes on
                log.warning("live view: could not save a %s photo: %s", label, e)
                return 507, {"error": f"could not save the photo: {e.strerror or e}"}
            return 200, {"saved": name, "counts": self.actions.counts()}

    def config(self) -> dict:
        """What the page needs: mode, labels and (collect mode) counts, with whatever `page` adds."""
        if self.actions is None:
            return {"mode": "classify", "labels": [], **self.page, "counts": None}
        return {**self.page, "mode": "collect", "labels": list(self.actions.labels), "counts": self.actions.counts()}


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
