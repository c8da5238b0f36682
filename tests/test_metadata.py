"""What artifacts say about themselves: TFLite metadata (export.tflite_metadata writes it, contracts.tflite_metadata
reads it back) and ONNX metadata_props (export.onnx), on the committed tiny model; corrupt metadata is one line naming
the file. The slow tests are the proof that the ecosystem reads it: MediaPipe Tasks (in its own venv,
tests/mediapipe_env.py) parses every field and classifies the committed pictures as edge does, on the tiny model and
on every .tflite format of the shared exported run.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_model import LABELS, RUN_NAME, SAMPLES

from contracts.manifest import Preprocessing, load_manifest
from contracts.preprocess import bgr_to_input
from contracts.runners.classifier import Classifier
from contracts.runners.tflite_verify import ModelFileError
from contracts.tflite_metadata import METADATA_NAME, read_metadata

TFLITE = ("tflite_fp32.tflite", "tflite_int8.tflite")


@pytest.mark.parametrize("file", TFLITE)
def test_committed_models_carry_labels_and_normalization(edge_run: Path, file: str):
    meta = read_metadata(edge_run / "export" / file)
    assert meta.labels == LABELS == load_manifest(edge_run / "export").labels
    assert (meta.mean, meta.std, meta.color_space) == ([0.0], [1.0], "RGB")  # raw 0-255 pixels into the model
    assert meta.name == RUN_NAME and meta.version.startswith("sha256:") and file[:-7] in meta.description
    clf = Classifier.from_model(edge_run / "export" / file)
    if "int8" in file:  # pixels fit uint8 exactly, and MediaPipe takes uint8 (it refuses int8)
        assert (clf.backend.input.dtype, clf.input_quantization) == ("uint8", (1.0, 0))
        assert clf.backend.output.dtype == "uint8"


def _strip(data: bytes) -> tuple[bytes, int]:
    """The model bytes without the zip archive appended to them, and where that archive began."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        start = min(i.header_offset for i in zf.infolist())
    return data[:start], start


def test_writer_round_trips_and_rewriting_replaces(edge_run: Path, tmp_path):
    from export.model_info import ModelInfo
    from export.tflite_metadata import unpack_model, write_metadata

    path = tmp_path / "m.tflite"
    shutil.copy(edge_run / "export" / "tflite_fp32.tflite", path)
    info = ModelInfo(name="pets", description="a test", version="7", labels=["cat", "dog", "bird"], image_size=32,
                     preprocessing=Preprocessing(input_range=[-1.0, 1.0]), producer="test")  # fmt: skip
    write_metadata(path, info)
    first = path.read_bytes()
    meta = read_metadata(path)
    assert (meta.name, meta.description, meta.version, meta.labels) == ("pets", "a test", "7", ["cat", "dog", "bird"])
    assert (meta.mean, meta.std) == ([127.5], [127.5])  # (pixel - 127.5) / 127.5 spans the model's [-1, 1]
    write_metadata(path, info)  # again: the old metadata buffer and labels file are replaced, not added to
    assert path.read_bytes() == first
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["labels.txt"] and zf.read("labels.txt") == b"cat\ndog\nbird\n"
    entries = [m.name for m in unpack_model(first).metadata]
    assert entries.count(METADATA_NAME.encode()) == 1


def test_a_model_without_metadata_reads_as_none(edge_run: Path, tmp_path):
    from export.tflite_metadata import pack_model, unpack_model

    model = unpack_model((edge_run / "export" / "tflite_fp32.tflite").read_bytes())
    model.metadata = [m for m in model.metadata if m.name != METADATA_NAME.encode()]
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(pack_model(model))
    assert read_metadata(bare) is None


def _identifier_garbled(data: bytes) -> bytes:
    at = data.index(b"M001")
    return data[:at] + b"M999" + data[at + 4 :]


def _root_offset_garbled(data: bytes) -> bytes:
    at = data.index(b"M001") - 4  # the metadata flatbuffer's root offset
    return data[:at] + (0x7FFFFF00).to_bytes(4, "little") + data[at + 4 :]


