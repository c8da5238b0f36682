"""edge/ runs on a Raspberry Pi with numpy, OpenCV and LiteRT only: a static check of every import in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from edge_model import REPO

EDGE = REPO / "edge"
FORBIDDEN = {"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx"}
ONNX_ONLY_IN = {"backend_onnx.py"}
ALLOWED_THIRD_PARTY = {"numpy", "cv2", "ai_edge_litert", "tflite_runtime", "onnxruntime", "picamera2"}
# bundle.py runs on the training machine (make bundle), never on the Pi: it may read the project's own benchmarks/
# to learn which of its files the device-side latency tool needs. Nothing of the training stack, still.
BUILD_TOOL_EXTRA = {"bundle.py": {"benchmarks"}}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports: import statements (at any depth, in try blocks and
    functions too) and importlib.import_module("...") / __import__("...") calls with a literal name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return names


FILES = sorted(EDGE.rglob("*.py"))


def test_the_scan_finds_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "try:\n    import numpy\nexcept ImportError:\n    import tensorflow.lite as tfl\n"
        "def f():\n    from tf_keras import layers\n    importlib.import_module('keras.src')\n"
    )
    assert imported_modules(probe) == {"numpy", "tensorflow", "tf_keras", "keras"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_tensorflow_in_edge(path):
    bad = imported_modules(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))}: edge must run without TensorFlow"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_only_the_light_runtime(path):
    import sys

    third_party = {m for m in imported_modules(path) if m not in sys.stdlib_module_names and m != "edge"}
    third_party -= BUILD_TOOL_EXTRA.get(path.name, set())
    assert third_party <= ALLOWED_THIRD_PARTY, f"{path.name} imports {sorted(third_party - ALLOWED_THIRD_PARTY)}"
    if path.name not in ONNX_ONLY_IN:
        assert "onnxruntime" not in imported_modules(path), f"{path.name}: onnxruntime belongs in backend_onnx.py"


def test_there_is_an_edge_package_to_check():
    assert {"classifier.py", "backends.py", "app.py", "cli.py", "bundle.py"} <= {p.name for p in FILES}
