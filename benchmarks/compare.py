"""What the rows say: each reduced-precision artifact against its float counterpart, and threads against one
thread, only ever between rows of the same device (and the same runtime and thread count).

    comparisons(rows)        # [{device, format, float_format, threads, size_ratio, speedup, top1_delta_points, ...}]
    thread_scaling(rows)     # [{device, format, runtime, latency by threads, speedup vs the fewest threads}]
"""

from __future__ import annotations

from contracts.formats import FORMATS, ExportFormat


def float_counterpart(name: str) -> ExportFormat | None:
    """The float32 format of the same runtime and file type (tflite_int8 -> tflite_fp32), from the formats table."""
    fmt = FORMATS.get(name)
    if fmt is None or fmt.quantization == "none":
        return None
    for other in FORMATS.values():
        if other.quantization == "none" and other.runtime == fmt.runtime:
            return other
    return None


def is_timed(row: dict) -> bool:
    return bool(row.get("latency_ms_median"))


def devices(rows: list[dict]) -> list[str]:
    """Device names in the order they first appear (the measuring machine first)."""
    return list(dict.fromkeys(r["device"] for r in rows))


def comparisons(rows: list[dict]) -> list[dict]:
    """Every timed non-float row against the float row of the same device, runtime and thread count."""
    index = {(r["device"], r["format"], r["runtime"], r["threads"]): r for r in rows if is_timed(r)}
    out = []
    for r in rows:
        ref_fmt = float_counterpart(r["format"])
        if ref_fmt is None or not is_timed(r):
            continue
        f = index.get((r["device"], ref_fmt.name, r["runtime"], r["threads"]))
        if f is None:
            continue
        both_top1 = r.get("top1") is not None and f.get("top1") is not None
        out.append({
            "device": r["device"],
            "format": r["format"],
            "quantization": r.get("quantization") or FORMATS[r["format"]].quantization,
            "float_format": f["format"],
            "runtime": r["runtime"],
            "threads": r["threads"],
            "size_mb": r.get("size_mb"),
            "float_size_mb": f.get("size_mb"),
            "size_ratio": round(f["size_mb"] / r["size_mb"], 6) if r.get("size_mb") and f.get("size_mb") else None,
            "latency_ms_median": r["latency_ms_median"],
            "float_latency_ms_median": f["latency_ms_median"],
            "speedup": round(f["latency_ms_median"] / r["latency_ms_median"], 6),
            "top1": r.get("top1"),
            "float_top1": f.get("top1"),
            "top1_delta_points": round((r["top1"] - f["top1"]) * 100, 2) if both_top1 else None,
            "agreement": r.get("agreement"),
            "reference": r.get("reference"),
        })  # fmt: skip
    return out


def thread_scaling(rows: list[dict]) -> list[dict]:
    """Per device and artifact/runtime: median latency at each thread count, and the speed-up over the fewest."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if is_timed(r):
            groups.setdefault((r["device"], r["format"], r["runtime"]), []).append(r)
    out = []
    for (device, fmt, runtime), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["threads"])
        base = rs[0]
        best = min(rs, key=lambda r: r["latency_ms_median"])
        out.append({
            "device": device, "format": fmt, "runtime": runtime,
            "latency_ms": {r["threads"]: r["latency_ms_median"] for r in rs},
            "speedup": {r["threads"]: round(base["latency_ms_median"] / r["latency_ms_median"], 6) for r in rs},
            "base_threads": base["threads"], "best_threads": best["threads"],
        })  # fmt: skip
    return out


def best_rows(rows: list[dict], key: str = "latency_ms_median") -> list[dict]:
    """Per device and artifact/runtime, the timed row with the lowest `key` (its best thread count)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r.get(key) is None:
            continue
        k = (r["device"], r["format"], r["runtime"])
        if k not in best or r[key] < best[k][key]:
            best[k] = r
    return list(best.values())


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats on both (lower latency, higher accuracy),
    ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_acc = [], float("-inf")
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front
