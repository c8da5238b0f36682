"""Robustness: each artifact's top-1 on the test split under the camera corruptions of benchmarks.device.corruptions,
severity by severity, and what the results rows and report take from it.

    rows, summary = measure_robustness({"tflite_int8": predict, ...}, x, y, ("gaussian_blur",), (1, 3, 5), quant)
    write_robustness(out_dir, rows, meta)             # robustness.csv and robustness.json, each atomically
    row.update(robust_columns(rows, "tflite_int8"))   # robust_<corruption>, robust_mean, robust_worst, ...

python -m benchmarks runs this after the accuracy pass (--corruptions, --severities, --robustness-images). Each
corrupted set (one corruption at one severity) is made once, seeded per image (corrupt_batch, so a set is the same
on every run and every machine), and goes through every artifact before the next set is made: one set in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.compare import float_counterpart
from benchmarks.device.corruptions import CORRUPTIONS, MIDDLE, corrupt_batch
from benchmarks.device.robustness import SEED, parse_corruptions, parse_severities  # noqa: F401 (the CLI's too)
from contracts.atomic import write_json, write_text
from contracts.console import first_line, log

CLEAN = "none"  # the `corruption` of a row measured on the clean images (severity 0)
ROW_KEYS = ("format", "corruption", "severity", "top1", "n", "drop")  # robustness.csv, in this order
# The columns a results row gains (benchmarks.device.rows.COLUMNS documents them); sweep rows carry them too
ROBUST_COLUMNS = ("robust_clean", "robust_n", *(f"robust_{c}" for c in CORRUPTIONS), "robust_mean", "robust_worst")
NOISE_Z = 2.0  # differences within 2 standard errors (about 95%) of the paired per-image difference are noise


def measure_robustness(
    predictors: dict[str, Callable[[np.ndarray], np.ndarray]],
    x: np.ndarray,
    y: np.ndarray,
    corruptions: Sequence[str],
    severities: Sequence[int],
    quantization: dict[str, str],
    seed: int = SEED,
) -> tuple[list[dict], dict]:
    """Top-1 of every artifact on the clean images and on every corrupted set.

    Args:
        predictors: {format: function of N x H x W x 3 uint8 RGB images -> N predicted class indices}.
        x: the test images (uint8 RGB), y: their labels.
        corruptions, severities: what to measure (names of CORRUPTIONS; 1-5).
        quantization: {format: its quantization (none, fp16, dynamic, int8)}, for the summary's int8 vs float.
        seed: the corruption seed (corrupt_batch).

    Returns:
        (rows, summary): a row per format x (clean, and each corruption x severity): ROW_KEYS, drop in points
        below the same format's clean top-1; summary() of the per-image results.
    """
    rows, correct, predictors = [], {}, dict(predictors)

    def run(name: str, severity: int, images: np.ndarray) -> None:
        for fmt, predict in list(predictors.items()):
            try:
                ok = np.asarray(predict(images)) == y
            except Exception as e:  # e.g. a runtime error on some input: that artifact is left out, the rest go on
                log(f"robustness: {fmt} left out ({first_line(e)})")
                del predictors[fmt]
                continue
            correct[fmt, name, severity] = ok
            top1 = float(ok.mean())
            clean = correct[fmt, CLEAN, 0].mean() if name != CLEAN else top1
            rows.append({"format": fmt, "corruption": name, "severity": severity, "top1": round(top1, 4),
                         "n": int(len(y)), "drop": round((clean - top1) * 100, 2)})  # fmt: skip

    run(CLEAN, 0, x)
    for name in corruptions:
        for sev in severities:
            run(name, sev, corrupt_batch(x, name, sev, seed))
        worst = {
            fmt: min(r["top1"] for r in rows if r["format"] == fmt and r["corruption"] == name) for fmt in predictors
        }
        figures = ", ".join(f"{fmt} {v:.1%}" for fmt, v in worst.items())
        log(f"robustness: {name} at severities {','.join(map(str, severities))} on {len(y)} images; "
            f"worst top-1 {figures}")  # fmt: skip
    return rows, summary(correct, list(predictors), corruptions, quantization)


def _reference(formats: list[str], quantization: dict[str, str]) -> str | None:
    """The float reference: tflite_fp32 where measured, else the first float32 artifact."""
    floats = [f for f in formats if quantization.get(f) == "none"]
    return "tflite_fp32" if "tflite_fp32" in floats else (floats[0] if floats else None)


def _drop(correct: dict, fmt: str, name: str) -> float:
    return float(correct[fmt, CLEAN, 0].mean() - correct[fmt, name, MIDDLE].mean()) * 100


def _losses(correct: dict, fmt: str, name: str) -> np.ndarray:
    """Per image: 1 where the clean image was right and its corrupted copy wrong, -1 the other way round, else 0."""
    return correct[fmt, CLEAN, 0].astype(int) - correct[fmt, name, MIDDLE].astype(int)


def summary(correct: dict, formats: list[str], corruptions: Sequence[str], quantization: dict[str, str]) -> dict:
    """What the report's headline says, at severity MIDDLE: the corruption that costs the float reference most, and
    each int8 artifact's extra loss under it against its float counterpart (the reference where that is missing),
    with the noise of that difference: NOISE_Z standard errors of the per-image difference of the two losses (the
    same images go through both, so the comparison is paired). Empty when MIDDLE or the reference was not measured.
    """
    ref = _reference(formats, quantization)
    measured = [c for c in corruptions if ref is not None and (ref, c, MIDDLE) in correct]
    if not measured:
        return {}
    worst = max(measured, key=lambda c: _drop(correct, ref, c))
    n = len(correct[ref, CLEAN, 0])
    out = {"severity": MIDDLE, "n": n, "reference": ref, "worst": worst, "reference_drop": round(_drop(correct, ref,
           worst), 2), "int8": []}  # fmt: skip
    for fmt in (f for f in formats if quantization.get(f) == "int8"):
        counterpart = float_counterpart(fmt)
        base = counterpart.name if counterpart and counterpart.name in formats else ref
        d = _losses(correct, fmt, worst) - _losses(correct, base, worst)  # per image: -2..2
        se = float(d.std(ddof=1) / np.sqrt(n)) * 100 if n > 1 else float("inf")
        excess = float(d.mean()) * 100
        out["int8"].append({"format": fmt, "float_format": base, "drop": round(_drop(correct, fmt, worst), 2),
                            "float_drop": round(_drop(correct, base, worst), 2), "excess_points": round(excess, 2),
                            "noise_points": round(NOISE_Z * se, 2),
                            "clear": bool(abs(excess) > NOISE_Z * se)})  # fmt: skip
    return out


def robust_columns(rows: list[dict], fmt: str) -> dict:
    """The robustness figures a results row of `fmt` carries: robust_clean (top-1 on the same images uncorrupted),
    robust_n, robust_<corruption> (top-1 at severity MIDDLE; None where not measured), robust_mean and robust_worst
    (mean and min of those measured). Every key is present, None without a measurement."""
    mine = {(r["corruption"], r["severity"]): r for r in rows if r["format"] == fmt}
    clean = mine.get((CLEAN, 0))
    out = {"robust_clean": clean["top1"] if clean else None, "robust_n": clean["n"] if clean else None}
    for c in CORRUPTIONS:
        r = mine.get((c, MIDDLE))
        out[f"robust_{c}"] = r["top1"] if r else None
    values = [v for k, v in out.items() if k not in ("robust_clean", "robust_n") and v is not None]
    out["robust_mean"] = round(float(np.mean(values)), 4) if values else None
    out["robust_worst"] = min(values) if values else None
    return out


def write_robustness(out_dir: str | Path, rows: list[dict], meta: dict) -> None:
    """robustness.csv (ROW_KEYS) and robustness.json ({"meta", "rows"}) in out_dir, each atomically."""
    out = Path(out_dir)
    lines = [",".join(ROW_KEYS)] + [",".join(str(r[k]) for k in ROW_KEYS) for r in rows]
    write_text(out / "robustness.csv", "\n".join(lines) + "\n")
    write_json(out / "robustness.json", {"meta": meta, "rows": rows})
