"""Datasets as lists of labelled images: folders, the bundled digits, and their train/val/test splits.

No TensorFlow here (train/pipeline.py turns these into tf.data), so benchmarks and tests can load the
exact test split that training used with the light dependencies.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.atomic import write_json
from contracts.console import first_line
from contracts.preprocess import IMAGE_SUFFIXES, resize_rgb
from train.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: either image files (paths) or in-memory images (digits), with integer labels."""

    labels: np.ndarray  # int64 class indices
    paths: list[str] | None = None
    images: np.ndarray | None = None  # N x S x S x 3 uint8 RGB, already at the model's size

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    class_names: list[str]
    splits: dict[str, Split]
    source: str  # what it was read from, for messages and metrics
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files


def decode_image(path: str | Path) -> np.ndarray:
    """Reads any supported image file as HxWx3 uint8 RGB, by its content (not its extension).

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB; EXIF rotation is applied.

    Raises:
        ValueError: the file is not a readable image (corrupt, truncated, empty, text).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency and EXIF warnings are not errors
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    a = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
                    gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
                    return np.repeat(gray[..., None], 3, axis=2)
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    # A corrupt header can declare billions of pixels: Pillow refuses it with DecompressionBombError, which
    # is not an OSError, and it is a bad file like any other.
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        reason = "empty file" if Path(path).stat().st_size == 0 else first_line(e)
        raise ValueError(f"{path} is not a readable image ({reason})") from None


def load_resized(path: str | Path, size: int) -> np.ndarray:
    return resize_rgb(decode_image(path), size)


def _class_folders(root: Path) -> list[Path]:
    """The class sub-folders of root: every folder but hidden ones (".git") and those named "_..." (edge's
    "_unsorted", where frames wait for a person to sort them), which are not classes."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _scan_class(folder: Path, skipped: list, progress: list) -> list[str]:
    good = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue  # non-image files (Thumbs.db, README, .DS_Store) are not data
        try:
            decode_image(p)
            good.append(str(p))
        except ValueError as e:
            # The reason is what follows decode_image's "<path> is not a readable image (" prefix; splitting at
            # the first "(" would cut inside a path like "Photos (2)/x.jpg".
            msg, prefix = str(e), f"{p} is not a readable image ("
            skipped.append((str(p), msg[len(prefix) : -1] if msg.startswith(prefix) else msg))
            print(f"warning: {e} (skipped)", flush=True)
        progress[0] += 1
        if progress[0] % 1000 == 0:
            print(f"  checked {progress[0]} images", flush=True)
    return good


def _scan(root: Path, class_names: list[str] | None, skipped: list, progress: list) -> tuple[list[str], dict]:
    folders = _class_folders(root)
    names = [f.name for f in folders]
    ignored = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("_"))
    if ignored:  # said once, so images left in _unsorted/ are not a mystery
        print(f"note: {', '.join(ignored)} in {root} not used: folders named _... are not classes", flush=True)
    if class_names is not None and names != class_names:
        raise DataError(
            f"{root} has classes {names}, but {root.parent / 'train'} has {class_names}: "
            "give every split the same class folders"
        )
    files = {}
    for f in folders:
        files[f.name] = _scan_class(f, skipped, progress)
        if not files[f.name]:
            raise DataError(f"{f} has no readable images: add images to it or remove the folder")
    return names, files


