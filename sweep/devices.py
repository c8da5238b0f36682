"""Raspberry Pi latency, predicted from one table of published figures (each with its source) when no Pi is at hand.

    figure = DEVICES["pi4"]                          # MobileNetV2 1.0 at 224, float32, XNNPACK, 4 threads: 44 ms
    macs, how = macs_m(0.5, 128)                     # (32, "table") from the MobileNetV2 paper's table
    ms = predict_ms(figure, macs, speed_ratio=0.45)  # 44 x 32/300 x 0.45, the int8/float ratio measured here

The model: a MobileNetV2's latency on a board is the board's reference figure (MobileNetV2 1.0 at 224, float32)
scaled by the model's multiply-accumulates over the reference's, times how much faster or slower this artifact
is than its float32 counterpart when both are measured here (same runtime, same thread count; 1 for float32).
That assumes (a) latency follows MACs within the MobileNetV2 family; the smallest models (0.35 at 96: 11 M MACs)
spend a larger share of their time in memory-bound layers and per-operator overhead, so their prediction is likely
optimistic; (b) the int8/float ratio measured on this machine carries over to the Pi's Arm cores, which it does
only roughly: x86 and Arm int8 kernels differ, and even on one Pi 4 XNNPACK's own table gives int8/fp32 0.49 on
32-bit Raspbian and 0.37 on 64-bit (20/41 and 17/46 ms, Feb 8, 2022);
(c) the figure is XNNPACK's (LiteRT), so onnxruntime float32 artifacts are taken to run as fast on the Pi, and
their latency_source says so.
Every predicted figure is labelled "predicted: ..." and a row measured on the board itself
(`python -m benchmarks.device.latency --device-name pi4`) replaces it.

Standard library, plus the formats table's float32 counterparts (benchmarks.compare.float_counterpart).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.compare import float_counterpart

# Multiply-accumulates (millions) per width and input side: the "MACs (M)" column of the table of the paper's 22
# checkpoints (MobileNetV2, Sandler et al., CVPR 2018, https://arxiv.org/abs/1801.04381) as reproduced in the Keras
# applications docstring (tf_keras/src/applications/mobilenet_v2.py, also keras/applications/mobilenet_v2.py).
MACS_M: dict[tuple[float, int], float] = {
    (1.4, 224): 582, (1.3, 224): 509,
    (1.0, 224): 300, (1.0, 192): 221, (1.0, 160): 154, (1.0, 128): 99, (1.0, 96): 56,
    (0.75, 224): 209, (0.75, 192): 153, (0.75, 160): 107, (0.75, 128): 69, (0.75, 96): 39,
    (0.5, 224): 97, (0.5, 192): 71, (0.5, 160): 50, (0.5, 128): 32, (0.5, 96): 18,
    (0.35, 224): 59, (0.35, 192): 43, (0.35, 160): 30, (0.35, 128): 20, (0.35, 96): 11,
}  # fmt: skip
MACS_SOURCE = "MobileNetV2 paper table (Keras applications docstring)"
REFERENCE_ALPHA, REFERENCE_SIZE = 1.0, 224  # the model every device figure below is quoted for


class DeviceError(ValueError):
    """A width the MACs table cannot scale, or a device not in the table; the message lists what is known."""


@dataclass(frozen=True)
class DeviceFigure:
    """One board's published latency for MobileNetV2 1.0 at 224, float32, and where it comes from."""

    name: str  # --device value, and the `device` column of predicted rows
    board: str  # what the figure was measured on
    cores: int  # CPU cores: the sweep's default interpreter threads for this board
    ms: float  # MobileNetV2 1.0 224 float32 latency, multi-threaded (all cores), XNNPACK, milliseconds
    source: str  # short label, used in the latency_source column: "predicted: <source>"
    citation: str  # where exactly the figure (or the ratio it is derived with) is published
    derivation: str = ""  # "" when `ms` is quoted as published; else how it was derived from another entry


_XNNPACK_2020 = (
    "https://github.com/google/XNNPACK/blob/5b5a0624a80655e40aff8e96de97706aeb008281/README.md "
    '(section "Raspberry Pi", the table as committed on 2020-02-13; replaced on 2020-05-23)'
)
_RPI_BCM2712 = ("https://github.com/raspberrypi/documentation/blob/07b21c318691c1f0d9cf62469f930ab2253b76ef/"
                "documentation/asciidoc/computers/processors/bcm2712.adoc, published as "
                "https://www.raspberrypi.com/documentation/computers/processors.html#bcm2712")  # fmt: skip
