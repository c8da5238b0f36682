"""What watching costs the camera loop: edge's loop FPS with the live view (edge --serve) off, on with nobody
watching, with 1 and 4 browser-like clients, and with one client that stops reading.

    python -m benchmarks.device.watching --model runs/NAME/export/tflite_int8.tflite --frames 300 \\
        --out watching.json --csv watching.csv

Each case runs benchmarks.device.loop.measure_loop (edge.app.run_loop over a 640x480 video) with a LiveFeed and a
LiveServer on 127.0.0.1 (port 0), and its clients in a process of their own (as browsers are: their reading
does not compete for the loop's GIL): a client opens /video.mjpg and /events, as the page does, and reads both as
fast as they come; the stalled client asks for /video.mjpg with a
4 kB receive buffer and never reads. Cases are interleaved pass by pass and each row is the median pass (by
loop_ms), as loop.loop_columns does, so a burst of other work on the machine moves one pass, not one case. A first,
uncounted pass lets edge choose the loop's shape (edge.shape); every case then runs in that shape, so the rows differ
by watching alone.

Columns: watchers ("off": no live view at all; "0", "1", "4", "1 stalled"), loop_fps and loop_ms (the loop's own
figures), vs_off (loop_fps / the "off" row's), frames_encoded (JPEGs the feed made: 0 when nobody watches),
jpeg_fps (JPEGs a video client received per second, mean over clients), events_fps (records an /events client
received per second), stalled_dropped (the stalled client was dropped by the server's socket timeout; the loop
finishing at all is the other half of that promise). After the loop, the feed keeps getting a frame every 1/15 s,
as from a camera, until the stalled client is dropped or client_timeout_s + 10 s pass.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.device.loop import measure_loop, synthetic_frames, write_video
from benchmarks.device.machine import default_device_name, device_meta
from benchmarks.device.settings import BenchError
from contracts.atomic import why_unwritable, write_json, write_text
from edge.live import LiveFeed
from edge.serve import LiveServer

CASES = ("off", "0", "1", "4", "1 stalled")
COLUMNS = ("watchers", "loop_fps", "loop_ms", "vs_off", "frames_encoded", "jpeg_fps", "events_fps",
           "stalled_dropped", "loop_frames")  # fmt: skip


class _Client(threading.Thread):
    """Reads one stream of the live view (/video.mjpg parts or /events records), noting when each arrived."""

    def __init__(self, port: int, path: str, stalled: bool = False):
        super().__init__(daemon=True)
        self.path, self.stalled, self.times = path, stalled, []
        self.done = threading.Event()
        self.sock = socket.socket()
        if stalled:  # a client on a slow link that stops reading: the server's send buffer fills
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())

    def run(self) -> None:
        if self.stalled:
            return  # connected, asked, reads nothing
        f = self.sock.makefile("rb")
        try:  # blocking reads: close() shuts the socket down to end them
            while not self.done.is_set() and (line := f.readline()):
                if line.startswith(b"Content-Length:") and self.path == "/video.mjpg":
                    f.readline()  # the blank line after the part's headers
                    f.read(int(line.split(b":")[1]))
                    self.times.append(time.monotonic())
                elif line.startswith(b"data: "):
                    self.times.append(time.monotonic())
        except OSError:
            return
        finally:
            f.close()

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t <= end for t in self.times) / max(end - start, 1e-9)

    def close(self) -> None:
        self.done.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # the server closed it first
            pass
        self.join(2.0)
        self.sock.close()


def _clients(port: int, case: str) -> list[_Client]:
    if case == "1 stalled":
        return [_Client(port, "/video.mjpg", stalled=True)]
    n = 0 if case in ("off", "0") else int(case)
    return [_Client(port, path) for _ in range(n) for path in ("/video.mjpg", "/events")]


def _serve_clients(conn) -> None:
    """The client process: ("open", port, case) connects a case's clients and answers "ready"; ("close", start,
    end) closes them and answers (jpeg_fps, events_fps) between those times; None ends it."""
    conn.send("up")
    while (message := conn.recv()) is not None:
        if message[0] == "open":
            clients = _clients(message[1], message[2])
            for c in clients:
                c.start()
            conn.send("ready")
        else:
            for c in clients:
                c.close()
            rates = []
            for path in ("/video.mjpg", "/events"):
                cs = [c for c in clients if c.path == path and not c.stalled]
                rates.append(round(statistics.mean(c.rate(*message[1:]) for c in cs), 2) if cs else None)
            conn.send(tuple(rates))


class ClientProcess:
    """The clients, in a process of their own (as browsers are): their reading does not take the loop's GIL."""

    def __enter__(self) -> ClientProcess:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads running
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve_clients, args=(theirs,), daemon=True)
        self.process.start()
        if not self.conn.poll(60.0) or self.conn.recv() != "up":  # its imports done: they would slow a pass
            raise BenchError("live view: the client process did not start within 60 s")
        return self

    def ask(self, *message):
        self.conn.send(message)
        if not self.conn.poll(30.0):
            raise BenchError("live view: the client process did not answer within 30 s")
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send(None)
        self.process.join(5.0)


