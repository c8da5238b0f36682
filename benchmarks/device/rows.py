"""Result rows: one flat dict per artifact x runtime x threads x device, written as CSV and JSON, read back to merge.

A row that could not be measured still exists, with an `error` field saying why (timm's benchmark rows), so a
broken artifact shows up in the table instead of ending the run. Standard library and contracts only, so the device-side
benchmarks.device.latency can write the same rows.

    save_results(out_dir, rows, meta)        # results.csv + results.json, each written atomically
    rows, meta = load_rows("rows.json")      # what --merge reads
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from contracts.atomic import write_json, write_text
from contracts.console import first_line

# The columns, in table order. Latencies are milliseconds inside the runtime (no pre- or postprocessing);
# the loop_* columns are the whole camera loop (edge.app) on a 640x480 video.
COLUMNS = (
    "device",  # the machine that measured the row (benchmarks.device.latency.default_device_name or --device-name)
    "format",  # key in contracts.formats.FORMATS
    "runtime",  # "litert" or "onnxruntime"
    "threads",  # interpreter threads
    "quantization",  # as in the formats table: none, fp16, dynamic, int8
    "size_mb",  # artifact file size, 10^6 bytes
    "top1",  # test top-1 of this artifact (fraction); measured on accuracy_from
    "agreement",  # fraction of test images whose top-1 equals the reference model's
    "reference",  # what agreement is measured against: keras_float or tflite_fp32
    "n_test",  # test images behind top1 and agreement
    "per_class_top1",  # {label: top-1 of that class}; a JSON string in results.csv
    "accuracy_from",  # device whose run measured top1 (merged device rows borrow the host's figures)
    "latency_ms_median",
    "latency_ms_p90",
    "latency_ms_std",
    "latency_ms_mean",
    "latency_ms_min",
    "n_runs",  # timed runs behind the latency figures (warm-up runs excluded)
    "fps",  # 1000 / latency_ms_median: the runtime alone
    "loop_fps",  # frames per second of the camera loop (reader and preparer threads, inference, drawing)
    "loop_ms",  # 1000 / loop_fps
    "loop_inference_ms",  # mean time inside the runtime during the loop
    "loop_overhead_ms",  # loop_ms - loop_inference_ms: waiting for the next prepared frame, drawing, top-k
    "loop_wait_ms",  # mean wait for the next prepared frame (decoding and preprocessing the threads did not hide)
    "loop_capture_ms",  # mean read (decode) time per frame on the reader thread, during the loop
    "loop_preprocess_ms",  # mean preprocessing time per frame on the preparer thread, during the loop
    "capture_ms",  # reading (decoding) one frame of the same video alone, no model
    "preprocess_ms",  # 640x480 BGR frame -> model input tensor, alone (median; no capture thread beside it)
    "draw_ms",  # drawing the overlay on a copy of the frame, alone (median)
    "loop_frames",  # frames behind the loop figures (warm-up frames excluded)
    "loop_top1",  # top-1 over the loop's frames (host: video of test images; device: synthetic, empty)
    # Robustness (benchmarks.robustness; empty with --corruptions none): top-1 on corrupted copies of the same
    # --robustness-images test images, each corruption at severity 3 of 5 (benchmarks.device.corruptions.MIDDLE)
    "robust_clean",  # top-1 on those images uncorrupted (equals top1 when they are the whole test split)
    "robust_n",  # how many images
    "robust_gaussian_blur",
    "robust_gaussian_noise",
    "robust_jpeg",
    "robust_low_light",
    "robust_pixelate",
    "robust_motion_blur",
    "robust_mean",  # mean of the robust_<corruption> columns measured
    "robust_worst",  # the lowest of them
    "sha256",  # first 12 hex digits of the artifact's sha256: which file was measured
    "file",  # artifact file name
    "error",  # why (part of) the row could not be measured; empty when everything worked
)


def new_row(device: str, format_name: str, runtime: str, threads: int | None, **fields) -> dict:
    """A row with every column present (None where not measured)."""
    row = dict.fromkeys(COLUMNS)
    row.update(device=device, format=format_name, runtime=runtime, threads=threads, error="")
    row.update(fields)
    return row


def add_error(row: dict, stage: str, err: BaseException | str) -> None:
    """Appends "stage: message" (the message's first line) to the row's error field."""
    text = first_line(err)
    msg = f"{stage}: {text}" if stage else text
    row["error"] = f"{row['error']}; {msg}" if row.get("error") else msg


def row_key(row: dict) -> tuple:
    return (row.get("device"), row.get("format"), row.get("runtime"), row.get("threads"))


def rows_to_csv(rows: list[dict]) -> str:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *extra], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v, sort_keys=False) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return buf.getvalue()


def save_results(out_dir: str | Path, rows: list[dict], meta: dict, extra: dict | None = None) -> list[Path]:
    """Writes results.csv and results.json ({"meta", "rows", **extra}) into out_dir, each atomically."""
    out = Path(out_dir)
    csv_path = write_text(out / "results.csv", rows_to_csv(rows))
    json_path = write_json(out / "results.json", {"meta": meta, **(extra or {}), "rows": rows})
    return [csv_path, json_path]


def load_rows(path: str | Path) -> tuple[list[dict], dict]:
    """Rows and meta from a file written by benchmarks.device.latency --out, or a results.json, or a JSON list of rows.

    Raises:
        ValueError: the file is missing, not JSON, or holds no rows; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(
            f"{p} not found: write it on the device with `python -m benchmarks.device.latency --out {p.name}`"
        )
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p} is not a JSON rows file ({e}); copy it again from the device") from None
    if not isinstance(doc, (list, dict)):
        raise ValueError(f"{p} holds a JSON {type(doc).__name__}, not benchmark rows; copy it again from the device")
    rows, meta = (doc, {}) if isinstance(doc, list) else (doc.get("rows"), doc.get("meta") or {})
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("format") for r in rows):
        raise ValueError(f"{p} holds no benchmark rows (expected {{'meta': ..., 'rows': [...]}})")
    if not isinstance(meta, dict):
        raise ValueError(f"{p}: meta is a JSON {type(meta).__name__}, not an object; copy it again from the device")
    for i, r in enumerate(rows):
        for k, v in r.items():
            want = _COLUMN_TYPES.get(k, _NUMBER if k in COLUMNS else None)
            if want is not None and v is not None and (not isinstance(v, want) or isinstance(v, bool)):
                kind = "number" if want is _NUMBER else want[0].__name__
                raise ValueError(f"{p}: row {i} ({r.get('format')}) has {k} = {v!r} where a {kind} belongs; "
                                 "copy the file again from the device")  # fmt: skip
    return [{**dict.fromkeys(COLUMNS), **r} for r in rows], meta