PI5_SPEEDUP_OVER_PI4 = 2.0  # Raspberry Pi: "a performance uplift of 2-3x over Raspberry Pi 4 for common CPU or
#   I/O-intensive use cases". The low end of that range, so a Pi 5 prediction errs slow (a pick that fits on paper
#   still fits). It is a general CPU claim, not a neural-network one: measure on a Pi 5 and --merge the rows.

DEVICES: dict[str, DeviceFigure] = {
    "pi4": DeviceFigure(
        name="pi4",
        board="Raspberry Pi 4 (BCM2711, 4x Cortex-A72 1.5 GHz), Raspbian Buster",
        cores=4,
        ms=44.0,
        source="XNNPACK RPi 4 MobileNetV2 1.0 224 fp32 44 ms",
        citation='XNNPACK README, "Raspberry Pi" table: multi-threaded, benchmarked February 12, 2020 with '
        "end2end-bench --benchmark_min_time=5 on a Raspbian Buster build, randomized weights; MobileNet v2 1.0X: "
        "RPi 2 197 ms, RPi 3+ 79 ms, RPi 4 44 ms. " + _XNNPACK_2020 + ". Later versions of the same table "
        "(benchmarked Feb 8, 2022) give RPi 4 41 ms (32-bit) and 46 ms (ARM64) fp32, and INT8 20 / 17 ms.",
    ),
    "pi5": DeviceFigure(
        name="pi5",
        board="Raspberry Pi 5 (BCM2712, 4x Cortex-A76 2.4 GHz)",
        cores=4,
        ms=44.0 / PI5_SPEEDUP_OVER_PI4,
        source=f"XNNPACK RPi 4 MobileNetV2 1.0 224 fp32 44 ms / {PI5_SPEEDUP_OVER_PI4:g} (RPi 5: 2-3x RPi 4)",
        citation="A ratio, not a measurement: the pi4 entry's 44 ms divided by "
        f"{PI5_SPEEDUP_OVER_PI4:g}, the low end of Raspberry Pi's own statement on BCM2712: \"In aggregate, the new "
        "features present in BCM2712 deliver a performance uplift of 2-3x over Raspberry Pi 4 for common CPU or "
        'I/O-intensive use cases." ' + _RPI_BCM2712 + ". No published TFLite/XNNPACK MobileNetV2 figure for the "
        "Pi 5 was found (ncnn's benchmark README lists Pi 4 and Pi 5 mobilenet_v2, 61.9 and 10.5 ms, but from "
        "ncnn versions three years apart, so their ratio is not the boards' alone).",
        derivation=f"pi4.ms / {PI5_SPEEDUP_OVER_PI4:g}",
    ),
}
TARGETS = (*DEVICES, "this")  # "this": the machine running the sweep; its measured latency is used as is


def macs_m(alpha: float, size: int) -> tuple[float, str]:
    """Multiply-accumulates (millions) of MobileNetV2 at width `alpha` and input side `size`, and how it was had.

    From the table when the pair is in it ("table"). Otherwise derived from the same width's 224 figure,
    scaled by (size / 224)^2: the convolutions' cost grows with the number of output pixels. The paper's own
    rows follow that closely (1.0: 300 at 224, 300 x (96/224)^2 = 55 at 96 against 56 in the table).

    Raises:
        DeviceError: a width the table has no 224 figure for.
    """
    key = (float(alpha), int(size))
    if key in MACS_M:
        return float(MACS_M[key]), "table"
    base = MACS_M.get((float(alpha), REFERENCE_SIZE))
    if base is None:
        widths = ", ".join(f"{a:g}" for a in sorted({a for a, _ in MACS_M}))
        raise DeviceError(f"width {alpha:g} is not in the MobileNetV2 MACs table (widths {widths}): its Pi latency "
                          "cannot be predicted; pick one of those widths, or use --device this")  # fmt: skip
    derived = base * (size / REFERENCE_SIZE) ** 2
    return round(derived, 3), f"derived: {alpha:g} at 224 ({base:g} M) x ({size}/224)^2"


def device_figure(name: str) -> DeviceFigure:
    """The table entry of a board.

    Raises:
        DeviceError: a name not in DEVICES; the message lists them.
    """
    if name not in DEVICES:
        raise DeviceError(f"no latency figure for device {name!r}: choose from {', '.join(TARGETS)}")
    return DEVICES[name]


