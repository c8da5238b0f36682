"""What a sweep writes: sweep.csv, sweep.json, pareto.png and sweep.md, from the result of sweep.run.run_sweep.

    write_report(Path("runs/sweep-digits"), result, settings.to_dict())   # all four files, each atomically
    render_markdown(result, settings.to_dict(), plot=None)                # sweep.md's text alone

sweep.md names the pick and its runner-up (sweep.pareto.verdict's paragraph), the `make bundle` command, how the
device latency was had (sweep.devices), the Pareto front and every artifact; pareto.png draws accuracy against
device latency with the front, the budget and the pick.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from benchmarks.device.rows import ms, threads_label
from contracts.atomic import atomic_path, write_json, write_text
from contracts.console import log
from contracts.formats import FORMATS
from sweep import devices
from sweep.pareto import X, Y, front_rows, how, metric, metric_label, name, usable
from sweep.rows import COLUMNS

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_ORDER = {n: i for i, n in enumerate(FORMATS)}


def plot_pareto(rows: list[dict], budget_ms: float, best: dict | None, device: str, path: Path,
                key: str = Y) -> Path | None:  # fmt: skip
    """Accuracy (the key column: top1, or what --pick-by names) against device latency: every usable artifact
    (colour: format, shape: width), the front joined and named, the budget as a vertical line, the pick circled.
    None if no row can be drawn."""
    pts = [r for r in rows if usable(r, key)]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter, LogLocator

    alphas = sorted({r["alpha"] for r in pts})
    fig, ax = plt.subplots(figsize=(11, 6.2))
    front = front_rows(rows, key)
    on_front = {id(r) for r in front}
    seen = set()
    for r in sorted(pts, key=lambda r: (_ORDER.get(r["format"], 99), r["alpha"])):
        on = id(r) in on_front
        color = colormaps["tab10"](_ORDER.get(r["format"], len(_ORDER)) % 10)
        label = r["format"] if r["format"] not in seen else None
        seen.add(r["format"])  # dominated artifacts: hollow and faint, so the front reads first
        ax.scatter(r[X], r[key] * 100, s=18 + r["size"] ** 2 / 220, marker=_MARKERS[alphas.index(r["alpha"]) % 8],
                   facecolor=color if on else "none", edgecolor="black" if on else color, linewidth=1.2,
                   zorder=4 if on else 3, label=label, alpha=1.0 if on else 0.55)  # fmt: skip
    ax.step([r[X] for r in front], [r[key] * 100 for r in front], where="post", color="black", lw=1, ls="--",
            zorder=2, label="Pareto front (filled markers)")  # fmt: skip
    spots: dict[tuple, list[dict]] = {}  # artifacts at the same spot share one label
    for r in front:
        spots.setdefault((round(r[X], 4), round(r[key], 4)), []).append(r)
    for n, rs in enumerate(spots.values()):  # above and left of each spot: the dominated cloud is below and right
        by_point: dict[str, list[str]] = {}
        for r in rs:
            by_point.setdefault(r["point"], []).append(r["format"])
        text = "\n".join(f"{p} {', '.join(dict.fromkeys(fs))}" for p, fs in by_point.items())
        ax.annotate(text, (rs[0][X], rs[0][key] * 100), xytext=(-6, 7 + 9 * (n % 2)),
                    textcoords="offset points", ha="right", fontsize=7.5, zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    ax.axvline(budget_ms, color="dimgray", lw=2, ls=":", zorder=1, label=f"budget {budget_ms:g} ms")
    if best is not None:
        ax.scatter(best[X], best[key] * 100, s=650, facecolor="none", edgecolor="black", linewidth=2.2, zorder=5,
                   label=f"pick: {name(best)}")  # fmt: skip
    for k, a in enumerate(alphas):  # legend entries for the shapes
        ax.scatter([], [], marker=_MARKERS[k % 8], facecolor="none", edgecolor="gray", label=f"width {a:g}")
    xs = [r[X] for r in pts] + [budget_ms]
    if max(xs) / max(min(xs), 1e-9) > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.3)
    lo, hi = min(r[key] for r in pts) * 100, max(r[key] for r in pts) * 100
    pad = max(0.5, (hi - lo) * 0.12)
    ax.set_ylim(lo - pad, min(100.5, hi + 2 * pad))
    sources = sorted({how(r) for r in pts})
    ax.set_xlabel(f"latency on {device}, ms, inference only ({' and '.join(sources)})")
    ax.set_ylabel(f"test {metric_label(key)} (%)")
    by = "" if key == Y else f"\npicked by {metric_label(key)}"
    ax.set_title(f"Accuracy against latency on {device}: up and left is better (marker size: input size){by}",
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


def rows_table(rows: list[dict], key: str = Y) -> str:
    """Markdown table of the rows' decision columns (with the --pick-by column after Top-1 when it is another)."""
    picked = () if key == Y else ((key, key, 4),)
    cols = (("Point", "point", 0), ("Format", "format", 0), ("Top-1", "top1", 4), *picked,
            ("Agreement", "agreement", 4), ("MB", "size_mb", 2), ("MACs M", "macs_m", 1),
            ("ms here", "latency_ms_here", 3),
            ("ms device", "latency_ms_device", -1), ("Source", "latency_source", 0), ("Fits", "within_budget", 0),
            ("Error", "error", 0))  # fmt: skip
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(k), d) for _, k, d in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _method(settings: dict, host: str) -> list[str]:
    """How the device latency was had, with the figure's source."""
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
    best, rows, key = result["pick"], result["rows"], metric(settings.get("pick_by", "top1"))
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
    front = front_rows(rows, key)
    by = "" if key == Y else f" (accuracy: {metric_label(key)}, --pick-by {settings['pick_by']})"
    lines += ["## Pareto front", "", f"No other artifact is both at least as accurate{by} and at least as fast.", "",
              rows_table(front, key) if front else "(empty: no usable row)", ""]  # fmt: skip
    if plot is not None:
        lines += [f"![accuracy against latency]({plot.name})", ""]
    lines += ["## Every artifact", "", rows_table(rows, key)]
    return "\n".join(lines)


def write_report(out: Path, result: dict, settings: dict, plots: bool = True) -> None:
    """sweep.csv (one row per artifact), sweep.json (settings, rows, pick), pareto.png and sweep.md, atomically."""
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
                       out / "pareto.png", metric(settings.get("pick_by", "top1"))) if plots else None  # fmt: skip
    write_text(out / "sweep.md", render_markdown(result, settings, plot))
    log(f"wrote {out}/: sweep.csv, sweep.json, sweep.md" + (", pareto.png" if plot else ""))