def _labels_not_utf8(data: bytes) -> bytes:
    from export.tflite_metadata import append_files

    return append_files(_strip(data)[0], {"labels.txt": b"\xff\xfe\n"})


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d: d[: len(d) // 2], "corrupt TFLite metadata"),  # a copy cut short
        (lambda d: _strip(d)[0], "no files are packed into it"),  # the labels file lost
        (_identifier_garbled, "no M001 identifier"),
        (_root_offset_garbled, "past the end"),
        (_labels_not_utf8, "not UTF-8"),
    ],
    ids=["truncated", "labels-missing", "identifier", "root-offset", "labels-encoding"],
)
def test_corrupt_metadata_is_one_line_naming_the_file(edge_run: Path, tmp_path, damage, says):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(damage((edge_run / "export" / "tflite_int8.tflite").read_bytes()))
    with pytest.raises(ModelFileError) as e:
        read_metadata(bad)
    msg = str(e.value)
    assert str(bad) in msg and says in msg and "\n" not in msg


def test_onnx_carries_metadata_props(edge_run: Path):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(edge_run / "export" / "onnx_fp32.onnx")).metadata_props}
    assert json.loads(props["labels"]) == LABELS and props["image_size"] == "32"
    assert (props["layout"], props["input_dtype"], props["color_order"]) == ("NHWC", "float32", "RGB")
    assert json.loads(props["input_shape"]) == [1, 32, 32, 3] and json.loads(props["input_range"]) == [0.0, 255.0]
    assert (json.loads(props["mean"]), json.loads(props["std"])) == ([0.0], [1.0])
    assert json.loads(props["preprocessing"])["normalization"] == Preprocessing().normalization
    assert props["producer"].startswith("edge-image-classifier ") and "tf2onnx " in props["producer"]
    assert props["name"] == RUN_NAME and props["version"].startswith("sha256:")


# --- MediaPipe Tasks (slow: its venv is built once, minutes, then cached) ---------------------------------------

_MP_FIELDS = """
import json, sys
from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version
from mediapipe.tasks.python.metadata import metadata
out = {}
for path in sys.argv[1:]:
    d = metadata.MetadataDisplayer.with_model_file(path)
    out[path] = {"json": json.loads(d.get_metadata_json()), "files": d.get_packed_associated_file_list(),
                 "labels": d.get_associated_file_buffer("labels.txt").decode(),
                 "min_parser": _pywrap_metadata_version.GetMinimumMetadataParserVersion(d.get_metadata_buffer())}
print(json.dumps(out))
"""

_MP_CLASSIFY = """
import json, sys
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision
model, *images = sys.argv[1:]
opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=-1)
with vision.ImageClassifier.create_from_options(opts) as clf:
    out = [{c.category_name: c.score for c in clf.classify(mp.Image.create_from_file(p)).classifications[0].categories}
           for p in images]
print(json.dumps(out))
"""


