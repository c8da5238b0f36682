"""Camera corruptions on this device's own frames, with nothing but the edge requirements (numpy, OpenCV, LiteRT).

    python -m benchmarks.device.robustness --model model/tflite_int8.tflite --images frames/ --out robust.json
    python -m benchmarks.device.robustness --model model/tflite_int8.tflite --images photos/ --labels labels.csv

Every picture in --images (frames saved from the Pi's camera, say) is classified as it is and under each
corruption x severity of benchmarks.device.corruptions: the same seeded corruptions as the robustness section of
python -m benchmarks, their lengths scaled to the picture's own size. A row per corruption and severity gives the
share of pictures whose top-1 stays what it was on the clean picture (agreement: no labels needed), and with
--labels (a CSV of file,label, label names as the model's) the top-1 against them. One picture is in memory at a
time, so a Pi runs a few hundred 640x480 frames in one go.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from benchmarks.device.corruptions import CORRUPTIONS, MIDDLE, SEVERITIES, corrupt, image_rng
from benchmarks.device.machine import default_device_name
from benchmarks.device.settings import BenchError
from contracts.atomic import write_json
from contracts.console import log, one_line

SEED = 0  # the corruption seed of every robustness run, here and in python -m benchmarks: the same noise and angles
PICTURES = (".jpg", ".jpeg", ".png", ".bmp")


def parse_corruptions(text: str | Sequence[str]) -> tuple[str, ...]:
    """ "all" -> every corruption, "none" or "" -> (), else a comma list of names, in the table's order.

    Raises:
        BenchError: a name that is not a corruption; the message lists the valid ones.
    """
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if items in (["all"], ["none"], []):
        return tuple(CORRUPTIONS) if items == ["all"] else ()
    bad = [t for t in items if t not in CORRUPTIONS]
    if bad:
        raise BenchError(f"--corruptions: {', '.join(bad)} unknown; choose from all, none, {', '.join(CORRUPTIONS)}")
    return tuple(c for c in CORRUPTIONS if c in items)


def parse_severities(text: str | Sequence[int]) -> tuple[int, ...]:
    """ "1,3,5" -> (1, 3, 5), sorted, without repeats.

    Raises:
        BenchError: a value that is not one of 1-5, or none at all.
    """
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if not items or any(t not in {str(s) for s in SEVERITIES} for t in items):
        choices = ",".join(map(str, SEVERITIES))
        raise BenchError(f"--severities {text!r}: pass some of {choices}, e.g. --severities 1,3,5")
    return tuple(sorted({int(t) for t in items}))


def list_pictures(folder: str | Path, limit: int = 0) -> list[Path]:
    """The pictures in `folder` (not its sub-folders; hidden files left out), sorted by name, at most `limit`."""
    root = Path(folder)
    if not root.is_dir():
        raise BenchError(f"--images {root}: no such folder; pass a folder of .jpg/.png pictures")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in PICTURES and not p.name.startswith("."))
    if not found:
        raise BenchError(f"--images {root} holds no {'/'.join(PICTURES)} pictures")
    return found[:limit] if limit else found


def read_labels(path: str | Path, names: list[str], pictures: list[Path]) -> list[int]:
    """The label index of every picture from a file,label CSV.

    Raises:
        BenchError: a missing file, a label the model does not have, or a picture the CSV leaves out.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            table = {r["file"]: r["label"] for r in csv.DictReader(f)}
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"--labels {p}: not a readable file,label CSV ({one_line(e)})") from None
    bad = sorted({v for v in table.values() if v not in names})
    if bad:
        raise BenchError(f"--labels {p}: {', '.join(bad)} not among the model's labels ({', '.join(names)})")
    missing = [x.name for x in pictures if x.name not in table]
    if missing:
        raise BenchError(f"--labels {p} has no row for {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    return [names.index(table[x.name]) for x in pictures]


def measure(classify, pictures: list[Path], corruptions: Sequence[str], severities: Sequence[int],
            labels: list[int] | None = None, seed: int = SEED) -> list[dict]:  # fmt: skip
    """Rows {corruption, severity, n, agreement, top1} (the clean row first: corruption "none", severity 0).

    Args:
        classify: a function of one BGR picture -> its top-1 class index.
        pictures: image files, read one at a time.
        labels: each picture's class index, or None (top1 is then None).
    """
    sets = [("none", 0)] + [(c, s) for c in corruptions for s in severities]
    same, right = {k: 0 for k in sets}, {k: 0 for k in sets}
    for i, path in enumerate(pictures):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BenchError(f"{path} is not a readable picture; remove it from --images")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        clean = classify(bgr)
        for name, sev in sets:
            pred = clean
            if sev:
                bad = corrupt(rgb, name, sev, image_rng(name, sev, i, seed))
                pred = classify(np.ascontiguousarray(bad[..., ::-1]))
            same[name, sev] += pred == clean
            right[name, sev] += labels is not None and pred == labels[i]
        if (i + 1) % 50 == 0:
            log(f"robustness: {i + 1} of {len(pictures)} pictures")
    n = len(pictures)
    return [{"corruption": name, "severity": sev, "n": n, "agreement": round(same[name, sev] / n, 4),
             "top1": None if labels is None else round(right[name, sev] / n, 4)} for name, sev in sets]  # fmt: skip


def format_rows(rows: list[dict]) -> str:
    """A Markdown table: corruption, severity, agreement with the clean picture, top-1."""
    lines = ["| Corruption | Severity | Agreement | Top-1 |", "|---|---|---|---|"]
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{r['top1']:.1%}"
        lines.append(f"| {r['corruption']} | {r['severity']} | {r['agreement']:.1%} | {top1} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device.robustness", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--model", required=True, help="the model file (its manifest.json beside it, as export writes it)")
    a("--images", required=True, help="folder of pictures (.jpg, .png), e.g. frames saved from the camera")
    a("--labels", help="CSV of file,label for those pictures: adds top-1 (default: agreement only)")
    a("--corruptions", default="all", help=f"all, or a comma-separated list of: {', '.join(CORRUPTIONS)}")
    a("--severities", default=",".join(map(str, SEVERITIES)), help="comma-separated, 1-5 (default 1,2,3,4,5)")
    a("--max-images", type=int, default=0, help="use the first N pictures by name (default 0: all)")
    a("--threads", type=int, default=1, help="interpreter threads (default 1)")
    a("--device-name", default="", help="this machine's name in the output (default: from the CPU/board)")
    a("--out", help="write the rows here as JSON (atomically)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Returns 0, or 2 with one line naming the bad flag or file."""
    from contracts.runners.classifier import Classifier

    a = build_parser().parse_args(argv)
    try:
        corruptions, severities = parse_corruptions(a.corruptions), parse_severities(a.severities)
        if a.max_images < 0 or a.threads < 1:
            raise BenchError("--max-images must be 0 or more and --threads 1 or more")
        pictures = list_pictures(a.images, a.max_images)
        try:
            clf = Classifier.from_model(a.model, threads=a.threads)
        except Exception as e:  # EdgeError and the runtimes' own: one line either way
            raise BenchError(f"--model {a.model}: {one_line(e)}") from None
        labels = read_labels(a.labels, clf.labels, pictures) if a.labels else None
        log(f"robustness: {len(pictures)} pictures x {len(corruptions)} corruptions x severities "
            f"{','.join(map(str, severities))} through {Path(a.model).name}")  # fmt: skip
        rows = measure(lambda bgr: int(np.argmax(clf.predict(bgr)[0])), pictures, corruptions, severities, labels)
        clf.backend.close()
    except BenchError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(format_rows(rows), flush=True)
    if a.out:
        meta = {"model": str(a.model), "images": str(a.images), "device": a.device_name or default_device_name(),
                "seed": SEED, "middle": MIDDLE, "source": "benchmarks.device.corruptions"}  # fmt: skip
        write_json(a.out, {"meta": meta, "rows": rows})
        log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
