"""What a sweep's rows decide: the Pareto front, the pick within a latency budget, and the runner-up.

    front = front_rows(rows)               # rows no other row beats on both accuracy and device latency
    best = pick(rows, budget_ms=30)        # most accurate within budget; ties: faster, then smaller; None: none fits
    other = runner_up(rows, best, 30)      # the next trade: the next step up the front, else the next best that fits
    best, other, text = verdict(rows, 30, "pi4")   # the same two rows, and the paragraph that says so
    verdict(rows, 30, "pi4", metric("gaussian_blur"))   # accuracy read as top-1 under blur (--pick-by)

The functions take flat row dicts (sweep.rows: top1, latency_ms_device, size_mb, error, ...) so tests can feed a
hand-made table. A row with an error, or without the accuracy figure or a device latency, takes part in nothing.
Accuracy is the row's `top1` unless a metric names another column (--pick-by: robust_mean, robust_worst or one
corruption's robust_<name>, each at severity 3). The front itself is benchmarks.compare.pareto_front, the one front
of the project.
"""

from __future__ import annotations

import math

from benchmarks.compare import pareto_front
from benchmarks.device.corruptions import CORRUPTIONS, MIDDLE
from benchmarks.device.rows import ms

X, Y = "latency_ms_device", "top1"  # the two axes of every decision here (Y unless --pick-by names another)
PICK_BY = ("top1", "robust_mean", "robust_worst", *CORRUPTIONS)  # --pick-by's choices


def metric(pick_by: str = "top1") -> str:
    """The row column --pick-by reads: top1, robust_mean, robust_worst, or robust_<corruption>."""
    return f"robust_{pick_by}" if pick_by in CORRUPTIONS else pick_by


def metric_label(key: str = Y) -> str:
    """What a metric column means, in words: "top-1 under gaussian_blur (severity 3)"."""
    if key == Y:
        return "top-1"
    if key in ("robust_mean", "robust_worst"):
        return f"{key[7:]} top-1 over the camera corruptions (severity {MIDDLE})"
    return f"top-1 under {key.removeprefix('robust_')} (severity {MIDDLE})"


def usable(row: dict, key: str = Y) -> bool:
    """True if the row can be ranked: no error, its accuracy figure (key) and a device latency."""
    return not row.get("error") and row.get(key) is not None and row.get(X) is not None


def front_rows(rows: list[dict], key: str = Y) -> list[dict]:
    """Usable rows that no other usable row beats on both accuracy and device latency, fastest first.

    pareto_front keeps one of several points that tie exactly; here every tied row is on the front, because ties
    are common: a point's tflite_fp32 and onnx_fp32 share a predicted latency and, being the same float model,
    usually a top-1, and sweep.md and the plot name both."""
    pts = [r for r in rows if usable(r, key)]
    on = {(pts[i][X], pts[i][key]) for i in pareto_front([(r[X], r[key]) for r in pts])}
    return sorted((r for r in pts if (r[X], r[key]) in on), key=lambda r: (r[X], -r[key]))


def _rank(row: dict, key: str = Y) -> tuple:
    """Pick order: higher accuracy, then lower device latency, then smaller file."""
    size = row.get("size_mb")
    return (-row[key], row[X], size if size is not None else math.inf)


def fits(row: dict, budget_ms: float, key: str = Y) -> bool:
    """True if the row is usable and its device latency is within the budget (inclusive)."""
    return usable(row, key) and row[X] <= budget_ms


def pick(rows: list[dict], budget_ms: float, key: str = Y) -> dict | None:
    """The most accurate usable row within the budget (ties: lower latency, then smaller size); None if none fits."""
    within = [r for r in rows if fits(r, budget_ms, key)]
    return min(within, key=lambda r: _rank(r, key)) if within else None


def runner_up(rows: list[dict], best: dict | None, budget_ms: float, key: str = Y) -> dict | None:
    """What the pick is traded against: the cheapest front row more accurate than it (over budget by
    construction), else the next best row within the budget. None if there is neither."""
    if best is None:
        return None
    better = [r for r in front_rows(rows, key) if r[key] > best[key]]
    if better:
        return min(better, key=lambda r: (r[X], -r[key]))
    others = [r for r in rows if fits(r, budget_ms, key) and r is not best]
    return min(others, key=lambda r: _rank(r, key)) if others else None


def fastest(rows: list[dict], key: str = Y) -> dict | None:
    """The usable row with the lowest device latency (ties: more accurate, then smaller)."""
    pts = [r for r in rows if usable(r, key)]
    return min(pts, key=lambda r: (r[X], -r[key], r.get("size_mb") or math.inf)) if pts else None


def name(row: dict) -> str:
    """ "a0.5-s128 tflite_int8_qat": the grid point and the artifact."""
    return f"{row['point']} {row['format']}"


def how(row: dict) -> str:
    """ "measured" or "predicted": where the row's device latency comes from."""
    return "measured" if str(row.get("latency_source", "")).startswith("measured") else "predicted"


def describe(row: dict, key: str = Y) -> str:
    """ "a0.5-s128 tflite_int8_qat: top-1 97.4%, 21.3 ms predicted on pi4" (with another metric: "top-1 under
    gaussian_blur (severity 3) 90.1% (clean 97.4%), ...")."""
    clean = "" if key == Y or row.get(Y) is None else f" (clean {row[Y] * 100:.1f}%)"
    latency = f"{ms(row[X])} ms {how(row)} on {row['device']}"
    return f"{name(row)}: {metric_label(key)} {row[key] * 100:.1f}%{clean}, {latency}"


def trade(best: dict, other: dict | None, key: str = Y) -> str:
    """The runner-up against the pick, in words."""
    if other is None:
        return "there is no runner-up (one usable artifact)"
    points = (other[key] - best[key]) * 100
    acc = ("as accurate" if abs(points) < 0.05 else
           f"{abs(points):.1f} points {'more' if points > 0 else 'less'} accurate")  # fmt: skip
    joint = "but" if (points > 0) == (other[X] > best[X]) else "and"
    return f"the runner-up {name(other)} is {acc} {joint} {ms(other[X])} ms"


def budget_to_fit(row: dict) -> float:
    """The smallest --budget-ms, at a thousandth of a millisecond, that the row fits: its latency rounded up (a
    figure rounded to nearest could sit just under it and still leave the row out)."""
    return math.ceil(round(row[X] * 1000, 6)) / 1000


def verdict(rows: list[dict], budget_ms: float, device: str, key: str = Y) -> tuple[dict | None, dict | None, str]:
    """(pick, runner-up, one paragraph saying so, or saying that nothing fits and what the fastest option is). With
    a key other than top1 the paragraph opens with what the pick was chosen by."""
    best = pick(rows, budget_ms, key)
    by = "" if key == Y else f"Picked by {metric_label(key)}: "
    if best is not None:
        other = runner_up(rows, best, budget_ms, key)
        return best, other, f"{by}{describe(best, key)} (budget {budget_ms:g} ms); {trade(best, other, key)}."
    quick = fastest(rows, key)
    if quick is None:
        return None, None, (f"Nothing fits: no grid point produced a usable artifact for {device} (see the error "
                            "column); fix the first error and run the same command again.")  # fmt: skip
    text = (
        f"{by}Nothing fits within {budget_ms:g} ms on {device}: the fastest option is {describe(quick, key)}. "
        f"Raise --budget-ms to at least {budget_to_fit(quick):g}, or sweep smaller --alphas / --sizes."
    )
    return None, None, text
