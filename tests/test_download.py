"""train/download.py against a loopback HTTP server serving a small archive laid out like Microsoft's."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from train import download as dl
from train.data import DataError, scan_folder

ARCHIVE = "kagglecatsanddogs_5340.zip"
GOOD = {"Cat": [f"{i}.jpg" for i in range(6)], "Dog": [f"{i}.jpg" for i in range(6)]}
BAD = {  # member -> the reason filtered.txt must give
    "PetImages/Cat/666.jpg": "no JFIF marker",  # a PNG named .jpg: no JFIF segment
    "PetImages/Dog/11702.jpg": "empty file",
    "PetImages/Cat/Thumbs.db": "not an image",
}


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)  # PIL writes a JFIF APP0 segment
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, sha256 of the archive, hit counter) for a zip served over http on 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    with zipfile.ZipFile(root / ARCHIVE, "w") as zf:
        zf.writestr("CDLA-Permissive-2.0.pdf", b"%PDF-1.4 licence")  # top-level extras are not images
        zf.writestr("readme[1].txt", "Asirra")
        for cls, names in GOOD.items():
            zf.writestr(f"PetImages/{cls}/", b"")  # directory entry
            for i, name in enumerate(names):
                zf.writestr(f"PetImages/{cls}/{name}", _jpeg(i + 100 * (cls == "Dog")))
        zf.writestr("PetImages/Cat/666.jpg", _png())
        zf.writestr("PetImages/Dog/11702.jpg", b"")
        zf.writestr("PetImages/Cat/Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60))
        zf.writestr("PetImages/../escape.jpg", _jpeg(7))  # must never be written outside the cache
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path == "/truncated.zip":  # promises the whole archive, sends half, hangs up
                data = (root / ARCHIVE).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sha = hashlib.sha256((root / ARCHIVE).read_bytes()).hexdigest()
        yield f"http://127.0.0.1:{server.server_address[1]}", sha, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def point_at(monkeypatch):
    def _point(url: str, sha: str) -> None:
        monkeypatch.setenv(dl.URL_ENV, url)
        monkeypatch.setenv(dl.SHA256_ENV, sha)

    return _point


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_download_verifies_extracts_and_filters(served, point_at, tmp_path, capsys):
    base, sha, hits = served
    point_at(f"{base}/{ARCHIVE}", sha)
    n0 = len(hits)
    pets = dl.prepare_cats_vs_dogs(str(tmp_path / "cache"))
    out = capsys.readouterr().out

    assert pets == tmp_path / "cache" / "cats_vs_dogs" / "PetImages"
    assert len(hits) == n0 + 1
    assert _files(pets) == sorted(f"{c}/{n}" for c, names in GOOD.items() for n in names)
    assert not (tmp_path / "cache" / "escape.jpg").exists() and not (tmp_path / "escape.jpg").exists()
    archive = tmp_path / "cache" / ARCHIVE
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha
    assert not list((tmp_path / "cache").glob("*.partial"))

    lines = (tmp_path / "cache" / "cats_vs_dogs" / "filtered.txt").read_text().splitlines()
    listed = dict(line.split("\t") for line in lines)
    assert sorted(listed) == sorted(BAD)
    for name, reason in BAD.items():
        assert reason in listed[name]
    assert "filtered 3 " in out
    assert "100.0%" in out  # the progress line reached the end


def test_second_call_uses_cache(served, point_at, tmp_path, capsys):
    base, sha, hits = served
    point_at(f"{base}/{ARCHIVE}", sha)
    cache = tmp_path / "cache"
    pets = dl.prepare_cats_vs_dogs(str(cache))
    n, mtime = len(hits), (pets / "Cat" / "0.jpg").stat().st_mtime_ns
    capsys.readouterr()

    assert dl.prepare_cats_vs_dogs(str(cache)) == pets
    assert len(hits) == n  # no download
    assert (pets / "Cat" / "0.jpg").stat().st_mtime_ns == mtime  # no re-extraction
    assert "extracting" not in capsys.readouterr().out

    # An extraction that never wrote its marker is redone from the cached archive, still without downloading.
    (cache / "cats_vs_dogs" / dl.MARKER).unlink()
    (pets / "Dog" / "0.jpg").unlink()
    assert dl.prepare_cats_vs_dogs(str(cache)) == pets
    assert len(hits) == n
    assert (pets / "Dog" / "0.jpg").is_file()


def test_checksum_mismatch_deletes_the_download(served, point_at, tmp_path):
    base, sha, _ = served
    wrong = "0" * 64
    point_at(f"{base}/{ARCHIVE}", wrong)
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError) as e:
        dl.prepare_cats_vs_dogs(str(cache))
    msg = str(e.value)
    assert ARCHIVE in msg and wrong in msg and sha in msg
    assert dl.SHA256_ENV in msg  # the fix, if the new file is trusted
    assert list(cache.iterdir()) == []  # neither the archive nor its .partial
    assert isinstance(e.value, DataError)  # so the train CLI prints it as a one-line error


def test_truncated_download_leaves_nothing(served, point_at, tmp_path):
    base, sha, _ = served
    point_at(f"{base}/truncated.zip", sha)
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError) as e:
        dl.prepare_cats_vs_dogs(str(cache))
    assert "stopped at" in str(e.value) and "\n" not in str(e.value)
    assert list(cache.iterdir()) == []  # no half file that could pass for the archive


def test_unreachable_url_is_one_line(point_at, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{ARCHIVE}"
    point_at(url, "0" * 64)
    with pytest.raises(dl.DownloadError) as e:
        dl.prepare_cats_vs_dogs(str(tmp_path / "cache"))
    msg = str(e.value)
    assert "\n" not in msg
    assert url in msg and "--data digits" in msg and "--data path/to/PetImages" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback to print
    assert list((tmp_path / "cache").iterdir()) == []


def test_stalled_server_times_out(point_at, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "TIMEOUT_S", 0.3)
    with contextlib.closing(socket.socket()) as s:  # listens, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        point_at(f"http://127.0.0.1:{s.getsockname()[1]}/{ARCHIVE}", "0" * 64)
        with pytest.raises(dl.DownloadError) as e:
            dl.prepare_cats_vs_dogs(str(tmp_path / "cache"))
    assert "timed out" in str(e.value) and "--data digits" in str(e.value)


def test_http_error_names_status(served, point_at, tmp_path):
    base, sha, _ = served
    point_at(f"{base}/missing.zip", sha)
    with pytest.raises(dl.DownloadError, match="HTTP 404") as e:
        dl.prepare_cats_vs_dogs(str(tmp_path / "cache"))
    assert "\n" not in str(e.value) and dl.URL_ENV in str(e.value)


def test_result_feeds_scan_folder(served, point_at, tmp_path):
    base, sha, _ = served
    point_at(f"{base}/{ARCHIVE}", sha)
    ds = scan_folder(dl.prepare_cats_vs_dogs(str(tmp_path / "cache")))
    assert ds.class_names == ["Cat", "Dog"]
    assert ds.skipped == []  # the filtered files never reach the scan
    assert sum(len(s) for s in ds.splits.values()) == 12
    assert {s: np.bincount(ds.splits[s].labels).tolist() for s in ds.splits} == {
        "train": [4, 4],
        "val": [1, 1],
        "test": [1, 1],
    }


def test_archive_placed_in_cache_is_verified(served, point_at, tmp_path):
    base, sha, hits = served
    point_at(f"{base}/{ARCHIVE}", sha)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ARCHIVE).write_bytes(b"an old or damaged copy")
    n = len(hits)
    dl.prepare_cats_vs_dogs(str(cache))  # the bad copy is replaced by a verified download
    assert len(hits) == n + 1
    assert hashlib.sha256((cache / ARCHIVE).read_bytes()).hexdigest() == sha

    other = tmp_path / "other"  # a good copy put there by hand is used without downloading
    other.mkdir()
    (other / ARCHIVE).write_bytes((cache / ARCHIVE).read_bytes())
    assert len(_files(dl.prepare_cats_vs_dogs(str(other)))) == 12
    assert len(hits) == n + 1
