"""Export: every format published with a valid manifest, the parity gate both ways, reliability, and the steps that
need no converted model (the preprocessing read from the model, labels, missing inputs)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contracts.formats import FORMATS, resolve_formats
from contracts.manifest import ChecksumError, ManifestError, load_manifest, verify_checksum


@pytest.mark.slow
def test_every_format_is_published_with_its_manifest(exported_run: Path):
    m = load_manifest(exported_run / "export")
    assert m.formats == list(FORMATS)
    assert m.labels == ["blue", "green", "red"] and m.image_size == 32 and m.weights_used == "none"
    settings = json.loads((exported_run / "settings.json").read_text())
    assert m.settings_sha256 == settings["settings_sha256"]
    assert {"tensorflow", "onnxruntime", "ai-edge-litert"} <= set(m.tool_versions)
    assert m.preprocessing.normalization == "inside the model (Rescaling 1/127.5, offset -1: 0-255 becomes [-1, 1])"
    assert m.preprocessing.input_range == [0.0, 255.0] and m.preprocessing.color_order == "RGB"
    for a in m.artifacts:
        fmt = FORMATS[a.format]
        path = exported_run / "export" / a.file
        verify_checksum(path, a)
        assert a.size_bytes == path.stat().st_size
        assert a.parity["passed"] and a.parity["agreement"] >= fmt.min_agreement
        if fmt.max_abs_diff is not None:
            assert a.parity["max_abs_diff"] <= fmt.max_abs_diff
        assert a.input.shape == [1, 32, 32, 3] and a.output.shape[-1] == 3
        assert a.input.dtype == fmt.input_dtype and a.output.dtype == fmt.output_dtype
        if fmt.quantization == "int8" and fmt.runtime == "litert":  # raw pixels in, what MediaPipe feeds
            assert (a.input.dtype, a.input.scale, a.input.zero_point) == ("uint8", 1.0, 0)
            assert a.output.dtype == "uint8" and a.output.scale == pytest.approx(1 / 256)
    assert not list((exported_run / "export").glob(".*partial*"))


@pytest.mark.slow
def test_every_published_artifact_describes_itself(exported_run: Path):
    """The file the gate checked carries its labels and input: TFLite metadata, ONNX metadata_props."""
    import onnx

    from contracts.tflite_metadata import read_metadata

    m = load_manifest(exported_run / "export")
    for a in m.artifacts:
        path = exported_run / "export" / a.file
        if a.runtime == "litert":
            meta = read_metadata(path)
            assert meta.labels == m.labels and (meta.mean, meta.std, meta.color_space) == ([0.0], [1.0], "RGB")
            assert meta.name == m.run and a.format in meta.description
            assert meta.version == f"sha256:{a.source_sha256[:12]}"
            continue
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["labels"]) == m.labels and props["image_size"] == str(m.image_size)
        assert (props["layout"], props["input_dtype"], props["color_order"]) == ("NHWC", "float32", "RGB")
        assert json.loads(props["preprocessing"])["normalization"] == m.preprocessing.normalization
        assert "tf2onnx" in props["producer"] and ("onnxruntime" in props["producer"]) == (a.format == "onnx_int8")


@pytest.mark.slow
def test_published_artifacts_agree_with_keras(exported_run: Path):
    """Recomputed here from the published files, independently of the gate's own figures."""
    import tf_keras as keras

    from export.runtime import predict
    from train.data import load_split

    x, y, _ = load_split(exported_run, "test")
    ref = keras.models.load_model(str(exported_run / "model_float.keras"), compile=False).predict(
        x.astype(np.float32), verbose=0
    )
    float_top1 = np.mean(ref.argmax(1) == y)
    assert float_top1 >= 0.9
    for name in ("tflite_fp32", "onnx_fp32"):
        p = predict(exported_run / "export" / FORMATS[name].filename, x)
        assert np.abs(p - ref).max() <= 1e-4, name
    for name, drop in (("tflite_int8", 0.02), ("tflite_int8_qat", 0.01), ("onnx_int8", 0.02)):
        p = predict(exported_run / "export" / FORMATS[name].filename, x)
        assert np.mean(p.argmax(1) == y) >= float_top1 - drop - 1e-9, name
        assert np.allclose(p.sum(1), 1, atol=0.05), f"{name} outputs are not dequantized probabilities"


