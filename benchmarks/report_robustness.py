"""report.md's robustness parts: the headline line near the top and the Robustness section.

    lines = robustness_headline(meta)                  # [] when robustness was not measured
    lines = robustness_section(rows, meta, robust_rows)

meta["robustness"] is what benchmarks.run records (corruptions, severities, n, summary: benchmarks.robustness.summary);
rows are the results rows (their robust_* columns), robust_rows those of robustness.json.
"""

from __future__ import annotations

from benchmarks.device.corruptions import MIDDLE
from benchmarks.robustness import CLEAN


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def robustness_headline(meta: dict) -> list[str]:
    """One paragraph: the corruption that costs the float reference most at severity MIDDLE, and whether each int8
    artifact loses more than its float counterpart under it (or no clear difference, within the paired noise)."""
    rob = meta.get("robustness") or {}
    s = rob.get("summary") or {}
    if not s:
        return []
    ref, worst = s["reference"], s["worst"]
    text = (f"**Robustness** (severity {s['severity']} of 5, {s['n']} test images): **{worst}** costs most, "
            f"{s['reference_drop']:.1f} points of {ref}'s top-1.")  # fmt: skip
    for c in s["int8"]:
        base, excess, noise = c["float_format"], c["excess_points"], c["noise_points"]
        if c["clear"]:
            more = "more" if excess > 0 else "less"
            text += (f" Under it {c['format']} loses {c['drop']:.1f} points, {abs(excess):.1f} {more} than {base} "
                     f"({c['float_drop']:.1f}; beyond the ±{noise:.1f}-point noise of {s['n']} images).")  # fmt: skip
        elif excess == 0:
            text += f" {c['format']} loses as much as {base} under it ({c['drop']:.1f} points)."
        else:
            text += (f" {c['format']}: no clear difference from {base} under it ({c['drop']:.1f} vs "
                     f"{c['float_drop']:.1f} points lost, {excess:+.1f} within the ±{noise:.1f}-point noise of "
                     f"{s['n']} images).")  # fmt: skip
    if not s["int8"]:
        text += " No int8 artifact was measured beside it."
    return ["", text]


def _one_per_format(rows: list[dict], host: str | None) -> list[dict]:
    """The host's first row of each format that has robustness figures (they do not depend on threads)."""
    seen: dict[str, dict] = {}
    for r in rows:
        if r.get("device") == host and r.get("robust_clean") is not None:
            seen.setdefault(r["format"], r)
    return list(seen.values())


def robustness_section(rows: list[dict], meta: dict, robust_rows: list[dict] | None = None) -> list[str]:
    """## Robustness: the table at severity MIDDLE (clean, then each corruption: top-1 and the drop in points), and
    with robust_rows, every severity's drop per corruption and artifact."""
    rob = meta.get("robustness") or {}
    names = rob.get("corruptions") or []
    arts = _one_per_format(rows, meta.get("host"))
    if not names or not arts:
        return []
    n = rob.get("n")
    out = ["", "## Robustness", "",
           f"Top-1 on {n} test images (spread over the split) under each corruption of benchmarks.device.corruptions "
           f"(ImageNet-C's values; low light: 3D Common Corruptions'), seeded, the same images for every artifact. "
           f"Severity {MIDDLE} of 5: top-1 and, in brackets, its change in points against clean; mean and worst are "
           f"the results' robust_mean and robust_worst. One image is {100 / max(n or 1, 1):.2f} points.",
           ""]  # fmt: skip
    head = ["Artifact", "clean", *names, "mean", "worst"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in arts:
        cells = [r["format"], _pct(r["robust_clean"])]
        for c in names:
            v = r.get(f"robust_{c}")
            cells.append("-" if v is None else f"{v:.1%} ({(v - r['robust_clean']) * 100:+.1f})".replace("-", "−"))
        cells += [_pct(r.get("robust_mean")), _pct(r.get("robust_worst"))]
        out.append("| " + " | ".join(cells) + " |")
    sev = rob.get("severities") or []
    if robust_rows and sev:
        out += ["", "Points lost against clean at every severity:", "",
                "| Corruption | Artifact | " + " | ".join(f"sev {s}" for s in sev) + " |",
                "|---|---|" + "---|" * len(sev)]  # fmt: skip
        drops = {
            (r["format"], r["corruption"], r["severity"]): r["drop"] for r in robust_rows if r["corruption"] != CLEAN
        }
        for c in names:
            for r in arts:
                vals = [drops.get((r["format"], c, s)) for s in sev]
                out.append(f"| {c} | {r['format']} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals)
                           + " |")  # fmt: skip
    return out + [""]