_NUMBER = (float, int)
_TEXT = ("device", "format", "runtime", "quantization", "reference", "accuracy_from", "sha256", "file", "error")
_COLUMN_TYPES = {**{k: (str,) for k in _TEXT}, "threads": (int,), "n_test": (int,), "n_runs": (int,),
                 "loop_frames": (int,), "robust_n": (int,), "per_class_top1": (dict,)}  # fmt: skip


def ms(v: float | None) -> str:
    """Milliseconds to read in a table or report: 0.177, 5.234, 41.2 (three decimals under 10 ms), "-" for none."""
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def threads_label(n: int) -> str:
    """1 thread, 4 threads."""
    return f"{n} thread{'s' if n != 1 else ''}"


def _fmt(v, digits: int) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


TABLE_COLUMNS = (  # (header, row key, decimals): ultralytics' benchmark table, plus the camera loop
    ("Format", "format", 0),
    ("Runtime", "runtime", 0),
    ("Threads", "threads", 0),
    ("Status", None, 0),
    ("Size MB", "size_mb", 2),
    ("Top-1", "top1", 4),
    ("Agreement", "agreement", 4),
    ("ms median", "latency_ms_median", 3),
    ("ms p90", "latency_ms_p90", 3),
    ("FPS", "fps", 1),
    ("loop FPS", "loop_fps", 1),
)


def format_table(rows: list[dict], with_device: bool | None = None) -> str:
    """The Markdown results table; a Device column is added when the rows come from more than one device."""
    if with_device is None:
        with_device = len({r.get("device") for r in rows}) > 1
    cols = ([("Device", "device", 0)] if with_device else []) + list(TABLE_COLUMNS)
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for _, key, digits in cols:
            if key is None:
                cells.append(("error: " + r["error"].replace("|", "/")) if r.get("error") else "ok")
            else:
                cells.append(_fmt(r.get(key), digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
