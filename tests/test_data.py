"""train/data.py: decoding by content, skipping bad files, folder layouts, splits, the bundled digits."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from train.data import DataError, decode_image, load_digits, scan_folder


def _rgb(seed: int, h: int = 6, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(img: Image.Image | np.ndarray, fmt: str, **kw) -> bytes:
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _fill(folder: Path, n: int, ext: str = ".png", start: int = 0) -> list[str]:
    """n distinct small images in folder; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"{i:03d}{ext}"
        p.write_bytes(_encode(_rgb(i), "PNG" if ext.lower() == ".png" else "JPEG"))
        paths.append(str(p))
    return paths


def _huge_png() -> bytes:
    """A valid 8x8 PNG whose header claims 40000 x 40000 pixels (what a flipped header byte can do)."""
    data = bytearray(_encode(_rgb(0), "PNG"))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", 40_000, 40_000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_unreadable_files_are_skipped_not_raised(tmp_path, capsys):
    _fill(tmp_path / "cats (2)", 5)  # a parenthesis in the path must not garble the recorded reason
    _fill(tmp_path / "dogs", 5)
    jpeg = _encode(_rgb(1, 64, 64), "JPEG", quality=95)
    bad = {
        tmp_path / "cats (2)" / "corrupt.jpg": np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes(),
        tmp_path / "cats (2)" / "truncated.jpg": jpeg[: len(jpeg) // 2],
        tmp_path / "dogs" / "empty.jpg": b"",
        tmp_path / "dogs" / "notes.png": b"not an image, just text\n",
        tmp_path / "dogs" / "bomb.png": _huge_png(),
    }
    for p, data in bad.items():
        p.write_bytes(data)

    ds = scan_folder(tmp_path)
    out = capsys.readouterr().out

    reasons = dict(ds.skipped)
    assert set(reasons) == {str(p) for p in bad}
    assert reasons[str(tmp_path / "dogs" / "empty.jpg")] == "empty file"
    assert "truncated" in reasons[str(tmp_path / "cats (2)" / "truncated.jpg")]
    assert "exceeds limit" in reasons[str(tmp_path / "dogs" / "bomb.png")]
    for r in reasons.values():
        assert r and "is not a readable image" not in r
    assert out.count("(skipped)") == len(bad)
    used = [p for s in ds.splits.values() for p in s.paths]
    assert len(used) == 10 and not set(used) & set(reasons)
    for p in bad:
        with pytest.raises(ValueError, match="is not a readable image"):
            decode_image(p)


def test_png_named_jpg_is_decoded_by_content(tmp_path):
    img = _rgb(3)
    p = tmp_path / "really_a_png.jpg"
    p.write_bytes(_encode(img, "PNG"))
    np.testing.assert_array_equal(decode_image(p), img)  # lossless: exact pixels, so it was read as PNG


def _palette(transparent: bool) -> Image.Image:
    im = Image.new("P", (4, 3), 0)
    im.putpalette([0, 0, 0, 200, 30, 60] + [0] * 762)
    im.putpixel((1, 1), 1)
    if transparent:
        im.info["transparency"] = 0
    return im


def _16bit_rgb_png() -> bytes:
    bgr = np.zeros((3, 4, 3), np.uint16)
    bgr[..., 2], bgr[..., 1] = 65535, 32896  # R full, G half (32896 = 128 * 257), B zero
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "name, data, pixel, expected",
    [
        ("gray.png", lambda: _encode(Image.new("L", (4, 3), 77), "PNG"), (0, 0), (77, 77, 77)),
        ("rgba.png", lambda: _encode(Image.new("RGBA", (4, 3), (10, 20, 30, 128)), "PNG"), (0, 0), (10, 20, 30)),
        ("pal.png", lambda: _encode(_palette(False), "PNG"), (1, 1), (200, 30, 60)),
        ("pal_t.png", lambda: _encode(_palette(True), "PNG"), (1, 1), (200, 30, 60)),
        ("pal_t.gif", lambda: _encode(_palette(True), "GIF", transparency=0), (1, 1), (200, 30, 60)),
        ("g16.png", lambda: _encode(Image.fromarray(np.full((3, 4), 65535, np.uint16)), "PNG"), (0, 0), (255,) * 3),
        ("g16_mid.png", lambda: _encode(Image.fromarray(np.full((3, 4), 32896, np.uint16)), "PNG"), (0, 0), (128,) * 3),
        ("g16_dark.png", lambda: _encode(Image.fromarray(np.full((3, 4), 200, np.uint16)), "PNG"), (0, 0), (1,) * 3),
        ("rgb16.png", _16bit_rgb_png, (0, 0), (255, 128, 0)),
        ("bilevel.png", lambda: _encode(Image.new("1", (4, 3), 1), "PNG"), (0, 0), (255, 255, 255)),
        ("gray_alpha.png", lambda: _encode(Image.new("LA", (4, 3), (90, 0)), "PNG"), (0, 0), (90, 90, 90)),
    ],
)
def test_every_mode_becomes_rgb_uint8(tmp_path, name, data, pixel, expected):
    p = tmp_path / name
    p.write_bytes(data())
    img = decode_image(p)
    assert img.shape == (3, 4, 3) and img.dtype == np.uint8
    assert tuple(int(v) for v in img[pixel]) == expected


def test_exif_rotation_is_applied(tmp_path):
    im = Image.fromarray(_rgb(5, 4, 8))  # 8 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p = tmp_path / "rotated.jpg"
    im.save(p, "JPEG", exif=exif.tobytes())
    assert decode_image(p).shape == (8, 4, 3)