def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def measure_case(
    classifier, video, case: str, clients: ClientProcess, warmup=10, client_timeout_s=2.0, shape: str = "auto"
) -> dict:
    """One pass of one case: measure_loop's figures with the live view's, as in the module docstring."""
    if case == "off":
        figures = measure_loop(classifier, video, warmup, shape=shape)
        return {"watchers": case, **figures, "frames_encoded": None, "jpeg_fps": None, "events_fps": None,
                "stalled_dropped": None}  # fmt: skip
    feed = LiveFeed().start()
    server = LiveServer(feed, "127.0.0.1", 0, client_timeout_s=client_timeout_s).start()
    expected = 1 if case == "1 stalled" else 2 * int(case)
    try:
        clients.ask("open", server.port, case)
        if not _until(lambda: server.streams == expected, 10.0):
            raise BenchError(f"live view: {expected} client streams did not open within 10 s")
        start = time.monotonic()
        figures = measure_loop(classifier, video, warmup, feed=feed, shape=shape)
        end = time.monotonic()
        encoded, dropped = feed.frames_encoded, None
        if case == "1 stalled":
            camera = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
            deadline = time.monotonic() + client_timeout_s + 10.0
            while server.stalled == 0 and time.monotonic() < deadline:  # the camera goes on after the timed run
                feed.publish(camera, {"frame": -1}, None, None, True)
                time.sleep(1 / 15)
            dropped = server.stalled > 0
        jpeg_fps, events_fps = clients.ask("close", start, end)
    finally:
        server.stop()
        feed.stop()
    return {"watchers": case, **figures, "frames_encoded": encoded, "jpeg_fps": jpeg_fps, "events_fps": events_fps,
            "stalled_dropped": dropped}  # fmt: skip


def measure_watching(
    classifier, video, warmup: int = 10, repeats: int = 3, cases=CASES, client_timeout_s: float = 2.0, log=None
) -> list[dict]:
    """Every case `repeats` times, interleaved; one row per case from its median pass (by loop_ms).

    Args:
        classifier: the loaded model (contracts.runners.classifier.Classifier).
        video: a video file (benchmarks.device.loop.write_video makes one).
        warmup: first frames of each pass left out of the loop's figures.
        repeats: passes per case.
        cases: which rows, from CASES.
        client_timeout_s: the server drops a client that takes no data for this long (edge's default is 5 s).
        log: called with a line per pass (None: quiet).

    Returns:
        rows with COLUMNS first, then the rest of measure_loop's figures.
    """
    passes: dict[str, list[dict]] = {case: [] for case in cases}
    # Not counted: the first pass of a process runs cold. It also picks the loop's shape (edge.shape), which every
    # case then keeps, so the rows differ by watching alone and not by a trial that went the other way.
    shape = measure_loop(classifier, video, warmup)["loop_shape"]
    if log:
        log(f"loop shape for every case: {shape}")
    with ClientProcess() as clients:
        for r in range(max(1, repeats)):
            for case in cases:
                row = measure_case(classifier, video, case, clients, warmup, client_timeout_s, shape)
                passes[case].append(row)
                if log:
                    log(f"pass {r + 1}/{repeats}, watchers {case}: {row['loop_fps']:.1f} FPS")
    rows = []
    for case in cases:
        ordered = sorted(passes[case], key=lambda p: p["loop_ms"])
        row = dict(ordered[len(ordered) // 2])
        if case == "1 stalled":  # dropped in every pass, not just the median one
            row["stalled_dropped"] = all(p["stalled_dropped"] for p in passes[case])
        rows.append(row)
    off = next((r["loop_fps"] for r in rows if r["watchers"] == "off"), None)
    for row in rows:
        row["vs_off"] = round(row["loop_fps"] / off, 3) if off else None
    return [{**{k: row.get(k) for k in COLUMNS}, **row} for row in rows]


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table of COLUMNS."""
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k in COLUMNS] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(COLUMNS)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def rows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device.watching", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .tflite or .onnx artifact with its manifest.json beside it")
    p.add_argument("--video", default=None, help="the video to classify (default: a generated 640x480 one)")
    p.add_argument("--frames", type=int, default=300, help="frames of the generated video (default 300)")
    p.add_argument("--warmup", type=int, default=10, help="first frames of each pass not timed (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="passes per case; rows are medians (default 3)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: one per CPU core)")
    p.add_argument("--client-timeout", type=float, default=2.0, help="seconds before a stalled client is dropped")
    p.add_argument("--out", default="", help="write {meta, rows} as JSON here")
    p.add_argument("--csv", default="", help="write the rows as CSV here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs every case and prints the table; exit 0, or 2 for bad flags or a model edge refuses."""
    from contracts.errors import EdgeError
    from contracts.manifest import ManifestError
    from contracts.runners.classifier import Classifier
    from edge.app import resolve_threads

    a = build_parser().parse_args(argv)
    try:
        for flag, value, low in (("--frames", a.frames, a.warmup + 3), ("--repeats", a.repeats, 1)):
            if value < low:
                raise BenchError(f"{flag} {value} is below {low}")
        for flag, path in (("--out", a.out), ("--csv", a.csv)):
            if path and (why := why_unwritable(path)):
                raise BenchError(f"{flag} {path} {why}: pass a file path in a folder you can write")
        threads = resolve_threads(a.threads)
        classifier = Classifier.from_model(a.model, None, threads)
        with tempfile.TemporaryDirectory(prefix="watching-") as tmp:
            video = a.video or write_video(synthetic_frames(a.frames), Path(tmp) / "watching.mp4")
            print(f"watching: {classifier.describe()}, {threads} threads, {video}", file=sys.stderr)
            rows = measure_watching(classifier, video, a.warmup, a.repeats, client_timeout_s=a.client_timeout,
                                    log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    except (BenchError, EdgeError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if a.out:
        write_json(a.out, {"meta": {**device_meta(default_device_name()), "model": a.model, "threads": threads},
                           "rows": rows})  # fmt: skip
    if a.csv:
        write_text(a.csv, rows_csv(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
