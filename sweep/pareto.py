"""What a sweep's rows say: the Pareto front, the pick within a latency budget, the plot and sweep.md.

    front = pareto_front(rows)             # rows no other row beats on both accuracy and device latency
    best = pick(rows, budget_ms=30)        # most accurate within budget; ties: faster, then smaller; None: none fits
    other = runner_up(rows, best, 30)      # the next trade: the next step up the front, else the next best that fits

The functions take flat row dicts (top1, latency_ms_device, size_mb, error, ...) so tests can feed a hand-made
table. A row with an error, or without a top-1 or a device latency, takes part in nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.device.rows import ms, threads_label
from contracts.atomic import atomic_path
from contracts.formats import FORMATS

X, Y = "latency_ms_device", "top1"  # the two axes of every decision here
# sweep.csv: one row per grid point x artifact, in this column order.
COLUMNS = (
    "point",  # grid point, aA-sS: the run folder's name inside the sweep folder
    "alpha",  # MobileNetV2 width
    "size",  # input side, pixels
    "format",  # key in contracts.formats.FORMATS
    "runtime",  # litert or onnxruntime
    "threads",  # interpreter threads of latency_ms_here (and of the device figure it is scaled from)
    "macs_m",  # multiply-accumulates, millions (devices.macs_m)
    "macs_source",  # "table" (MobileNetV2 paper) or "derived: ..." (scaled by input area from the 224 figure)
    "size_mb",  # artifact file size, 10^6 bytes
    "top1",  # test top-1 of this artifact, measured here
    "agreement",  # fraction of test images whose top-1 equals the float Keras model's
    "latency_ms_here",  # median inference latency on this machine
    "device",  # the target: pi4, pi5, or this machine's name
    "latency_ms_device",  # latency on the target: predicted, or measured (latency_source says which)
    "latency_source",  # "predicted: <what it rests on>" or "measured: <device>"
    "within_budget",  # latency_ms_device <= --budget-ms
    "run",  # the point's run folder: `make bundle RUN=<run> FORMAT=<format>`
    "sha256",  # first 12 hex digits of the artifact's sha256 (what --merge rows are matched on)
    "error",  # why the row cannot be ranked (train, export, bench, predict, not run); empty when it can
)


def usable(row: dict) -> bool:
    """True if the row can be ranked: no error, a top-1 and a device latency."""
    return not row.get("error") and row.get(Y) is not None and row.get(X) is not None


def dominates(a: dict, b: dict) -> bool:
    """a is at least as accurate and at least as fast as b, and strictly better on one of the two."""
    return a[Y] >= b[Y] and a[X] <= b[X] and (a[Y] > b[Y] or a[X] < b[X])


def pareto_front(rows: list[dict]) -> list[dict]:
    """Usable rows that no other usable row dominates, fastest first. Identical rows are all on it (neither
    dominates the other)."""
    pts = [r for r in rows if usable(r)]
    front = [r for r in pts if not any(dominates(o, r) for o in pts)]
    return sorted(front, key=lambda r: (r[X], -r[Y]))


def _rank(row: dict) -> tuple:
    """Pick order: higher top-1, then lower device latency, then smaller file."""
    size = row.get("size_mb")
    return (-row[Y], row[X], size if size is not None else math.inf)


def fits(row: dict, budget_ms: float) -> bool:
    return usable(row) and row[X] <= budget_ms


def pick(rows: list[dict], budget_ms: float) -> dict | None:
    """The most accurate usable row within the budget (ties: lower latency, then smaller size); None if none fits."""
    within = [r for r in rows if fits(r, budget_ms)]
    return min(within, key=_rank) if within else None


def runner_up(rows: list[dict], best: dict | None, budget_ms: float) -> dict | None:
    """What the pick is traded against: the cheapest front row more accurate than it (over budget by
    construction), else the next best row within the budget. None if there is neither."""
    if best is None:
        return None
    better = [r for r in pareto_front(rows) if r[Y] > best[Y]]
    if better:
        return min(better, key=lambda r: (r[X], -r[Y]))
    others = [r for r in rows if fits(r, budget_ms) and r is not best]
    return min(others, key=_rank) if others else None


def fastest(rows: list[dict]) -> dict | None:
    """The usable row with the lowest device latency (ties: more accurate, then smaller)."""
    pts = [r for r in rows if usable(r)]
    return min(pts, key=lambda r: (r[X], -r[Y], r.get("size_mb") or math.inf)) if pts else None


def name(row: dict) -> str:
    """ "a0.5-s128 tflite_int8_qat": the grid point and the artifact."""
    return f"{row['point']} {row['format']}"


def _how(row: dict) -> str:
    return "measured" if str(row.get("latency_source", "")).startswith("measured") else "predicted"


def describe(row: dict) -> str:
    """ "a0.5-s128 tflite_int8_qat: top-1 97.4%, 21 ms predicted on pi4"."""
    return f"{name(row)}: top-1 {row[Y] * 100:.1f}%, {ms(row[X])} ms {_how(row)} on {row['device']}"


def trade(best: dict, other: dict | None) -> str:
    """The runner-up against the pick, in words."""
    if other is None:
        return "there is no runner-up (one usable artifact)"
    points = (other[Y] - best[Y]) * 100
    acc = ("as accurate" if abs(points) < 0.05 else
           f"{abs(points):.1f} points {'more' if points > 0 else 'less'} accurate")  # fmt: skip
    joint = "but" if (points > 0) == (other[X] > best[X]) else "and"
    return f"the runner-up {name(other)} is {acc} {joint} {ms(other[X])} ms"


def verdict(rows: list[dict], budget_ms: float, device: str) -> tuple[dict | None, dict | None, str]:
    """(pick, runner-up, one paragraph saying so, or saying that nothing fits and what the fastest option is)."""
    best = pick(rows, budget_ms)
    if best is not None:
        other = runner_up(rows, best, budget_ms)
        return best, other, f"{describe(best)} (budget {budget_ms:g} ms); {trade(best, other)}."
    quick = fastest(rows)
    if quick is None:
        return None, None, (f"Nothing fits: no grid point produced a usable artifact for {device} (see the error "
                            "column); fix the first error and run the same command again.")  # fmt: skip
    text = (
        f"Nothing fits within {budget_ms:g} ms on {device}: the fastest option is {describe(quick)}. "
        f"Raise --budget-ms to at least {ms(quick[X])}, or sweep smaller --alphas / --sizes."
    )
    return None, None, text


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_ORDER = {n: i for i, n in enumerate(FORMATS)}


def plot_pareto(rows: list[dict], budget_ms: float, best: dict | None, device: str, path: Path) -> Path | None:
    """Accuracy against device latency: every usable artifact (colour: format, shape: width), the front joined
    and named, the budget as a vertical line, the pick circled. None if no row can be drawn."""
    pts = [r for r in rows if usable(r)]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter, LogLocator

    alphas = sorted({r["alpha"] for r in pts})
    fig, ax = plt.subplots(figsize=(11, 6.2))
    front = pareto_front(rows)
    on_front = {id(r) for r in front}
    seen = set()
    for r in sorted(pts, key=lambda r: (_ORDER.get(r["format"], 99), r["alpha"])):
        on = id(r) in on_front
        color = colormaps["tab10"](_ORDER.get(r["format"], len(_ORDER)) % 10)
        label = r["format"] if r["format"] not in seen else None
        seen.add(r["format"])  # dominated artifacts: hollow and faint, so the front reads first
        ax.scatter(r[X], r[Y] * 100, s=18 + r["size"] ** 2 / 220, marker=_MARKERS[alphas.index(r["alpha"]) % 8],
                   facecolor=color if on else "none", edgecolor="black" if on else color, linewidth=1.2,
                   zorder=4 if on else 3, label=label, alpha=1.0 if on else 0.55)  # fmt: skip
    ax.step([r[X] for r in front], [r[Y] * 100 for r in front], where="post", color="black", lw=1, ls="--",
            zorder=2, label="Pareto front (filled markers)")  # fmt: skip
    spots: dict[tuple, list[dict]] = {}  # artifacts at the same spot share one label
    for r in front:
        spots.setdefault((round(r[X], 4), round(r[Y], 4)), []).append(r)
    for n, rs in enumerate(spots.values()):  # above and left of each spot: the dominated cloud is below and right
        by_point: dict[str, list[str]] = {}
        for r in rs:
            by_point.setdefault(r["point"], []).append(r["format"])
        text = "\n".join(f"{p} {', '.join(dict.fromkeys(fs))}" for p, fs in by_point.items())
        ax.annotate(text, (rs[0][X], rs[0][Y] * 100), xytext=(-6, 7 + 9 * (n % 2)),
                    textcoords="offset points", ha="right", fontsize=7.5, zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    ax.axvline(budget_ms, color="dimgray", lw=2, ls=":", zorder=1, label=f"budget {budget_ms:g} ms")
    if best is not None:
        ax.scatter(best[X], best[Y] * 100, s=650, facecolor="none", edgecolor="black", linewidth=2.2, zorder=5,
                   label=f"pick: {name(best)}")  # fmt: skip
    for k, a in enumerate(alphas):  # legend entries for the shapes
        ax.scatter([], [], marker=_MARKERS[k % 8], facecolor="none", edgecolor="gray", label=f"width {a:g}")
    xs = [r[X] for r in pts] + [budget_ms]
    if max(xs) / max(min(xs), 1e-9) > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.3)
    lo, hi = min(r[Y] for r in pts) * 100, max(r[Y] for r in pts) * 100
    pad = max(0.5, (hi - lo) * 0.12)
    ax.set_ylim(lo - pad, min(100.5, hi + 2 * pad))
    sources = sorted({_how(r) for r in pts})
    ax.set_xlabel(f"latency on {device}, ms, inference only ({' and '.join(sources)})")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Accuracy against latency on {device}: up and left is better (marker size: input size)",
                 fontsize=11)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _cell(v, digits: int = 3) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return ms(v) if digits < 0 else f"{v:.{digits}f}"
    return str(v).replace("|", "/")


def rows_table(rows: list[dict]) -> str:
    """Markdown table of the rows' decision columns."""
    cols = (("Point", "point", 0), ("Format", "format", 0), ("Top-1", "top1", 4), ("Agreement", "agreement", 4),
            ("MB", "size_mb", 2), ("MACs M", "macs_m", 1), ("ms here", "latency_ms_here", 3),
            ("ms device", "latency_ms_device", -1), ("Source", "latency_source", 0), ("Fits", "within_budget", 0),
            ("Error", "error", 0))  # fmt: skip
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(k), d) for _, k, d in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _method(settings: dict, host: str) -> list[str]:
    """How the device latency was had, with the figure's source."""
    from sweep import devices

    device, threads = settings["device"], settings["threads"]
    if device == "this":
        return [f"Latency measured here ({host}, {threads_label(threads)}), inference only."]
    fig = devices.DEVICES[device]
    lines = [f"Latency on {device} is **predicted** unless a row says `measured`: {fig.ms:g} ms for MobileNetV2 1.0 "
             f"at 224, float32, {fig.cores} threads ({fig.board}), x the model's MACs / 300 M, x the artifact's "
             f"latency over its float32 counterpart's measured here ({host}, {threads_label(threads)}; 1 for float32). "
             "See sweep/devices.py.", "", f"- Source: {fig.citation}"]  # fmt: skip
    if threads != fig.cores:
        lines.append(f"- The ratios were measured with {threads_label(threads)}, the {device} figure is for "
                     f"{fig.cores}: pass --threads {fig.cores} to measure them as the board will run.")  # fmt: skip
    if fig.derivation:
        lines.append(f"- Derived: {fig.derivation}.")
    lines += ["- MACs: " + devices.MACS_SOURCE + "; sizes not in it are scaled by (size/224)^2 from the same "
              "width's 224 figure (`macs_source` says `derived`).",
              "- Rows measured on the board replace the prediction: `python -m benchmarks.device.latency "
              f"--device-name {settings['measured_device']} --out rows.json` there, then `--merge rows.json` "
              "here."]  # fmt: skip
    return lines


