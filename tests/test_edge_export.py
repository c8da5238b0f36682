"""edge on what export really writes: every published format of a trained run (the shared `exported_run`
fixture of tests/conftest.py), read through its manifest, gives what export's own parity check measured."""

from __future__ import annotations

import json
import tarfile

import cv2
import numpy as np
import pytest

from contracts.manifest import load_manifest
from contracts.runners.classifier import Classifier
from deploy.bundle import BundleOptions, build_bundle

pytestmark = pytest.mark.slow  # the fixture trains and exports a MobileNetV2 (shared with test_export.py)


def test_every_published_format_matches_export(exported_run):
    from conftest import make_color_images

    from export.runtime import predict

    rgb, _ = make_color_images(8, size=40, seed=9)
    manifest = load_manifest(exported_run / "export")
    assert {"tflite_int8", "tflite_int8_qat", "onnx_fp32"} <= set(manifest.formats)
    for entry in manifest.artifacts:
        clf = Classifier.from_model(exported_run / "export" / entry.file, threads=2)
        assert clf.labels == manifest.labels and clf.size == manifest.image_size
        small = np.stack([cv2.resize(x, (clf.size, clf.size), interpolation=cv2.INTER_AREA) for x in rgb])
        ours = np.stack([clf.predict(cv2.cvtColor(x, cv2.COLOR_RGB2BGR))[0] for x in small])
        theirs = predict(exported_run / "export" / entry.file, small)
        assert np.array_equal(ours.argmax(1), theirs.argmax(1)), entry.format
        assert np.abs(ours - theirs).max() < 1e-5, entry.format  # same runtime, same pixels, same numbers
        if entry.input.scale is not None:
            assert clf.input_quantization == pytest.approx((entry.input.scale, entry.input.zero_point))


def test_bundle_of_a_real_run_ships_the_qat_model(exported_run, tmp_path):
    out = build_bundle(BundleOptions(run=str(exported_run), out=str(tmp_path)))
    with tarfile.open(out) as tar:
        names = tar.getnames()
        listed = json.load(tar.extractfile(f"{exported_run.name}-edge/model/manifest.json"))
    assert f"{exported_run.name}-edge/model/tflite_int8_qat.tflite" in names
    assert [a["format"] for a in listed["artifacts"]] == ["tflite_int8_qat"]
