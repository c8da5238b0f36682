"""The benchmark's five plots and the soak's (PNG, matplotlib Agg), each written atomically.

paths = save_plots(rows, out_dir, reference, host, robust_rows)   # {name: path} in the bench folder
plot_soak(report, "soak.png")                        # python -m benchmarks.device.soak --plot, on the host

matplotlib is imported here only, on first use (pyplot()); the device package never imports this module unless
a soak is asked for a --plot.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.compare import best_rows, devices, float_counterpart, pareto_front
from benchmarks.device.rows import threads_label
from contracts.atomic import atomic_path
from contracts.formats import FORMATS

PLOTS = {  # file name -> what report.md calls it
    "accuracy_vs_latency.png": "Accuracy against latency (best thread count, Pareto front)",
    "size.png": "Size per format",
    "per_class.png": "Per-class accuracy, int8 against float",
    "latency_vs_threads.png": "Latency against threads",
    "robustness.png": "Top-1 against corruption severity, float and int8",
}
_DASHES = {"none": "-", "fp16": "-.", "dynamic": ":", "int8": "--"}  # robustness.png: line style by quantization
_ORDER = {name: i for i, name in enumerate(FORMATS)}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per format, in table order


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only, no display), imported on first use.

    Raises:
        ImportError: matplotlib is not installed (a Pi bundle has neither it nor this module).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(fmt: str):
    """One colour per format, the same in every plot (tab10 in formats-table order)."""
    from matplotlib import colormaps

    return colormaps["tab10"](_ORDER.get(fmt, len(_ORDER)) % 10)


def save_figure(fig, path: Path) -> Path:
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _label(r: dict) -> str:
    runtime = "" if FORMATS.get(r["format"]) and FORMATS[r["format"]].runtime == r["runtime"] else f" ({r['runtime']})"
    return f"{r['format']}{runtime}"


def plot_accuracy_vs_latency(rows: list[dict], path: Path) -> Path | None:
    """One panel per device: each artifact/runtime at its best thread count; the Pareto front joined and named."""
    plt = pyplot()
    best = [r for r in best_rows(rows) if r.get("top1") is not None]
    devs = [d for d in devices(rows) if any(r["device"] == d for r in best)]
    if not devs:
        return None
    fig, axes = plt.subplots(1, len(devs), figsize=(8.2 * len(devs), 4.8), squeeze=False)
    fig.subplots_adjust(wspace=0.7)
    for ax, dev in zip(axes[0], devs):
        pts = sorted((r for r in best if r["device"] == dev), key=lambda r: r["latency_ms_median"])
        xy = [(r["latency_ms_median"], r["top1"] * 100) for r in pts]
        front = set(pareto_front(xy))
        for i, r in enumerate(pts):  # hollow, distinct shapes: artifacts at the same spot stay visible
            on, color = i in front, _color(r["format"])
            ax.scatter(*xy[i], s=110 if on else 70, marker=_MARKERS[_ORDER.get(r["format"], 0) % len(_MARKERS)],
                       facecolor=color if on else "none", edgecolor="black" if on else color, linewidth=1.6,
                       zorder=4 if on else 3, label=f"{_label(r)}, {threads_label(r['threads'])}")  # fmt: skip
        fx = [xy[i] for i in sorted(front, key=lambda i: xy[i][0])]
        ax.step([p[0] for p in fx], [p[1] for p in fx], where="post", color="black", lw=1, ls="--", zorder=2,
                label="Pareto front")  # fmt: skip
        for n, i in enumerate(sorted(front, key=lambda i: xy[i][0])):  # name the front's points, staggered
            text = f"{pts[i]['format']}\n{xy[i][0]:.3g} ms, {xy[i][1]:.1f}%"
            ax.annotate(text, xy[i], xytext=(6, -24 - 12 * (n % 2)), textcoords="offset points", fontsize=8,
                        fontweight="bold")  # fmt: skip
        lo, hi = min(p[1] for p in xy), max(p[1] for p in xy)
        pad = max(0.5, (hi - lo) * 0.25)
        ax.set_ylim(lo - pad, min(100.0, hi + pad) + 0.2)
        ax.set_xlim(0, max(p[0] for p in xy) * 1.25)
        ax.set_xlabel("latency, ms median (inference only, best thread count)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(dev, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="filled: on the front", title_fontsize=7
        )
    fig.suptitle("Accuracy against latency: up and left is better", y=1.02)
    return save_figure(fig, path)


def plot_size(rows: list[dict], path: Path) -> Path | None:
    """Artifact size per format (bars), with MB and the ratio to the float32 artifact of the same runtime."""
    plt = pyplot()
    sizes = {}
    for r in rows:
        if r.get("size_mb") and r["format"] not in sizes:
            sizes[r["format"]] = r["size_mb"]
    if not sizes:
        return None
    names = sorted(sizes, key=lambda n: _ORDER.get(n, 99))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.2))
    bars = ax.bar(names, [sizes[n] for n in names], color=[_color(n) for n in names])
    for bar, n in zip(bars, names):
        fmt = FORMATS.get(n)
        fp32 = next((sizes[f.name] for f in FORMATS.values() if fmt and f.quantization == "none"
                     and f.runtime == fmt.runtime and f.name in sizes), None)  # fmt: skip
        note = f"{sizes[n]:.2f}" + (f"\n{fp32 / sizes[n]:.1f}x smaller" if fp32 and n in FORMATS and fp32 != sizes[n]
                                    else "")  # fmt: skip
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylabel("size (MB)")
    ax.set_ylim(0, max(sizes.values()) * 1.3)
    ax.set_title("Artifact size per format (ratio to the float32 artifact of the same runtime)")
    ax.tick_params(axis="x", rotation=20)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_per_class(rows: list[dict], reference: dict, device: str, path: Path) -> Path | None:
    """Per-class test top-1: the float reference beside every int8 artifact, grouped by class."""
    import numpy as np

    plt = pyplot()
    series = []
    if reference.get("per_class_top1"):
        series.append((f"float ({reference['name']})", reference["per_class_top1"], "lightgray"))
    seen = set()
    for r in rows:
        wanted = r["device"] == device and r.get("quantization") == "int8" and r.get("per_class_top1")
        if wanted and r["format"] not in seen:
            seen.add(r["format"])
            series.append((_label(r), r["per_class_top1"], _color(r["format"])))
    if len(series) < 2:
        return None
    labels = list(series[0][1])
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(labels) * len(series) / 2), 4.4))
    for k, (name, per_class, color) in enumerate(series):
        vals = [100 * (per_class.get(c) or 0.0) for c in labels]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=name, color=color, edgecolor="black",
               linewidth=0.3)  # fmt: skip
    lows = [100 * v for _, pc, _ in series for v in pc.values() if v is not None]
    ax.set_ylim(max(0.0, min(lows) - 10), 101)
    ax.set_xticks(x, labels, rotation=0 if max(len(c) for c in labels) < 6 else 30)
    ax.set_xlabel("class")
    ax.set_ylabel("test top-1 of the class (%)")
    ax.set_title("Per-class accuracy: int8 artifacts against the float model")
    ax.legend(fontsize=8, ncol=len(series), loc="lower center", bbox_to_anchor=(0.5, -0.25))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_latency_vs_threads(rows: list[dict], path: Path) -> Path | None:
    """One panel per device: median latency against threads, a line per artifact/runtime, p90 as a whisker."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    timed = [r for r in rows if r.get("latency_ms_median")]
    devs = devices(timed)
    if not devs:
        return None
    fig, axes = plt.subplots(1, len(devs), figsize=(8.2 * len(devs), 4.6), squeeze=False)
    fig.subplots_adjust(wspace=0.7)
    for ax, dev in zip(axes[0], devs):
        groups: dict[tuple, list[dict]] = {}
        for r in timed:
            if r["device"] == dev:
                groups.setdefault((r["format"], r["runtime"]), []).append(r)
        threads = sorted({r["threads"] for rs in groups.values() for r in rs})
        ordered = sorted(groups.items(), key=lambda kv: _ORDER.get(kv[0][0], 99))
        for k, ((fmt, _), rs) in enumerate(ordered):
            rs = sorted(rs, key=lambda r: r["threads"])
            dodge = 2 ** (0.025 * (k - (len(ordered) - 1) / 2))  # side by side, so the p90 whiskers stay apart
            t = [r["threads"] * dodge for r in rs]
            med = [r["latency_ms_median"] for r in rs]
            up = [max(0.0, (r.get("latency_ms_p90") or m) - m) for r, m in zip(rs, med)]
            ax.errorbar(t, med, yerr=[[0] * len(up), up], marker="o", ms=4, capsize=2, lw=1.4, elinewidth=0.8,
                        color=_color(fmt), label=_label(rs[0]))  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(threads, [str(t) for t in threads])
        ax.set_xlim(min(threads) / 1.3, max(threads) * 1.3)
        ax.set_xlabel("interpreter threads")
        ax.set_ylabel("latency, ms median (log scale; whisker: p90)")
        ax.set_title(dev, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Latency against threads (lower is better)", y=1.02)
    return save_figure(fig, path)


def plot_robustness(robust_rows: list[dict], path: Path) -> Path | None:
    """A panel per corruption: top-1 against severity (0 = clean), a line per artifact; one colour per family (an
    artifact and its float counterpart), solid for float32, dashed for int8."""
    plt = pyplot()
    names = list(dict.fromkeys(r["corruption"] for r in robust_rows if r["severity"]))
    if not names:
        return None
    fmts = sorted(dict.fromkeys(r["format"] for r in robust_rows), key=lambda f: _ORDER.get(f, 99))
    cols = min(3, len(names))
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(4.2 * cols, 3.3 * -(-len(names) // cols)),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, name in zip(axes.flat, names):
        for k, fmt in enumerate(fmts):
            dodge = 0.06 * (k - (len(fmts) - 1) / 2)  # side by side: artifacts with equal figures stay visible
            pts = sorted((r["severity"] + dodge, r["top1"] * 100) for r in robust_rows
                         if r["format"] == fmt and r["corruption"] in (name, "none"))  # fmt: skip
            family = float_counterpart(fmt)
            quant = FORMATS[fmt].quantization if fmt in FORMATS else "none"
            ax.plot(*zip(*pts), color=_color(family.name if family else fmt), ls=_DASHES.get(quant, "-"), lw=1.5,
                    marker=_MARKERS[_ORDER.get(fmt, 0) % len(_MARKERS)], ms=4, label=fmt)  # fmt: skip
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("test top-1 (%)")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(fmts), 4), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Top-1 under camera corruptions (colour: model family; solid float32, dash-dot fp16, dotted "
                 "dynamic range, dashed int8)", y=1.0)  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def save_plots(rows: list[dict], out_dir: str | Path, reference: dict, host: str,
               robust_rows: list[dict] | None = None) -> dict[str, Path]:  # fmt: skip
    """Writes every plot the rows allow (robustness.png from robust_rows); returns {file name: path} of those
    written."""
    out = Path(out_dir)
    made = {
        "accuracy_vs_latency.png": plot_accuracy_vs_latency(rows, out / "accuracy_vs_latency.png"),
        "size.png": plot_size([r for r in rows if r["device"] == host], out / "size.png"),
        "per_class.png": plot_per_class(rows, reference, host, out / "per_class.png"),
        "latency_vs_threads.png": plot_latency_vs_threads(rows, out / "latency_vs_threads.png"),
        "robustness.png": plot_robustness(robust_rows or [], out / "robustness.png"),
    }
    return {k: v for k, v in made.items() if v is not None}


def plot_soak(report: dict, path: str | Path) -> Path:
    """The soak's report (benchmarks.device.soak) as two panels against frames after warm-up: RSS (each interval's
    median with min-max bars, the first interval's level and the flat limit above it) and FPS per interval with its
    median. Written atomically."""
    plt = pyplot()
    rows, s, limit = report["rows"], report["summary"], report["settings"]["max_growth_pct"]
    x = [r["frames"] for r in rows]
    fig, (ax_rss, ax_fps) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    start, top = s["rss_start_mib"], s["rss_start_mib"] * (1 + limit / 100)
    ax_rss.axhspan(start, top, color="tab:green", alpha=0.10, label=f"flat: under first interval +{limit:g}%")
    ax_rss.axhline(start, color="tab:green", lw=1, ls="--", label=f"first interval {start:.1f} MiB")
    med = [r["rss_mib"] for r in rows]
    spread = [[m - r["rss_min_mib"] for m, r in zip(med, rows)], [r["rss_max_mib"] - m for m, r in zip(med, rows)]]
    ax_rss.errorbar(x, med, yerr=spread, fmt="o-", color="tab:blue", ms=3, lw=1.5, elinewidth=1, capsize=3,
                    label="RSS: median of the interval's readings, min-max bars")  # fmt: skip
    values = [r["rss_min_mib"] for r in rows] + [r["rss_max_mib"] for r in rows] + [top]
    pad = max(1.0, 0.2 * (max(values) - min(values)))
    ax_rss.set_ylim(min(values) - pad, max(values) + pad)
    ax_rss.set_ylabel("resident memory (MiB)")
    ax_rss.set_title(f"RSS {start:.1f} → {s['rss_end_mib']:.1f} MiB ({s['rss_growth_pct']:+.2f}%): {s['verdict']}",
                     fontsize=10, loc="left")  # fmt: skip
    ax_rss.legend(loc="best", fontsize=8)
    fps = [r["fps"] for r in rows]
    ax_fps.plot(x, fps, "o-", color="tab:orange", ms=3, label="FPS over the interval")
    ax_fps.axhline(s["fps_median"], color="gray", lw=1, ls="--", label=f"median {s['fps_median']:.1f} FPS")
    ax_fps.set_ylim(0, max(fps) * 1.15)
    ax_fps.set_ylabel("camera-loop FPS")
    ax_fps.set_xlabel(f"frames after {report['settings']['warmup']} warm-up frames")
    ax_fps.set_title(f"FPS first {s['fps_first']:.1f}, last {s['fps_last']:.1f}, min {s['fps_min']:.1f}",
                     fontsize=10, loc="left")  # fmt: skip
    ax_fps.legend(loc="lower right", fontsize=8)
    for ax in (ax_rss, ax_fps):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max(x) * 1.02)
    fig.suptitle(f"Soak: {Path(s['model']).name} ({s['format']}), {s['threads']} threads, {s['device']}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, Path(path))
