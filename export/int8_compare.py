"""python -m export.int8_compare: where post-training int8 loses accuracy, and which remedy wins, on one run.

python -m export.int8_compare --run runs/latest            # runs/latest/export/int8_comparison.{md,json,png}

Every variant is made from the same float model and scored on the same test split, in LiteRT (onnxruntime for
ONNX), against the float Keras model:
- ptq: what export publishes as tflite_int8 (200 calibration images, per-channel weights, int8 inside, uint8 I/O);
- ptq_calib_N: the same with more calibration images (calibration set size);
- ptq_per_tensor: one scale per weight tensor (what per-channel weights are worth);
- ptq_float_K: the K tensors with the largest quantization error (TFLite's QuantizationDebugger, RMSE / scale)
  kept in float (selective quantization; the debugger's model takes and gives float);
- qat: the run's quantization-aware model (tflite_int8_qat), if the run has one;
- onnx_int8, onnx_int8_calib_N: onnxruntime's static QDQ int8, with the export's and the larger calibration set.
The per-layer error of plain PTQ is written too (int8_layer_error.png), so a person can see where the points go.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from contracts.atomic import atomic_path, write_json, write_text
from contracts.console import first_line, log
from train.runfolder import FLOAT_MODEL


def layer_errors(model, calibration: np.ndarray) -> list[dict]:
    """Per-tensor quantization error of plain PTQ on calibration images (TFLite's QuantizationDebugger).

    Returns:
        One dict per quantized tensor, worst first: tensor name, op, RMSE, scale and RMSE / scale (the error in
        quantization steps; about 0.29 is the rounding error of a uniform quantizer, larger means clipping or
        accumulated error from the layers before).
    """
    import tensorflow as tf

    from export.tflite import int8_converter, representative_dataset  # the converter export publishes tflite_int8 with

    conv = int8_converter(model, calibration, int8_only=False)
    data = representative_dataset(calibration)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=data)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"]) if r.get("scale") else 0.0
        mse = float(r["mean_squared_error"])
        rows.append({"tensor": r["tensor_name"], "op": r["op_name"], "rmse": float(np.sqrt(mse)), "scale": scale,
                     "rmse_per_scale": float(np.sqrt(mse) / scale) if scale else 0.0})  # fmt: skip
    return sorted(rows, key=lambda r: -r["rmse_per_scale"])


def _selective(model, calibration: np.ndarray, denylist: list[str]) -> bytes:
    import tensorflow as tf

    from export.tflite import int8_converter, representative_dataset  # the converter export publishes tflite_int8 with

    conv = int8_converter(model, calibration, int8_only=False)
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=representative_dataset(calibration), debug_options=opts
    )
    return debugger.get_nondebug_quantized_model()  # float in and out: the debugger ignores the I/O types


def _score(path: Path, test_x, test_y, float_pred) -> dict:
    from export.runtime import predict

    pred = predict(path, test_x).argmax(1)
    return {"top1": round(float(np.mean(pred == test_y)), 4), "agreement": round(float(np.mean(pred == float_pred)), 4),
            "size_mb": round(path.stat().st_size / 1e6, 3)}  # fmt: skip


def compare_int8(run: str | Path, calibration_images: int = 200, large_calibration: int = 1000,
                 float_layers: tuple[int, ...] = (3, 10), only: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """Builds and scores every variant (see the module docstring); writes int8_comparison.{json,md} and a plot.

    only: build just the variants with these names (default: all).
    """
    import tf_keras as keras

    from export.onnx import convert_int8 as onnx_int8
    from export.tflite import int8_converter, int8_model
    from train.data import load_split, split_length
    from train.qat import load_qat_model
    from train.runfolder import QAT_MODEL
    from train.settings import load_settings

    run = Path(run)
    out_dir = run / "export"
    ts = load_settings(run)
    model = keras.models.load_model(str(run / FLOAT_MODEL), compile=False)
    test_x, test_y, _ = load_split(run, "test")
    order = np.random.default_rng(ts.seed).permutation(split_length(run, "train"))
    train_x, _, _ = load_split(run, "train", indices=order[: max(calibration_images, large_calibration)])
    calib = train_x[:calibration_images]  # the same images export calibrates on (export.run.calibration_indices)
    calib_large = train_x[:large_calibration]
    float_probs = model.predict(test_x.astype(np.float32), batch_size=64, verbose=0)
    float_pred = float_probs.argmax(1)
    float_top1 = float(np.mean(float_pred == test_y))
    log(f"{run.name}: float top-1 {float_top1:.4f} on {len(test_y)} test images")

    t = time.time()
    errors = layer_errors(model, calib)
    log(f"per-layer error: {len(errors)} tensors ({time.time() - t:.0f} s); worst: "
         + ", ".join(f"{layer_name(e['tensor'])} {e['rmse_per_scale']:.2f}" for e in errors[:3]))  # fmt: skip

    variants: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def add(name: str, describe: str, make) -> None:
            if only and name not in only:
                return
            path = tmp / (name + (".onnx" if name.startswith("onnx") else ".tflite"))
            t0 = time.time()
            try:
                make(path)
                variants[name] = dict(_score(path, test_x, test_y, float_pred), what=describe)
            except Exception as e:  # a variant that cannot be built is a row with its error, not a crash
                variants[name] = {"what": describe, "error": first_line(e)}
            v = variants[name]
            log(f"{name}: " + (f"top-1 {v['top1']:.4f} ({(v['top1'] - float_top1) * 100:+.2f} points), agreement "
                                f"{v['agreement']:.4f}" if "top1" in v else f"failed: {v['error']}")
                 + f" ({time.time() - t0:.0f} s)")  # fmt: skip

        add("ptq", f"TFLite PTQ, {len(calib)} calibration images (= tflite_int8)",
            lambda p: p.write_bytes(int8_model(int8_converter(model, calib))))  # fmt: skip
        add(f"ptq_calib_{len(calib_large)}", f"TFLite PTQ, {len(calib_large)} calibration images",
            lambda p: p.write_bytes(int8_model(int8_converter(model, calib_large))))  # fmt: skip
        add("ptq_per_tensor", "TFLite PTQ, per-tensor weights",
            lambda p: p.write_bytes(int8_model(int8_converter(model, calib, per_channel=False))))  # fmt: skip
        for k in float_layers:
            names = [e["tensor"] for e in errors[:k]]
            add(f"ptq_float_{k}", f"TFLite PTQ, the {k} worst tensors kept float",
                lambda p, names=names: p.write_bytes(_selective(model, calib, names)))  # fmt: skip
        if (run / QAT_MODEL).is_file() and (not only or "qat" in only):
            qat = load_qat_model(run / QAT_MODEL)
            add("qat", "TFLite from quantization-aware training (= tflite_int8_qat)",
                lambda p: p.write_bytes(int8_model(int8_converter(qat, calib))))  # fmt: skip
        add("onnx_int8", f"onnxruntime QDQ per-channel, {len(calib)} images (= onnx_int8)",
            lambda p: onnx_int8(model, calib, p))  # fmt: skip
        add(f"onnx_int8_calib_{len(calib_large)}", f"onnxruntime QDQ per-channel, {len(calib_large)} images",
            lambda p: onnx_int8(model, calib_large, p))  # fmt: skip

    doc = {"run": run.name, "float_top1": round(float_top1, 4), "n_test": len(test_y), "variants": variants,
           "worst_layers": errors[:15]}  # fmt: skip
    write_json(out_dir / "int8_comparison.json", doc)
    write_text(out_dir / "int8_comparison.md", _markdown(doc))
    _plot_errors(errors[:15], out_dir / "int8_layer_error.png", run.name)
    log(f"wrote {out_dir / 'int8_comparison.md'}")
    return doc


def _markdown(doc: dict) -> str:
    lines = [f"# int8 variants of {doc['run']} (float top-1 {doc['float_top1']:.4f}, {doc['n_test']} test images)",
             "", "| variant | what | top-1 | vs float (points) | agreement with float | size MB |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in doc["variants"].items():
        if "top1" in v:
            lines.append(f"| {name} | {v['what']} | {v['top1']:.4f} | {(v['top1'] - doc['float_top1']) * 100:+.2f} "
                         f"| {v['agreement']:.4f} | {v['size_mb']:.2f} |")  # fmt: skip
        else:
            lines.append(f"| {name} | {v['what']} | failed: {v['error']} | | | |")
    lines += ["", "Worst tensors of plain PTQ (RMSE in quantization steps; 0.29 is pure rounding):", "",
              "| layer | op | RMSE / scale |", "|---|---|---|"]  # fmt: skip
    lines += [
        f"| {layer_name(e['tensor'])} | {e['op']} | {e['rmse_per_scale']:.3f} |" for e in doc["worst_layers"][:10]
    ]
    return "\n".join(lines) + "\n"


def layer_name(tensor: str) -> str:
    """The Keras layer a TFLite tensor comes from: "m/block_1_project_BN/FusedBatchNormV3;..." -> block_1_project_BN."""
    parts = tensor.split(";")[0].split("/")
    return parts[1] if len(parts) > 2 else parts[-1]


def _plot_errors(errors: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.35 * len(errors) + 1.2))
    names = [f"{layer_name(e['tensor'])} ({e['op']})" for e in errors]
    ys = np.arange(len(errors))[::-1]  # worst on top; positions, so equal names never merge into one bar
    ax.barh(ys, [e["rmse_per_scale"] for e in errors], color="tab:orange")
    ax.set_yticks(ys, names, fontsize=8)
    ax.axvline(1 / np.sqrt(12), color="gray", ls="--", lw=1, label="rounding alone (0.29)")
    ax.set_xlabel("RMSE against float, in quantization steps")
    ax.set_title(f"{title}: where post-training int8 loses (worst {len(errors)} tensors)")
    ax.legend(loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.int8_compare", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/latest", help="training run folder")
    p.add_argument("--calibration-images", type=int, default=200, help="export's calibration set size")
    p.add_argument("--large-calibration", type=int, default=1000, help="the larger calibration set to compare")
    p.add_argument("--float-layers", default="3,10", help="how many of the worst tensors to keep float, per variant")
    a = p.parse_args(argv)
    if not (Path(a.run) / FLOAT_MODEL).is_file():
        print(f"error: {a.run}/{FLOAT_MODEL} not found: pass --run runs/NAME of a finished training run")
        return 2
    ks = tuple(int(k) for k in a.float_layers.split(",") if k.strip())
    compare_int8(a.run, a.calibration_images, a.large_calibration, ks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