def render_markdown(result: dict, settings: dict, plot: Path | None) -> str:
    """sweep.md: the pick and its runner-up in words, the bundle command, how latency was had, the tables."""
    best, rows = result["pick"], result["rows"]
    title = f"# Sweep: the most accurate model within {settings['budget_ms']:g} ms on {settings['device']}"
    lines = [title, "", ("**Pick:** " if best else "**") + result["message"] + ("" if best else "**"), ""]
    if best:
        lines += ["Turn it into the Raspberry Pi bundle:", "", "```",
                  f"make bundle RUN={best['run']} FORMAT={best['format']}", "```", ""]  # fmt: skip
    else:
        lines += [f"Exit code 3 (nothing fits within --budget-ms {settings['budget_ms']:g}).", ""]
    if result["not_run"]:
        lines += ["## Not run", ""] + [f"- {n['point']}: {n['reason']}" for n in result["not_run"]]
        lines += [
            "",
            "Run the same command again (with a larger --max-minutes) to add them; done points are reused.",
            "",
        ]
    lines += ["## Device latency", ""] + _method(settings, result["host"]) + [""]
    front = pareto_front(rows)
    lines += ["## Pareto front", "", "No other artifact is both at least as accurate and at least as fast.", "",
              rows_table(front) if front else "(empty: no usable row)", ""]  # fmt: skip
    if plot is not None:
        lines += [f"![accuracy against latency]({plot.name})", ""]
    lines += ["## Every artifact", "", rows_table(rows)]
    return "\n".join(lines)


def write_report(out: Path, result: dict, settings: dict, plots: bool = True) -> None:
    """sweep.csv (one row per artifact), sweep.json (settings, rows, pick), pareto.png and sweep.md, atomically."""
    import csv
    import io

    from contracts.atomic import write_json, write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(result["rows"])
    write_text(out / "sweep.csv", buf.getvalue())
    pick_name = name(result["pick"]) if result["pick"] else None
    other = name(result["runner_up"]) if result["runner_up"] else None
    write_json(out / "sweep.json", {"settings": settings, "pick": pick_name, "runner_up": other,
                                    "message": result["message"], "not_run": result["not_run"], "host": result["host"],
                                    "rows": result["rows"]})  # fmt: skip
    plot = plot_pareto(result["rows"], settings["budget_ms"], result["pick"], settings["device"],
                       out / "pareto.png") if plots else None  # fmt: skip
    write_text(out / "sweep.md", render_markdown(result, settings, plot))
    print(f"wrote {out}/: sweep.csv, sweep.json, sweep.md" + (", pareto.png" if plot else ""), flush=True)
