"""report.md: what int8 costs in accuracy and buys in size and speed, per device, with the plots and the table.

    text = render_report(run_name, rows, meta, plots, noise=0.10)

Every ratio is between two rows of the same device, runtime and thread count (benchmarks.compare). A speed
ratio within 1 +- noise is reported as no gain, with its figures, never as a speed-up.
"""

from __future__ import annotations

import statistics

from benchmarks.compare import best_rows, comparisons, devices, float_counterpart, is_timed, thread_scaling
from benchmarks.device.rows import format_table, ms, threads_label
from benchmarks.plots import PLOTS
from benchmarks.report_robustness import robustness_headline, robustness_section


def _speed(c: dict, noise: float) -> str:
    s, t = c["speedup"], threads_label(c["threads"])
    figures = f"{ms(c['latency_ms_median'])} vs {ms(c['float_latency_ms_median'])} ms median"
    if s >= 1 + noise:
        return f"{s:.1f}x faster on {t} ({figures})"
    if s <= 1 - noise:
        return f"slower, {s:.2f}x, on {t} ({figures})"
    return f"no faster on {t}: {s:.2f}x ({figures}), within the ±{noise:.0%} run-to-run noise"


def _size(c: dict) -> str:
    r = c["size_ratio"]
    if r is None:
        return "size unknown"
    if r < 1.1:
        return f"no smaller ({r:.2f}x)"
    return f"{r:.1f}x smaller ({c['size_mb']:.2f} vs {c['float_size_mb']:.2f} MB)"


def _accuracy(c: dict) -> str:
    parts = []
    if c["top1_delta_points"] is not None:
        parts.append(f"top-1 {c['top1_delta_points']:+.1f} points ({c['top1']:.2%} vs {c['float_top1']:.2%})")
    if c["agreement"] is not None:
        parts.append(f"{c['agreement']:.1%} agreement with {c['reference'] or 'the float model'}")
    return ", ".join(parts) or "accuracy not measured"


def headline(rows: list[dict], noise: float) -> list[str]:
    """One line per device and int8 artifact, at the thread count where the int8 artifact is fastest."""
    comps = comparisons(rows)
    lines = []
    for dev in devices(rows):
        int8 = [r for r in best_rows([r for r in rows if r["device"] == dev]) if r.get("quantization") == "int8"]
        if not int8:
            continue
        lines.append(f"\n**{dev}**\n")
        for r in int8:
            c = next((c for c in comps if (c["device"], c["format"], c["runtime"], c["threads"])
                      == (dev, r["format"], r["runtime"], r["threads"])), None)  # fmt: skip
            if c is None:
                ref = float_counterpart(r["format"])
                missing = f"no {ref.name if ref else 'float'} row on {dev} at {threads_label(r['threads'])}"
                lines.append(f"- {r['format']}: {missing}, so no ratio (rows of different devices are never compared)")
                continue
            lines.append(f"- **{c['format']}** vs {c['float_format']} ({c['runtime']}): {_size(c)}, "
                         f"{_speed(c, noise)}, {_accuracy(c)}")  # fmt: skip
    return lines


