"""python -m export: runs/NAME -> runs/NAME/export/ (artifacts + manifest.json). Exit 1 if a format fails its gate.

python -m export --run runs/latest
python -m export --run runs/flowers --formats tflite_int8,onnx_fp32 --force
"""

from __future__ import annotations

import argparse

from contracts.formats import FORMATS
from export.settings import ExportSettings


def build_parser() -> argparse.ArgumentParser:
    d = ExportSettings()
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    p.add_argument("--run", default=d.run, help="training run folder (default runs/latest)")
    p.add_argument("--formats", default=d.formats, help=f"all, or a comma-separated list of: {', '.join(FORMATS)}")
    p.add_argument("--force", action="store_true", help="re-export artifacts that are up to date")
    p.add_argument("--calibration-images", type=int, default=d.calibration_images, help="int8 calibration set size")
    p.add_argument("--onnx-opset", type=int, default=d.onnx_opset)
    p.add_argument("--max-test-images", type=int, default=d.max_test_images, help="cap the parity set (0 = all)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    settings = ExportSettings(a.run, a.formats, a.force, a.calibration_images, a.onnx_opset, a.max_test_images)
    from contracts.formats import FormatError
    from export.errors import ExportError
    from export.run import export_run
    from train.errors import DataError
    from train.settings import SettingsError

    try:
        result = export_run(settings)
    except (ExportError, FormatError, FileNotFoundError, SettingsError, DataError) as e:
        print(f"error: {e}", flush=True)
        return 2
    if result["failed"]:
        for name, why in result["failed"].items():
            print(f"error: {name} failed its parity gate and was not published: {why}", flush=True)
        return 1
    return 0