def _mediapipe(script: str, *args) -> object:
    from mediapipe_env import run_in_mediapipe

    p = run_in_mediapipe(script, *args)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mediapipe_parses_every_field(edge_run: Path, mediapipe_python):
    paths = [edge_run / "export" / f for f in TFLITE]
    got = _mediapipe(_MP_FIELDS, *paths)
    for path in paths:
        doc, meta = got[str(path)], read_metadata(path)
        m = doc["json"]
        assert (m["name"], m["description"], m["version"]) == (meta.name, meta.description, meta.version)
        assert m["min_parser_version"] == doc["min_parser"] == "1.0.0"  # what tflite-support computes for it
        inp = m["subgraph_metadata"][0]["input_tensor_metadata"][0]
        assert inp["content"]["content_properties_type"] == "ImageProperties"
        assert inp["content"]["content_properties"]["color_space"] == "RGB"
        norm = inp["process_units"][0]
        assert norm["options_type"] == "NormalizationOptions" and norm["options"] == {"mean": [0.0], "std": [1.0]}
        assert inp["stats"] == {"max": [255.0], "min": [0.0]}
        out = m["subgraph_metadata"][0]["output_tensor_metadata"][0]
        assert out["content"]["content_properties_type"] == "FeatureProperties"
        assert out["associated_files"][0]["name"] == "labels.txt"
        assert out["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
        assert doc["files"] == ["labels.txt"] and doc["labels"].splitlines() == LABELS


def _compare(model: Path, pictures: list[Path], labels: list[str], clf: Classifier) -> dict:
    """MediaPipe's ImageClassifier and edge's Classifier on the same picture files: top-1 agreement and the largest
    score difference."""
    theirs = _mediapipe(_MP_CLASSIFY, model, *pictures)
    mp_scores = np.array([[t[label] for label in labels] for t in theirs])
    ours = np.stack([clf.predict(cv2.imread(str(p)))[0] for p in pictures])
    return {"model": model.name, "n": len(pictures),
            "agreement": float(np.mean(mp_scores.argmax(1) == ours.argmax(1))),
            "max_abs_diff": float(np.abs(mp_scores - ours).max())}  # fmt: skip


def _at_model_size(pictures: list[Path], size: int, folder: Path) -> list[Path]:
    """The pictures resized as edge resizes them (contracts.preprocess), so MediaPipe gets the very same pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in pictures:
        small = folder / p.name
        cv2.imwrite(str(small), cv2.cvtColor(bgr_to_input(cv2.imread(str(p)), size), cv2.COLOR_RGB2BGR))
        out.append(small)
    return out


# Largest score difference between MediaPipe and edge on the same pixels, by the format's quantization: float
# weights run the same float graph in MediaPipe's TFLite and ai-edge-litert; dynamic-range models quantize their
# activations at run time, in each runtime's own hybrid kernels; full-integer models differ by at most two steps of
# their uint8 output (1/256 each) where the integer kernels round differently. MediaPipe resizing the full pictures
# itself (bilinear, not edge's area average) is compared on top-1 only.
SCORE_TOL = {"none": 1e-4, "fp16": 1e-4, "dynamic": 0.05, "int8": 2 / 256}


def _prove(export: Path, pictures: list[Path], tmp_path: Path) -> list[dict]:
    rows = []
    manifest = load_manifest(export)
    same_pixels = _at_model_size(pictures, manifest.image_size, tmp_path / "at-model-size")
    for entry in manifest.artifacts:
        if entry.runtime != "litert":
            continue
        clf = Classifier.from_model(export / entry.file, threads=1)
        exact = _compare(export / entry.file, same_pixels, manifest.labels, clf)
        resized = _compare(export / entry.file, pictures, manifest.labels, clf)
        rows.append(dict(exact, resized_by_mediapipe_agreement=resized["agreement"],
                         resized_by_mediapipe_max_abs_diff=resized["max_abs_diff"]))  # fmt: skip
        print(json.dumps(rows[-1]))  # the figures the README quotes (pytest -s shows them)
        int8 = entry.quantization == "int8"
        assert exact["agreement"] >= (0.97 if int8 else 0.99), rows[-1]
        assert exact["max_abs_diff"] <= SCORE_TOL[entry.quantization], rows[-1]
        assert resized["agreement"] >= (0.97 if int8 else 0.99) - 0.05, rows[-1]
    return rows


@pytest.mark.slow
def test_mediapipe_classifies_the_committed_pictures_as_edge_does(edge_run: Path, mediapipe_python, tmp_path):
    pictures = sorted(SAMPLES.glob("*.png"))
    rows = _prove(edge_run / "export", pictures, tmp_path)
    assert [r["model"] for r in rows] == list(TFLITE)


@pytest.mark.slow
def test_mediapipe_classifies_like_edge_on_every_exported_tflite(exported_run: Path, mediapipe_python, tmp_path):
    from conftest import make_color_images

    rgb, _ = make_color_images(34, size=40, seed=21)  # what the exported run was trained on: 102 pictures
    pictures = []
    for k, img in enumerate(rgb):
        pictures.append(tmp_path / f"color_{k:03d}.png")
        cv2.imwrite(str(pictures[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    rows = _prove(exported_run / "export", pictures, tmp_path)
    assert len(rows) == 5, rows
