"""contracts.formats and contracts.manifest as the rest of the house asks them: file names, runtimes, the model to
deploy. Nothing here trains or converts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contracts.formats import (
    BUNDLE_PREFERENCE,
    FORMATS,
    SUFFIXES,
    FormatError,
    format_for_file,
    resolve_formats,
    runtime_for_file,
)
from contracts.manifest import (
    SCHEMA_VERSION,
    ArtifactEntry,
    Manifest,
    ManifestError,
    Preprocessing,
    TensorSpec,
    choose_artifact,
    write_manifest,
)
from contracts.runners import backend_for_file

REPO = Path(__file__).resolve().parents[1]


def test_every_format_has_one_file_name_and_runtime():
    for name, fmt in FORMATS.items():
        assert fmt.filename == name + SUFFIXES[fmt.runtime]
        assert runtime_for_file(f"runs/x/export/{fmt.filename}") == fmt.runtime == backend_for_file(fmt.filename)
        assert format_for_file(f"/tmp/{fmt.filename}") is fmt
    assert runtime_for_file("model.TFLITE") == "litert"
    assert runtime_for_file("model.pb") is None and format_for_file("tflite_int8.onnx") is None


def test_converter_options_name_export_settings_fields():
    from dataclasses import fields

    from export.settings import ExportSettings

    known = {f.name for f in fields(ExportSettings)}
    for fmt in FORMATS.values():
        assert set(fmt.converter_options) <= known, fmt.name
        module, _, func = fmt.converter.partition(":")
        assert module.startswith("export.") and func, fmt.converter


def test_bundle_preference_is_int8_qat_then_int8_then_float():
    assert BUNDLE_PREFERENCE == ("tflite_int8_qat", "tflite_int8", "tflite_fp32")


def test_resolve_formats_keeps_table_order_and_names_unknown_ones():
    assert [f.name for f in resolve_formats("onnx_fp32, tflite_int8")] == ["tflite_int8", "onnx_fp32"]
    assert len(resolve_formats("all")) == len(FORMATS)
    with pytest.raises(FormatError, match="unknown format tflite_int4: choose from all, tflite_fp32"):
        resolve_formats("tflite_int4")


def _entry(fmt: str) -> ArtifactEntry:
    spec = TensorSpec(name="x", shape=[1, 32, 32, 3], dtype="float32")
    out = TensorSpec(name="y", shape=[1, 2], dtype="float32")
    return ArtifactEntry(format=fmt, file=FORMATS[fmt].filename, sha256="0" * 64, size_bytes=1,
                         quantization=FORMATS[fmt].quantization, runtime=FORMATS[fmt].runtime, input=spec,
                         output=out, source_model="float", source_sha256="0" * 64, test_top1=0.9,
                         parity={})  # fmt: skip


def _manifest(*formats: str) -> Manifest:
    return Manifest(schema_version=SCHEMA_VERSION, run="r", created="2026-01-01T00:00:00+00:00", labels=["a", "b"],
                    image_size=32, preprocessing=Preprocessing(), backbone="mobilenetv2", alpha=0.35,
                    weights_used="none", settings_sha256="0" * 64, float_test_top1=0.9, tool_versions={},
                    artifacts=[_entry(f) for f in formats])  # fmt: skip


def test_choose_artifact_takes_the_best_listed_or_the_one_asked_for():
    m = _manifest("tflite_fp32", "tflite_int8", "onnx_fp32")
    assert choose_artifact(m, None, "m.json").format == "tflite_int8"  # no QAT artifact: int8 PTQ
    assert choose_artifact(m, "onnx_fp32", "m.json").format == "onnx_fp32"
    with pytest.raises(
        ManifestError, match="m.json has no tflite_int8_qat artifact .* it has tflite_fp32, tflite_int8"
    ):
        choose_artifact(m, "tflite_int8_qat", "m.json")
    with pytest.raises(ManifestError, match="unknown format 'int4'"):
        choose_artifact(m, "int4", "m.json")
    with pytest.raises(ManifestError, match="has none of tflite_int8_qat, tflite_int8, tflite_fp32"):
        choose_artifact(_manifest("onnx_int8"), None, "m.json")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_the_makefile_asks_the_table_and_the_manifest_for_file_names(tmp_path):
    """`make edge FORMAT=onnx_fp32` once looked for onnx_fp32.tflite: the file name now comes from here."""
    r = _cli("contracts.formats", "--file", "onnx_fp32")
    assert (r.returncode, r.stdout) == (0, "onnx_fp32.onnx\n")
    r = _cli("contracts.formats", "--file", "onnx_fp33")
    assert r.returncode == 2 and "unknown format onnx_fp33" in r.stderr
    write_manifest(_manifest("tflite_fp32", "onnx_fp32"), tmp_path / "manifest.json")
    r = _cli("contracts.manifest", "--pick", str(tmp_path))
    assert (r.returncode, r.stdout) == (0, f"{tmp_path / 'tflite_fp32.tflite'}\n")
    r = _cli("contracts.manifest", "--pick", str(tmp_path), "--format", "onnx_fp32")
    assert r.stdout == f"{tmp_path / 'onnx_fp32.onnx'}\n"
    r = _cli("contracts.manifest", "--pick", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere/manifest.json" in r.stderr and "\n" not in r.stderr.strip()
    assert "contracts.manifest --pick" in (REPO / "Makefile").read_text()