def ratio_table(rows: list[dict]) -> str:
    lines = ["| Device | Format | vs | Runtime | Threads | Size ratio | Speed-up | Top-1 Δ (points) | Agreement |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in comparisons(rows):
        delta = "-" if c["top1_delta_points"] is None else f"{c['top1_delta_points']:+.2f}"
        agree = "-" if c["agreement"] is None else f"{c['agreement']:.4f}"
        lines.append(f"| {c['device']} | {c['format']} | {c['float_format']} | {c['runtime']} | {c['threads']} | "
                     f"{c['size_ratio']:.2f}x | {c['speedup']:.2f}x | {delta} | {agree} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def threads_section(rows: list[dict], meta: dict, noise: float) -> list[str]:
    lines = []
    for dev in devices(rows):
        dm = meta.get("devices", {}).get(dev) or {}
        cores = dm.get("cpu_count")
        scal = [s for s in thread_scaling(rows) if s["device"] == dev and len(s["latency_ms"]) > 1]
        if not scal:
            continue
        lines.append(f"\n**{dev}**" + (f" ({cores} cores)" if cores else "") + "\n")
        for s in scal:
            base = s["base_threads"]
            figures = ", ".join(
                f"{threads_label(t)} {ms(v)} ms" + ("" if t == base else f" ({s['speedup'][t]:.2f}x)")
                + (" (more threads than cores)" if cores and t > cores else "")
                for t, v in s["latency_ms"].items()
            )  # fmt: skip
            gain = max(v for t, v in s["speedup"].items() if t != base)
            if gain < 1 + noise:
                worse = (
                    " (they make it slower)" if gain <= 1 - noise else f" (at best {gain:.2f}x: within ±{noise:.0%})"
                )
                verdict = f"no gain from more than {threads_label(base)}{worse}"
            else:
                best = s["best_threads"]
                verdict = f"{threads_label(best)} is fastest, {s['speedup'][best]:.1f}x over {base}"
            lines.append(f"- {s['format']} ({s['runtime']}): {figures}: {verdict}")
        load = [v for v in (dm.get("load_average") or [])[:1] + (meta.get("load_average_after") or [])[:1]]
        if dev == meta.get("host") and cores and load and max(load) >= cores:
            lines.append(
                f"- The 1-minute load average was {max(load):.1f} on {cores} cores while measuring: other jobs held "
                "cores, and a thread waiting for a busy core stalls the whole inference, so multi-thread figures "
                "(and their p90) suffer most. Repeat on an idle machine before trusting them."
            )
    return lines


LOOP_KEYS = ("loop_ms", "loop_inference_ms", "loop_overhead_ms", "loop_wait_ms", "loop_capture_ms",
             "loop_preprocess_ms", "capture_ms", "draw_ms", "preprocess_ms", "loop_fps")  # fmt: skip


def slowest_stage(r: dict) -> tuple[str, float]:
    """A loop row's slowest stage and its ms per frame: the loop runs at that stage's pace. A loop that read its
    frames serially (loop_shape "serial") has one stage: everything, on the loop's thread."""
    if r.get("loop_shape") == "serial":
        return "reading, preprocessing, inference and drawing (all on the loop's thread)", r["loop_ms"]
    stages = {
        "decoding (reader thread)": r["loop_capture_ms"],
        "preprocessing (preparer thread)": r["loop_preprocess_ms"],
        "inference and drawing (loop thread)": r["loop_ms"] - r["loop_wait_ms"],
    }
    slowest = max(stages, key=stages.get)
    return slowest, stages[slowest]


def serial_ms(r: dict) -> tuple[float, bool]:
    """(ms per frame of a one-thread loop, measured): the reference loop measured beside edge's (serial_loop_ms),
    else the sum of decoding, preprocessing, inference and drawing, each timed alone."""
    if r.get("serial_loop_ms"):
        return r["serial_loop_ms"], True
    return r["capture_ms"] + r["preprocess_ms"] + r["loop_inference_ms"] + r["draw_ms"], False


def loop_figures(rows: list[dict], target_ms: float = 2.0, noise: float = 0.10) -> dict[str, dict]:
    """What the camera-loop rows show, per device (only devices with rows that have every loop figure).

    Returns:
        {device: figures}: best (each artifact's row at its best loop thread count), capture_ms and wait_ms
        (medians over best), faster (how many of best beat a one-thread loop: the one measured beside it, else
        decoding + preprocessing + inference + drawing), measured (how many of best had the one-thread loop
        measured), not_slower (of those, how many ran at least 1 - noise times its frame rate), ratios ((min, max)
        of loop_vs_serial over them, None without), below (the rows of best whose loop ms < capture ms + inference
        ms), bottlenecks ({(format, threads): slowest_stage()} for the other rows of best), overhead_ms ((min, max)
        over best), target_met (max overhead <= target_ms), worst (the row of any thread count with the most
        overhead) and slowdown (median of inference in the loop / inference alone, None without latency figures).
    """
    out = {}
    for dev in devices(rows):
        complete = [r for r in rows if r["device"] == dev and all(r.get(k) is not None for k in LOOP_KEYS)]
        best = best_rows(complete, "loop_ms")
        if not best:
            continue
        below = [r for r in best if r["loop_ms"] < r["capture_ms"] + r["loop_inference_ms"]]
        sequential = [serial_ms(r) for r in best]
        compared = [r["loop_fps"] / r["serial_loop_fps"] for r in best if r.get("serial_loop_fps")]
        over = [r["loop_overhead_ms"] for r in best]
        timed = [r for r in best if r.get("latency_ms_median")]
        out[dev] = {
            "best": best,
            "capture_ms": statistics.median(r["capture_ms"] for r in best),
            "wait_ms": statistics.median(r["loop_wait_ms"] for r in best),
            "faster": sum(r["loop_ms"] < seq for r, (seq, _) in zip(best, sequential)),
            "measured": len(compared),
            "not_slower": sum(c >= 1 - noise for c in compared),
            "ratios": (min(compared), max(compared)) if compared else None,
            "below": below,
            "bottlenecks": {(r["format"], r["threads"]): slowest_stage(r) for r in best if r not in below},
            "overhead_ms": (min(over), max(over)),
            "target_met": max(over) <= target_ms,
            "worst": max(complete, key=lambda r: r["loop_overhead_ms"]),
            "slowdown": statistics.median(r["loop_inference_ms"] / r["latency_ms_median"] for r in timed)
            if timed else None,
        }  # fmt: skip
    return out


def _bottleneck(r: dict) -> str:
    """Why a loop row is not below capture + inference: its slowest stage, with the figures."""
    stage, stage_ms = slowest_stage(r)
    return (f"{r['format']} on {threads_label(r['threads'])}: {stage} takes {ms(stage_ms)} ms per frame "
            f"in the loop (decoding alone {ms(r['capture_ms'])} ms, inference {ms(r['loop_inference_ms'])} "
            "ms)")  # fmt: skip


def _loop_line(r: dict, name: str, p: str = "") -> str:
    """A table line of loop figures; p = "serial_" for the one-thread reference's (measured beside edge's)."""
    loop_ms, inference, wait = r[f"{p}loop_ms"], r[f"{p}loop_inference_ms"], r[f"{p}loop_wait_ms"]
    vs = f"{r['loop_fps'] / r['serial_loop_fps']:.2f}x" if not p and r.get("serial_loop_fps") else "-"
    return (f"| {r['format'] if not p else ''} | {r['threads'] if not p else ''} | {name} | {r[f'{p}loop_fps']:.1f} "
            f"| {vs} | {ms(loop_ms)} | {ms(inference)} | {ms(loop_ms - inference)} | {ms(wait)} | "
            f"{ms(loop_ms - inference - wait)} | {ms(r[f'{p}loop_capture_ms'])} | {ms(r[f'{p}loop_preprocess_ms'])} | "
            f"{ms(r['capture_ms'])} | {ms(r['preprocess_ms'])} |")  # fmt: skip


def _against_serial(f: dict, noise: float) -> str:
    """The sentence comparing edge's loop with the one-thread loop: measured where it was, else estimated."""
    n = len(f["best"])
    if not f["measured"]:
        return (f"loop ms/frame is below decoding + preprocessing + inference + drawing, each timed alone (what a "
                f"one-thread loop would take), for {f['faster']} of {n} artifacts.")  # fmt: skip
    low, high = f["ratios"]
    slower = [r for r in f["best"] if r.get("serial_loop_fps") and r["loop_fps"] < r["serial_loop_fps"] * (1 - noise)]
    text = (f"Against a one-thread loop measured in turns with it (read, preprocess, infer, draw, one frame after "
            f"the other: the TensorFlow Raspberry Pi example's), edge's loop ran at {low:.2f}-{high:.2f}x its frame "
            f"rate, at least as fast (within the ±{noise:.0%} run-to-run noise) for {f['not_slower']} of "
            f"{f['measured']} artifacts")  # fmt: skip
    if slower:
        text += "; slower: " + ", ".join(f"{r['format']} ({r['loop_fps'] / r['serial_loop_fps']:.2f}x)" for r in slower)
    return text + ". Edge reads serially where its threads would not help (edge.shape; the Loop column says which)."


def loop_section(rows: list[dict], target_ms: float = 2.0, cores: dict | None = None, noise: float = 0.10) -> list[str]:
    """The camera-loop table, with the one-thread reference loop under each row where measured, and what it shows
    (loop_figures()), per device.

    Args:
        rows: benchmark rows; those with every loop figure are used.
        target_ms: the loop overhead beyond inference that is acceptable per 640x480 frame.
        cores: {device: CPU cores}, to say when the loop's threads outnumber the cores.
        noise: frame-rate ratios within 1 +- this are run-to-run noise.
    """
    lines = []
    for dev, f in loop_figures(rows, target_ms, noise).items():
        best, below, (low, high), worst = f["best"], f["below"], f["overhead_ms"], f["worst"]
        lines += [f"\n**{dev}**, each artifact at its best loop thread count (ms per frame; decoding and "
                  "preprocessing happen on the reader's threads, or on the loop's own where it read serially):\n",
                  "| Format | Threads | Loop | loop FPS | vs one thread | loop ms | inference ms | overhead ms "
                  "| = wait | + drawing etc. | decoding ms | preprocessing ms | decoding ms alone "
                  "| preprocessing ms alone |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in best:
            lines.append(_loop_line(r, f"edge ({r['loop_shape']})" if r.get("loop_shape") else "edge"))
            if r.get("serial_loop_fps"):
                lines.append(_loop_line(r, "one thread (reference)", "serial_"))
        lines += [
            "",
            f"- Decoding a frame alone takes {ms(f['capture_ms'])} ms, and the loop waited {ms(f['wait_ms'])} ms per "
            f"frame for the next prepared one (median over artifacts). " + _against_serial(f, noise),
            f"- loop ms/frame < capture ms + inference ms for {len(below)} of {len(best)} artifacts"
            + ("." if len(below) == len(best) else
               "; where not, one stage is slower than the model, so the loop runs at that stage's pace: "
               + "; ".join(_bottleneck(r) for r in best if r not in below) + "."),
            f"- Loop overhead beyond inference: {ms(low)} to {ms(high)} ms per 640x480 frame (target at most "
            f"{target_ms:g} ms: {'met' if f['target_met'] else 'NOT met'} at each artifact's best thread count; "
            f"every row: up to {ms(worst['loop_overhead_ms'])} ms, {worst['format']} on "
            f"{threads_label(worst['threads'])}): waiting for the next prepared frame, then drawing and top-k.",
        ]  # fmt: skip
        n_cores = (cores or {}).get(dev)
        if f["slowdown"] is not None and f["slowdown"] > 1.1:
            share = f" ({n_cores} cores for the interpreter's threads, the reader and the preparer)" if n_cores else ""
            lines.append(f"- Inference inside the loop is {f['slowdown']:.2f}x its time alone (median): the stages "
                         f"share the cores{share}. The loop's frame rate already pays for that.")  # fmt: skip
    return lines


def render_report(run_name: str, rows: list[dict], meta: dict, plots: dict, noise: float = 0.10,
                  robust_rows: list[dict] | None = None) -> str:  # fmt: skip
    """The whole report.md (Markdown, plots linked relatively); robust_rows: robustness.json's, for its table."""
    host = meta.get("host")
    hm = meta.get("devices", {}).get(host, {})
    ref = meta.get("reference") or {}
    pk = hm.get("packages", {})
    out = [f"# Benchmark: {run_name}", ""]
    versions = (f"Python {hm.get('python')}, LiteRT {pk.get('ai-edge-litert') or pk.get('tflite-runtime')}, "
                f"onnxruntime {pk.get('onnxruntime')}, numpy {pk.get('numpy')}, "
                f"OpenCV {pk.get('opencv-python-headless') or pk.get('opencv-python')}")  # fmt: skip
    out.append(f"Measured on **{host}** ({hm.get('cpu_model')}, {hm.get('cpu_count')} cores, {versions}) at "
               f"{hm.get('created')}; load average {hm.get('load_average')} before, {meta.get('load_average_after')} "
               "after. Latencies on a machine shared with other jobs are indicative.")  # fmt: skip
    others = [d for d in devices(rows) if d != host]
    if others:
        out.append(f"\nMerged from other devices: {', '.join(others)} (their top-1 and agreement are this run's, "
                   "measured on the same artifact file; their latencies are their own).")  # fmt: skip
    if ref:
        top1 = f", test top-1 {ref['top1']:.2%}" if ref.get("top1") is not None else ""
        out.append(f"\nTest set: {meta.get('n_test')} images. Agreement reference: {ref.get('name')}{top1}.")
    out += robustness_headline(meta)
    out += ["", "## int8 against float", ""]
    out.append("Each int8 artifact against the float32 artifact of the same runtime, on the same device and at the "
               "same thread count (the one where the int8 artifact is fastest):")  # fmt: skip
    out += headline(rows, noise) or ["\nNo int8 artifact was measured with its float counterpart."]
    out += ["", "Every reduced-precision artifact against float32, at every thread count:", "", ratio_table(rows)]
    out += ["## Threads", ""] + (threads_section(rows, meta, noise) or ["Only one thread count was measured."])
    loop = loop_section(rows, cores={d: m.get("cpu_count") for d, m in meta.get("devices", {}).items()}, noise=noise)
    if loop:
        out += ["", "## Camera loop", "", "edge's own loop (edge.app.run_loop) classifying every frame of a generated "
                "640x480 video: test images on this machine, synthetic frames on other devices "
                "(benchmarks.device.latency); under it, where measured, a one-thread loop over the same video "
                "(benchmarks.device.loop.measure_serial_loop).", *loop]  # fmt: skip
    out += robustness_section(rows, meta, robust_rows)
    if plots:
        out += ["", "## Plots", ""]
        for name in plots:
            out += [f"### {PLOTS.get(name, name)}", "", f"![{PLOTS.get(name, name)}]({name})", ""]
    out += ["## Results", ""]
    for dev in devices(rows):
        out += [f"### {dev}", "", format_table([r for r in rows if r["device"] == dev], with_device=False)]
    unpublished = meta.get("not_published") or []
    errors = [r for r in rows if r.get("error")]
    if unpublished or errors:
        out += ["## Not measured", ""]
        out += [f"- {name}: not published by export (skipped or failed its parity gate)" for name in unpublished]
        out += [f"- {r['format']} ({r['device']}, {threads_label(r['threads'])}): {r['error']}" for r in errors]
    untimed = [r for r in rows if not is_timed(r) and not r.get("error")]
    out += [f"- {r['format']} ({r['device']}): no latency" for r in untimed]
    return "\n".join(out).rstrip() + "\n"
