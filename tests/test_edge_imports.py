"""What the Pi bundle ships (contracts/, edge/, benchmarks/device/) runs with numpy, OpenCV and LiteRT only: a static
check of every import in every file deploy.bundle packs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from edge_model import REPO

from deploy.bundle import SHIPPED_PACKAGES, shipped_files

FORBIDDEN = {"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "sklearn", "matplotlib"}
ONNX_ONLY_IN = {"contracts/runners/onnx.py"}
ALLOWED_THIRD_PARTY = {"numpy", "cv2", "ai_edge_litert", "tflite_runtime", "onnxruntime", "picamera2"}
OURS = {"contracts", "edge", "benchmarks"}  # what the bundle holds (benchmarks: only its device/ package)


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


FILES = shipped_files()


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def test_the_scan_finds_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "try:\n    import numpy\nexcept ImportError:\n    import tensorflow.lite as tfl\n"
        "def f():\n    from tf_keras import layers\n    importlib.import_module('keras.src')\n"
    )
    assert imported_modules(probe) == {"numpy", "tensorflow", "tf_keras", "keras"}


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_nothing_the_bundle_ships_imports_tensorflow(path):
    bad = imported_modules(path) & FORBIDDEN
    assert not bad, f"{_rel(path)} imports {', '.join(sorted(bad))}: the Pi runs it without the training stack"


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_only_the_light_runtime(path):
    import sys

    third_party = {m for m in imported_modules(path) if m not in sys.stdlib_module_names and m not in OURS}
    assert third_party <= ALLOWED_THIRD_PARTY, f"{_rel(path)} imports {sorted(third_party - ALLOWED_THIRD_PARTY)}"
    if _rel(path) not in ONNX_ONLY_IN:
        assert "onnxruntime" not in imported_modules(path), f"{_rel(path)}: onnxruntime belongs in {ONNX_ONLY_IN}"


def test_benchmarks_files_shipped_are_the_device_package_only():
    """The bundle holds benchmarks/__init__.py and benchmarks/device/, never the host-side report or plots."""
    shipped = {_rel(p) for p in FILES if _rel(p).startswith("benchmarks/")}
    assert "benchmarks/device/latency.py" in shipped
    assert all(f == "benchmarks/__init__.py" or f.startswith("benchmarks/device/") for f in shipped), shipped


def test_there_is_a_runtime_to_check():
    assert SHIPPED_PACKAGES == ("contracts", "edge", "benchmarks/device")
    names = {_rel(p) for p in FILES}
    assert {"contracts/runners/classifier.py", "contracts/runners/litert.py", "edge/app.py", "edge/cli.py"} <= names
    assert not any(n.startswith(("train/", "export/", "sweep/", "deploy/")) for n in names)