def scan_folder(root: str | Path, val_split: float = 0.15, test_split: float = 0.15, seed: int = 1337) -> Dataset:
    """Reads a folder of class sub-folders, or one with train/, val/ and test/ sub-folders.

    Sub-folders whose names start with "." or "_" (edge's "_unsorted") are not classes, and files that are not
    images (the .json beside a kept frame, README.txt) are not data: both are skipped.

    Every image is decoded once here, so a corrupt file is skipped (and reported) before training
    starts, never mid-epoch.

    Raises:
        DataError: the folder is missing, has fewer than 2 classes, an empty class, or a split that
            lacks some class; the message names the folder and the fix.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder: pass --data digits, --data cats_vs_dogs, "
            "or a folder with one sub-folder per class"
        )
    skipped: list[tuple[str, str]] = []
    progress = [0]
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and len(present) < len(SPLITS):
        # Otherwise train/ and val/ would silently become two classes named "train" and "val".
        missing = [s for s in SPLITS if s not in present]
        raise DataError(
            f"{root} has {'/, '.join(present)}/ but no {'/, '.join(missing)}/: provide all of train/, val/ and test/, "
            "or put the class folders directly in it to have it split for you"
        )
    pre_split = bool(present)
    if pre_split:
        names, per_split = None, {}
        for s in SPLITS:
            names, per_split[s] = _scan(root / s, names, skipped, progress)
    else:
        names, files = _scan(root, None, skipped, progress)
    if len(names) < 2:
        raise DataError(
            f"{root} has {len(names)} class folder(s) {names}: a classifier needs at least 2, one per class"
        )
    if not pre_split:
        per_split = _stratified_split(root, names, files, val_split, test_split, seed)
    splits = {}
    for s, files in per_split.items():
        paths = [p for c in names for p in files[c]]
        labels = np.array([i for i, c in enumerate(names) for _ in files[c]], dtype=np.int64)
        splits[s] = Split(labels=labels, paths=paths)
    return Dataset(class_names=names, splits=splits, source=str(root), skipped=skipped)


def _stratified_split(root, names, files, val_split, test_split, seed) -> dict:
    """Per-class seeded split (sklearn), checking that every class reaches every split."""
    from sklearn.model_selection import train_test_split

    out = {s: {} for s in SPLITS}
    for c in names:
        f = files[c]
        n_val, n_test = round(len(f) * val_split), round(len(f) * test_split)
        if len(f) < 3 or n_val < 1 or n_test < 1 or len(f) - n_val - n_test < 1:
            raise DataError(
                f"{root / c} has {len(f)} readable image(s): too few to put at least one in each of train/val/test "
                f"at {val_split:.0%}/{test_split:.0%}; add images, or provide train/, val/ and test/ folders yourself"
            )
        rest, out["test"][c] = train_test_split(f, test_size=n_test, random_state=seed)
        out["train"][c], out["val"][c] = train_test_split(rest, test_size=n_val, random_state=seed)
    return out


def load_digits(image_size: int, val_split: float = 0.15, test_split: float = 0.15, seed: int = 1337) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans) as RGB images at image_size."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    # 0-16 ink levels -> white digits on black, the way the scans look, then up-sampled to the model's size.
    small = np.clip(d.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    idx = np.arange(len(small))
    rest, test = train_test_split(idx, test_size=test_split, stratify=d.target, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_split / (1 - test_split), stratify=d.target[rest], random_state=seed
    )

    def make(ix):
        imgs = np.stack([resize_rgb(np.repeat(small[i][..., None], 3, axis=2), image_size) for i in ix])
        return Split(labels=d.target[ix].astype(np.int64), images=imgs)

    return Dataset(
        class_names=[str(i) for i in range(10)],
        splits={"train": make(train), "val": make(val), "test": make(test)},
        source="scikit-learn digits",
    )


def load_dataset(data: str, image_size: int, val_split=0.15, test_split=0.15, seed=1337, cache_dir="") -> Dataset:
    """--data resolved: "digits", "cats_vs_dogs" (downloaded, cached) or a folder."""
    if data == "digits":
        return load_digits(image_size, val_split, test_split, seed)
    if data == "cats_vs_dogs":
        from train.download import prepare_cats_vs_dogs

        return scan_folder(prepare_cats_vs_dogs(cache_dir or None), val_split, test_split, seed)
    return scan_folder(data, val_split, test_split, seed)


def split_images(split: Split, image_size: int, indices=None) -> np.ndarray:
    """A split's images as N x S x S x 3 uint8 RGB, decoding only the files asked for.

    Args:
        indices: which images, in this order (e.g. a seeded permutation's first 200); None = all of them.
    """
    if split.images is not None:
        return split.images if indices is None else split.images[np.asarray(indices, dtype=np.int64)]
    idx = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.empty((len(idx), image_size, image_size, 3), np.uint8)  # filled in place: no list of copies
    for k, i in enumerate(idx):
        out[k] = load_resized(split.paths[i], image_size)
    return out


class SplitImages:
    """A split's images decoded one at a time on indexing (images[i]), for code that looks at a few of many."""

    def __init__(self, split: Split, image_size: int):
        self.split, self.image_size = split, image_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> np.ndarray:
        return split_images(self.split, self.image_size, [i])[0]


def save_splits(ds: Dataset, path: str | Path) -> None:
    """Records which images went where, so export and benchmarks evaluate on exactly the test split."""
    doc = {"source": ds.source, "class_names": ds.class_names, "splits": {}}
    for name, s in ds.splits.items():
        doc["splits"][name] = {"labels": s.labels.tolist(), "paths": s.paths}
    write_json(path, doc)


def split_length(run_dir: str | Path, name: str = "train") -> int:
    """How many images a run's split has (splits.json), without decoding any (train.data.DataError if unreadable)."""
    return len(_read_split(run_dir, name)[1])


def _read_split(run_dir: str | Path, name: str) -> tuple[dict, np.ndarray, list[str] | None]:
    path = Path(run_dir) / "splits.json"
    try:
        doc = json.loads(path.read_text())
        entry = doc["splits"][name]
        labels = np.array(entry["labels"], dtype=np.int64)
        paths = entry["paths"]
        if labels.ndim != 1 or not (paths is None or (isinstance(paths, list) and len(paths) == len(labels))):
            raise ValueError("labels and paths do not match")
    except FileNotFoundError:
        raise DataError(f"{path} not found: the run did not finish training; re-run `python -m train`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {e}): restore the file train wrote, or train the "
                        "run again with --force") from None  # fmt: skip
    return doc, labels, paths


def load_split(run_dir: str | Path, name: str = "test", indices=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A run's split as (uint8 images at the run's size, labels, class names), without TensorFlow.

    Args:
        indices: only these images, in this order (export's calibration sample); None = the whole split. Only
            the files asked for are decoded, so a sample of a large split costs what the sample costs.
    """
    from train.settings import load_settings

    s = load_settings(run_dir)
    doc, labels, paths = _read_split(run_dir, name)
    if paths is None:  # in-memory dataset (digits): rebuild it deterministically from the settings
        ds = load_digits(s.image_size, s.val_split, s.test_split, s.seed)
        split = ds.splits[name]
        if not np.array_equal(split.labels, labels):
            raise DataError(f"{run_dir}/splits.json does not match the digits split rebuilt from settings.json")
    else:
        split = Split(labels=labels, paths=paths)
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    return split_images(split, s.image_size, idx), labels[idx], doc.get("class_names")