@pytest.mark.slow
def test_corrupted_artifact_is_caught_by_its_checksum(exported_run: Path, tmp_path):
    m = load_manifest(exported_run / "export")
    entry = m.entry("tflite_int8")
    bad = tmp_path / entry.file
    data = bytearray((exported_run / "export" / entry.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"tflite_int8\.tflite does not match its manifest"):
        verify_checksum(bad, entry)


@pytest.mark.slow
def test_manifest_of_another_schema_is_refused(exported_run: Path, tmp_path):
    doc = json.loads((exported_run / "export" / "manifest.json").read_text())
    doc["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="schema version 99"):
        load_manifest(tmp_path)


@pytest.fixture()
def run_copy(exported_run: Path, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(exported_run, dst, symlinks=True)
    return dst


def _export(run: Path, formats: str, **kw):
    from export.run import export_run
    from export.settings import ExportSettings

    return export_run(ExportSettings(run=str(run), formats=formats, calibration_images=32, **kw))


@pytest.mark.slow
def test_up_to_date_artifacts_are_skipped_unless_forced(run_copy: Path):
    f = run_copy / "export" / "onnx_fp32.onnx"
    before = f.stat().st_mtime_ns
    assert _export(run_copy, "tflite_fp32,onnx_fp32")["up_to_date"] == ["tflite_fp32", "onnx_fp32"]
    assert f.stat().st_mtime_ns == before
    assert load_manifest(run_copy / "export").formats == list(FORMATS), "a partial export must keep the others"
    assert _export(run_copy, "onnx_fp32", force=True)["published"] == ["onnx_fp32"]
    assert f.stat().st_mtime_ns != before
    verify_checksum(f, load_manifest(run_copy / "export").entry("onnx_fp32"))


@pytest.mark.slow
def test_artifacts_from_before_metadata_and_uint8_are_not_up_to_date(run_copy: Path):
    """An export of an older toolkit: a .tflite without metadata, an int8 model with int8 input. Both are redone."""
    from contracts.manifest import sha256_file
    from contracts.tflite_metadata import METADATA_NAME, read_metadata
    from export.tflite_metadata import pack_model, unpack_model

    exp = run_copy / "export"
    fp32 = exp / "tflite_fp32.tflite"
    model = unpack_model(fp32.read_bytes())
    model.metadata = [m for m in model.metadata if m.name != METADATA_NAME.encode()]
    fp32.write_bytes(pack_model(model))
    doc = json.loads((exp / "manifest.json").read_text())
    for a in doc["artifacts"]:
        if a["format"] == "tflite_fp32":
            a["sha256"] = sha256_file(fp32)  # the manifest of that export listed the file as it was
        if a["format"] == "tflite_int8":
            a["input"].update(dtype="int8", scale=0.98, zero_point=-128)
    (exp / "manifest.json").write_text(json.dumps(doc))
    assert _export(run_copy, "tflite_fp32,tflite_int8")["published"] == ["tflite_fp32", "tflite_int8"]
    assert read_metadata(fp32).labels == load_manifest(exp).labels
    assert load_manifest(exp).entry("tflite_int8").input.dtype == "uint8"


@pytest.mark.slow
def test_gate_refuses_a_format_and_keeps_the_others(run_copy: Path, monkeypatch, capsys):
    import export.run
    from export.cli import main

    strict = {"onnx_int8": dataclasses.replace(FORMATS["onnx_int8"], min_agreement=1.01)}
    monkeypatch.setattr(
        export.run, "resolve_formats", lambda names: [strict.get(f.name, f) for f in resolve_formats(names)]
    )
    code = main(["--run", str(run_copy), "--formats", "onnx_fp32,onnx_int8", "--force", "--calibration-images", "32"])
    out = capsys.readouterr().out
    assert code == 1
    assert "error: onnx_int8 failed its parity gate" in out and "agreement" in out and "< 1.01" in out
    assert "onnx_fp32: published" in out
    assert not (run_copy / "export" / "onnx_int8.onnx").exists(), "a refused artifact must not stay on disk"
    m = load_manifest(run_copy / "export")
    assert "onnx_int8" not in m.formats and "onnx_fp32" in m.formats and "tflite_int8" in m.formats


@pytest.mark.slow
def test_interrupted_export_publishes_nothing_and_rerun_finishes(run_copy: Path, monkeypatch):
    import export.onnx

    exp = run_copy / "export"
    (exp / "onnx_fp32.onnx").unlink()
    manifest_before = (exp / "manifest.json").read_bytes()

    def killed(model, calibration, path, onnx_opset):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.onnx, "convert_fp32", killed)
    with pytest.raises(KeyboardInterrupt):
        _export(run_copy, "onnx_fp32")
    assert not (exp / "onnx_fp32.onnx").exists()
    assert not list(exp.glob(".*partial*"))
    assert (exp / "manifest.json").read_bytes() == manifest_before
    # A hard kill leaves the temporary file; it never looks finished, and the next export removes it.
    (exp / ".onnx_fp32.x1.partial.onnx").write_bytes(b"half")
    monkeypatch.undo()
    assert _export(run_copy, "onnx_fp32")["published"] == ["onnx_fp32"]
    assert not list(exp.glob(".*partial*"))
    verify_checksum(exp / "onnx_fp32.onnx", load_manifest(exp).entry("onnx_fp32"))


@pytest.mark.slow
def test_run_without_qat_model_skips_qat_formats(run_copy: Path):
    (run_copy / "model_qat.h5").unlink()
    r = _export(run_copy, "tflite_int8_qat,onnx_fp32", force=True)
    assert "no QAT model" in r["skipped"]["tflite_int8_qat"] and r["published"] == ["onnx_fp32"]


def test_missing_run_and_unknown_format_are_clear_errors(tmp_path, capsys):
    from export.cli import main

    assert main(["--run", str(tmp_path / "nope")]) == 2
    assert "nope not found: pass --run runs/NAME" in capsys.readouterr().out
    assert main(["--run", str(tmp_path), "--formats", "tflite_int4"]) == 2
    assert "unknown format tflite_int4: choose from all, tflite_fp32" in capsys.readouterr().out


def _model_with(layer=None, size: int = 8):
    import tf_keras as keras

    x = inputs = keras.Input((size, size, 3), name="image")
    if layer is not None:
        x = layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_manifest_preprocessing_is_read_from_the_model():
    """What the model's own preprocessing layer does, from its config: train's MobileNetV2, and any other scale."""
    import tf_keras as keras

    from export.errors import ExportError
    from export.preprocessing import preprocessing_of
    from train.model import PREPROCESS_NAME, build_model

    model = build_model(3, 32, alpha=0.35, weights="none")
    cfg = model.get_layer(PREPROCESS_NAME).get_config()
    assert (cfg["scale"] * 127.5, cfg["offset"]) == pytest.approx((1.0, -1.0))
    p = preprocessing_of(model)
    assert p.normalization == "inside the model (Rescaling 1/127.5, offset -1: 0-255 becomes [-1, 1])"
    assert (p.color_order, p.input_range, p.layout) == ("RGB", [0.0, 255.0], "NHWC")
    other = preprocessing_of(_model_with(keras.layers.Rescaling(1 / 255, name=PREPROCESS_NAME)))
    assert other.normalization == "inside the model (Rescaling 1/255, offset 0: 0-255 becomes [0, 1])"
    with pytest.raises(ExportError, match=r"m\.keras has no 'preprocess' layer.*python -m train"):
        preprocessing_of(_model_with(), "m.keras")


def test_vgg16_preprocessing_is_read_from_its_convolution():
    from export.preprocessing import preprocessing_of
    from train.model import build_model

    p = preprocessing_of(build_model(3, 32, backbone="vgg16", weights="none"))
    want = "inside the model (fixed 1x1 convolution: RGB to BGR, minus the means [103.939, 116.779, 123.68])"
    assert p.normalization == want


def test_labels_are_checked_against_the_model_outputs(tmp_path):
    from export.errors import ExportError
    from export.run import read_labels

    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    assert read_labels(tmp_path, _model_with()) == ["cat", "dog", "bird"]
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(ExportError, match=r"labels\.txt lists 2 labels but the model has 3 outputs"):
        read_labels(tmp_path, _model_with())


def test_a_run_without_its_float_model_is_one_clear_error(tmp_path):
    from export.errors import ExportError
    from export.run import load_models

    with pytest.raises(ExportError, match=r"model_float\.keras not found: .*re-run `python -m train`"):
        load_models(tmp_path, need_qat=True)
