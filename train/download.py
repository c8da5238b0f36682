"""The real cats vs dogs data: Microsoft's Kaggle archive, downloaded once, checked, and unpacked.

    python -m train --data cats_vs_dogs      # downloads about 790 MB on first use, then trains

`prepare_cats_vs_dogs()` returns `<cache>/cats_vs_dogs/PetImages` with one folder per class (Cat, Dog),
ready for `train.data.scan_folder`. The archive is the one TensorFlow Datasets' `cats_vs_dogs` builder
reads; the files the Keras example drops as corrupt (no JFIF marker, empty, Thumbs.db) are never extracted,
and are listed in `<cache>/cats_vs_dogs/filtered.txt` instead. Standard library only (plus train.errors for
its error type), so it runs without TensorFlow.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from contracts.atomic import write_json, write_text
from train.errors import DataError

# tensorflow/datasets cats_vs_dogs._URL: Microsoft moved the archive from kagglecatsanddogs_3367a.zip
# (now 404) to this one in 2022.
ARCHIVE_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
ARCHIVE_SHA256 = "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"
ARCHIVE_BYTES = 824_887_076  # used for progress when the server sends no Content-Length, and the free-space check
URL_ENV = "EDGE_TOOLKIT_CATS_VS_DOGS_URL"
SHA256_ENV = "EDGE_TOOLKIT_CATS_VS_DOGS_SHA256"

DEFAULT_CACHE = "~/.cache/edge-toolkit"
# The archive holds files that are not the JPEGs they claim to be (other formats, truncated, empty), and
# both references drop them by looking for b"JFIF" near the start. TFDS's peek(10) on a zip member sees
# 512 bytes and drops 1,738 files; the Keras example's peek(10) on a plain file sees its first buffer
# (usually 4 KiB) and reports 1,590 removed, Thumbs.db included. We take the Keras window: the wider one
# keeps more valid Exif JPEGs, and scan_folder still decodes every file it keeps.
JFIF_WINDOW = 4096
TIMEOUT_S = 30  # per socket operation, not for the whole download: a stalled connection fails, a slow one doesn't
PROGRESS_EVERY_S = 5.0
CHUNK = 1 << 20
MARKER = ".extracted.json"  # written last: its presence means PetImages is complete
FALLBACK = "download the archive yourself and pass --data path/to/PetImages, or use --data digits (bundled, offline)"
# errno values that mean our own disk failed, not the network (both arrive as OSError)
LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


class DownloadError(DataError):
    """The archive could not be fetched or failed its checksum; the message says what to pass instead."""


def _report(done: int, total: int | None, started: float) -> None:
    mb, rate = done / 1e6, done / 1e6 / max(time.monotonic() - started, 1e-6)
    if total:
        print(f"  {100 * done / total:5.1f}%  {mb:,.0f} / {total / 1e6:,.0f} MB  ({rate:.1f} MB/s)", flush=True)
    else:
        print(f"  {mb:,.0f} MB  ({rate:.1f} MB/s)", flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str) -> Path:
    """Streams `url` to `dest` through `dest.partial`, renaming it only once its size and sha256 check out.

    Args:
        url: what to fetch (http, https or file).
        dest: the final file; it exists afterwards only if it is complete and verified.
        sha256: the expected hex digest (case-insensitive).

    Returns:
        dest.

    Raises:
        DownloadError: the network failed, the transfer was cut short, or the digest differs. The partial
            file is deleted in every case (and on KeyboardInterrupt), so nothing half-written looks done.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    h, done = hashlib.sha256(), 0
    try:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(partial, "wb") as f:
                length = r.headers.get("Content-Length")
                total = int(length) if length else (ARCHIVE_BYTES if url == ARCHIVE_URL else None)
                print(f"downloading {url}\n  to {dest}", flush=True)
                started = last = time.monotonic()
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if time.monotonic() - last >= PROGRESS_EVERY_S:
                        last = time.monotonic()
                        _report(done, total, started)
                _report(done, total, started)
        except urllib.error.HTTPError as e:
            # The server answered, so the machine is online: the address is what's wrong.
            raise DownloadError(
                f"could not download cats_vs_dogs from {url} (HTTP {e.code} {e.reason}): the archive may have moved; "
                f"set {URL_ENV} and {SHA256_ENV} to a mirror, or {FALLBACK}"
            ) from None
        except (OSError, http.client.HTTPException) as e:  # URLError, socket errors, timeouts, a dropped connection
            if isinstance(e, OSError) and not isinstance(e, urllib.error.URLError) and e.errno in LOCAL_ERRNOS:
                raise DownloadError(
                    f"could not write {partial} ({e.strerror}): free some space, or pass --cache-dir"
                ) from None
            reason = " ".join(str(getattr(e, "reason", None) or e).split()) or type(e).__name__
            raise DownloadError(
                f"could not download cats_vs_dogs from {url} ({reason}): this machine may be offline; {FALLBACK}"
            ) from None
        if length and done != int(length):
            raise DownloadError(
                f"download of {dest.name} from {url} stopped at {done:,} of {total:,} bytes: run again to retry, "
                f"or {FALLBACK}"
            )
        actual = h.hexdigest()
        if actual != sha256.lower():
            raise DownloadError(
                f"{dest.name} from {url} has sha256 {actual}, expected {sha256.lower()}: the download is corrupt "
                f"or the file changed upstream, so it was deleted; run again, or if you trust the new file set "
                f"{SHA256_ENV}={actual}"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _filter_reason(info: zipfile.ZipInfo, head: bytes | None) -> str | None:
    """Why an archive member is not extracted, or None to keep it."""
    name = PurePosixPath(info.filename).name
    if name.lower() == "thumbs.db" or not name.lower().endswith((".jpg", ".jpeg")):
        return "not an image"
    if info.file_size == 0:
        return "empty file"
    if head is not None and b"JFIF" not in head:
        return f"no JFIF marker in the first {JFIF_WINDOW} bytes (corrupt or not a JPEG)"
    return None


def extract_pet_images(archive: Path, out_dir: Path) -> tuple[int, list[tuple[str, str]]]:
    """Extracts PetImages/<class>/ from the archive into out_dir/PetImages, leaving out corrupt files.

    Members outside PetImages/<class>/ (the licence PDF, the readme) and any path that would escape
    out_dir are ignored. Filtering happens here, by not extracting, so scan_folder never sees those files.

    Returns:
        (images extracted, [(member name, reason) of filtered files]).
    """
    root = out_dir / "PetImages"
    kept, filtered = 0, []
    last = time.monotonic()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or len(parts) != 3 or parts[0] != "PetImages" or ".." in parts:
                continue
            reason = _filter_reason(info, None)
            if reason:
                filtered.append((info.filename, reason))
                continue
            with zf.open(info) as src:
                head = src.read(JFIF_WINDOW)
                reason = _filter_reason(info, head)
                if reason:
                    filtered.append((info.filename, reason))
                    continue
                target = root / parts[1] / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as dst:
                    dst.write(head)
                    shutil.copyfileobj(src, dst, CHUNK)
            kept += 1
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                print(f"  extracted {kept:,} images", flush=True)
    return kept, filtered


def prepare_cats_vs_dogs(cache_dir: str | None = None) -> Path:
    """Downloads (once), verifies and extracts the cats vs dogs archive; returns its PetImages folder.

    Args:
        cache_dir: where the archive and the extracted images live; None = ~/.cache/edge-toolkit.
            An archive already placed there under its own name is verified and used, not downloaded.

    Returns:
        `<cache>/cats_vs_dogs/PetImages`, with one sub-folder per class.

    Raises:
        DownloadError: offline, a failed transfer, or a checksum mismatch; one line naming the fix.
    """
    url = os.environ.get(URL_ENV) or ARCHIVE_URL
    sha256 = (os.environ.get(SHA256_ENV) or ARCHIVE_SHA256).lower()
    cache = Path(cache_dir or DEFAULT_CACHE).expanduser()
    out_dir = cache / "cats_vs_dogs"
    images, marker = out_dir / "PetImages", out_dir / MARKER
    if marker.is_file() and images.is_dir():
        try:
            done = json.loads(marker.read_text()).get("sha256") == sha256
        except (OSError, ValueError):
            done = False  # an unreadable marker means "not finished", never a crash
        if done:
            return images

    archive = cache / (url.rstrip("/").rsplit("/", 1)[-1] or "cats_vs_dogs.zip")
    have = archive.is_file() and _sha256(archive) == sha256
    if archive.is_file() and not have:  # replaced only once a verified download is complete
        print(f"{archive} does not match the expected sha256 {sha256}: downloading it again", flush=True)
    if not have:
        cache.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache).free
        if url == ARCHIVE_URL and free < 2.2 * ARCHIVE_BYTES:  # the archive plus its extracted images
            raise DownloadError(
                f"{cache} has {free / 1e9:.1f} GB free; cats_vs_dogs needs about {2.2 * ARCHIVE_BYTES / 1e9:.1f} GB: "
                f"pass --cache-dir on a bigger disk, or use --data digits (bundled, offline)"
            )
        download(url, archive, sha256)

    # A previous extraction that never wrote its marker was interrupted: start it again from scratch.
    marker.unlink(missing_ok=True)
    shutil.rmtree(images, ignore_errors=True)
    print(f"extracting {archive.name} to {images}", flush=True)
    kept, filtered = extract_pet_images(archive, out_dir)
    if kept == 0:
        raise DownloadError(f"{archive} has no PetImages/<class>/*.jpg images: delete it and run again")
    write_text(out_dir / "filtered.txt", "".join(f"{name}\t{reason}\n" for name, reason in filtered))
    print(
        f"extracted {kept:,} images; filtered {len(filtered):,} corrupt or non-image files "
        f"(listed in {out_dir / 'filtered.txt'})",
        flush=True,
    )
    write_json(marker, {"sha256": sha256, "url": url, "images": kept, "filtered": len(filtered)})
    return images


if __name__ == "__main__":
    try:
        print(prepare_cats_vs_dogs(sys.argv[1] if len(sys.argv) > 1 else None))
    except DownloadError as e:
        sys.exit(f"error: {e}")