def test_extensions_are_case_insensitive_and_non_images_ignored(tmp_path, capsys):
    _fill(tmp_path / "a", 4, ".JPG")
    _fill(tmp_path / "a", 3, ".PnG", start=10)
    _fill(tmp_path / "b", 7, ".jpeg")
    for folder in ("a", "b"):
        (tmp_path / folder / "README.txt").write_text("about these images")
        (tmp_path / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (tmp_path / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class
    ds = scan_folder(tmp_path)
    assert ds.class_names == ["a", "b"]
    assert sum(len(s) for s in ds.splits.values()) == 14
    assert ds.skipped == [] and "warning" not in capsys.readouterr().out


def test_empty_class_folder_is_named(tmp_path):
    _fill(tmp_path / "a", 5)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "README.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"b has no readable images") as e:
        scan_folder(tmp_path)
    assert str(tmp_path / "b") in str(e.value)


def test_fewer_than_two_classes(tmp_path):
    _fill(tmp_path / "only", 10)
    with pytest.raises(DataError, match=r"1 class folder\(s\) \['only'\].*at least 2"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        scan_folder(tmp_path / "missing")


def test_class_too_small_for_every_split_is_named(tmp_path):
    _fill(tmp_path / "big", 20)
    _fill(tmp_path / "small", 3)  # 15% of 3 rounds to 0: no validation image
    with pytest.raises(DataError, match="3 readable image") as e:
        scan_folder(tmp_path)
    assert str(tmp_path / "small") in str(e.value)
    # Large fractions must leave a training image too: 40% + 40% of 4 is 2 + 2, nothing left to train on.
    _fill(tmp_path / "small", 1, start=3)
    with pytest.raises(DataError, match="4 readable image"):
        scan_folder(tmp_path, val_split=0.4, test_split=0.4)


def test_given_train_val_test_folders_are_used_as_given(tmp_path):
    given = {}
    for i, s in enumerate(("train", "val", "test")):
        given[s] = _fill(tmp_path / s / "cat", 3 + i, start=100 * i) + _fill(tmp_path / s / "dog", 1, start=50 + i)
    ds = scan_folder(tmp_path, seed=0)
    assert ds.class_names == ["cat", "dog"]
    for s, paths in given.items():
        assert ds.splits[s].paths == paths
        assert ds.splits[s].labels.tolist() == [0] * (len(paths) - 1) + [1]


def test_given_splits_with_different_classes(tmp_path):
    for s in ("train", "val", "test"):
        _fill(tmp_path / s / "cat", 2)
        _fill(tmp_path / s / "dog", 2)
    _fill(tmp_path / "val" / "bird", 2)
    with pytest.raises(DataError, match=r"val has classes \['bird', 'cat', 'dog'\].*train has \['cat', 'dog'\]"):
        scan_folder(tmp_path)


def test_partial_split_folders_are_not_taken_for_classes(tmp_path):
    for s in ("train", "val"):
        _fill(tmp_path / s / "cat", 5)
        _fill(tmp_path / s / "dog", 5)
    with pytest.raises(DataError, match=r"has train/, val/ but no test/"):
        scan_folder(tmp_path)


def test_stratified_split_is_seeded_and_complete(tmp_path):
    files = {c: _fill(tmp_path / c, n) for c, n in (("a", 20), ("b", 40))}
    ds = scan_folder(tmp_path, seed=1)
    again = scan_folder(tmp_path, seed=1)
    other = scan_folder(tmp_path, seed=2)

    for s in ds.splits:
        assert ds.splits[s].paths == again.splits[s].paths
    everything = [p for s in ds.splits.values() for p in s.paths]
    assert sorted(everything) == sorted(files["a"] + files["b"])  # every image exactly once
    counts = {s: np.bincount(ds.splits[s].labels, minlength=2).tolist() for s in ds.splits}
    assert counts == {"train": [14, 28], "val": [3, 6], "test": [3, 6]}  # 70/15/15 within each class
    for s in ds.splits:  # labels follow the folder each path is in
        assert [Path(p).parent.name for p in ds.splits[s].paths] == [ds.class_names[i] for i in ds.splits[s].labels]
    assert ds.splits["test"].paths != other.splits["test"].paths


def test_digits():
    ds = load_digits(32)
    sizes = {s: len(split) for s, split in ds.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    for s, frac in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert abs(sizes[s] / 1797 - frac) < 0.01
    assert ds.class_names == [str(i) for i in range(10)]
    for split in ds.splits.values():
        assert split.images.shape == (len(split), 32, 32, 3) and split.images.dtype == np.uint8
        assert split.paths is None
        assert set(split.labels.tolist()) == set(range(10))
    train = ds.splits["train"].images
    assert train.min() == 0 and train.max() == 255  # full ink range, not the scans' 0-16
    np.testing.assert_array_equal(train[..., 0], train[..., 2])  # gray replicated into RGB


def test_underscore_folders_and_sidecars_are_not_data(tmp_path, capsys):
    """The layout edge's --save-uncertain leaves: _unsorted/ with frames and their .json predictions, README.txt,
    and the frames a person sorted into class folders (with their .json beside them)."""
    _fill(tmp_path / "a", 5, ".jpg")
    _fill(tmp_path / "b", 6, ".jpg")
    _fill(tmp_path / "_unsorted", 4, ".jpg")
    for folder in ("a", "b", "_unsorted"):
        (tmp_path / folder / "000.json").write_text('{"top_k": [{"label": "a", "score": 0.41}]}')
    (tmp_path / "README.txt").write_text("sort the images in _unsorted/ into the class folders")
    ds = scan_folder(tmp_path)
    assert ds.class_names == ["a", "b"]
    paths = [p for s in ds.splits.values() for p in s.paths]
    assert len(paths) == 11 and all(Path(p).suffix == ".jpg" and "_unsorted" not in p for p in paths)
    out = capsys.readouterr().out
    assert "_unsorted" in out and "not classes" in out and "warning" not in out