def predict_ms(figure: DeviceFigure, macs: float, speed_ratio: float = 1.0) -> float:
    """Predicted latency on `figure`'s board: reference ms x (macs / reference MACs) x speed_ratio.

    Args:
        figure: the board's entry in DEVICES.
        macs: the model's multiply-accumulates, millions (macs_m()).
        speed_ratio: the artifact's latency over its float32 counterpart's, both measured here with the same
            runtime and thread count (int8 ~0.3-0.7); 1 for a float32 artifact.
    """
    reference = MACS_M[(REFERENCE_ALPHA, REFERENCE_SIZE)]
    return figure.ms * (macs / reference) * speed_ratio


def predicted_label(figure: DeviceFigure, macs_how: str, scaled: bool, runtime: str = "litert") -> str:
    """The latency_source text of a predicted figure: what it rests on, in a few words."""
    text = f"predicted: {figure.source} x MACs/300" + (" (MACs derived)" if macs_how != "table" else "")
    text += " x ratio to float32 measured here" if scaled else ""
    # The figure is XNNPACK's; another runtime's float32 is taken to run as fast, which is an assumption.
    return text + (f"; {runtime} float32 taken as fast as XNNPACK" if runtime != "litert" else "")


def measured_label(device: str) -> str:
    return f"measured: {device}"


def _measured_match(row: dict, measured: list[dict], device: str) -> dict | None:
    """The device's timed row of the same artifact (sha256 and format): at the row's thread count if there is
    one, else its fastest."""
    same = [m for m in measured if m.get("device") == device and m.get("format") == row["format"]
            and row.get("sha256") and m.get("sha256") == row["sha256"] and m.get("latency_ms_median")]  # fmt: skip
    at_threads = [m for m in same if m.get("threads") == row.get("threads")]
    return min(at_threads or same, key=lambda m: m["latency_ms_median"]) if same else None


def add_device_latency(rows: list[dict], target: str, measured: list[dict] = (), measured_name: str = "") -> None:
    """Fills latency_ms_device and latency_source of sweep rows, in place.

    A row measured on the device (a `measured` row named `measured_name`, default `target`, of the same artifact
    by sha256) gives its median. Otherwise `target` "this" takes latency_ms_here as measured; a board in DEVICES
    gets predict_ms(), scaled by the row's latency here over that of its float32 counterpart of the same grid point,
    runtime and thread count (1 for a float32 format). A row with an error, or not timed here, gets neither.

    Args:
        rows: flat dicts with point, format, runtime, threads, macs_m, macs_source, latency_ms_here, sha256, error.
        target: "pi4", "pi5" (keys of DEVICES) or "this".
        measured: benchmark rows (benchmarks.device.latency / results.json) from any device.
        measured_name: the device name of the rows that count as the target's.
    """
    name = measured_name or target
    figure = None if target == "this" else device_figure(target)
    here = {(r["point"], r["format"], r["runtime"], r["threads"]): r for r in rows if r.get("latency_ms_here")}
    for r in rows:
        if r.get("error") or not r.get("latency_ms_here"):
            continue
        m = _measured_match(r, list(measured), name) if figure is not None else None
        if m is not None:
            r["latency_ms_device"] = round(m["latency_ms_median"], 4)
            r["latency_source"] = measured_label(name) + (f", {m['threads']} threads" if m["threads"] != r["threads"]
                                                          else "")  # fmt: skip
        elif figure is None:
            r["latency_ms_device"], r["latency_source"] = r["latency_ms_here"], measured_label(r["device"])
        elif r.get("macs_m") is None:
            r["error"] = f"predict: no MACs figure for width {r.get('alpha')}"
        else:
            ref = float_counterpart(r["format"])
            ratio = 1.0
            if ref is not None:
                f = here.get((r["point"], ref.name, r["runtime"], r["threads"]))
                if f is None:
                    r["error"] = (
                        f"predict: {ref.name} of {r['point']} was not measured here, and {r['format']}'s latency "
                        f"on {target} is scaled by its ratio to it; add {ref.name} to --formats"
                    )
                    continue
                ratio = r["latency_ms_here"] / f["latency_ms_here"]
            r["latency_ms_device"] = round(predict_ms(figure, r["macs_m"], ratio), 4)
            r["latency_source"] = predicted_label(
                figure, r["macs_source"], ref is not None, r.get("runtime") or "litert"
            )
