"""Pack a run for a Raspberry Pi: the edge runtime, one verified model, its install script and systemd unit.

    python -m deploy.bundle --run runs/NAME [--format tflite_int8] [--out dist]    # -> dist/NAME-edge.tar.gz

The default model is the first of contracts.formats.BUNDLE_PREFERENCE the manifest lists (only artifacts that
passed export's parity gate are in it): tflite_int8_qat, else tflite_int8, else tflite_fp32. The tarball holds
one folder, NAME-edge/, with the Python source of what the Pi runs (shipped_files(): contracts/, edge/,
benchmarks/device/ and benchmarks/__init__.py, whole packages), model/ (the artifact and a manifest listing only
it), requirements-edge.txt, requirements-edge-armv7.txt, and install.sh, edge-classifier.service and README.md
filled in from deploy/templates/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from contracts.atomic import atomic_path, why_unwritable
from contracts.console import one_line
from contracts.errors import EdgeError
from contracts.formats import BUNDLE_PREFERENCE
from contracts.manifest import MANIFEST_NAME, ManifestError, choose_artifact, load_manifest, verify_checksum

REPO = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATES = (("install.sh", 0o755), ("edge-classifier.service", 0o644), ("README.md", 0o644))  # file, mode
# What the Pi runs, shipped as whole packages: the shared contracts, the runtime and the device-side benchmark.
# benchmarks/__init__.py comes along so that `python -m benchmarks.device.latency` imports on the device.
SHIPPED_PACKAGES = ("contracts", "edge", "benchmarks/device")
SHIPPED_FILES = ("benchmarks/__init__.py",)
REQUIREMENTS = {"requirements-edge.txt": "requirements/edge.txt",  # name in the bundle: file in the checkout
                "requirements-edge-armv7.txt": "requirements/edge-armv7.txt"}  # fmt: skip


@dataclass(frozen=True)
class BundleOptions:
    """What to pack and where."""

    run: str  # run folder with export/manifest.json (runs/NAME)
    format: str | None = None  # artifact to ship; None: BUNDLE_PREFERENCE order among what the manifest lists
    out: str = "dist"  # folder the tarball is written to


def _render(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@@{key}@@", value)
    return template


def shipped_files() -> list[Path]:
    """Every .py file the device needs: SHIPPED_PACKAGES whole (no caches, no templates, no tests) and SHIPPED_FILES."""
    files = [REPO / f for f in SHIPPED_FILES]
    for package in SHIPPED_PACKAGES:
        files += (p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
    tar.addfile(info)


def build_bundle(options: BundleOptions) -> Path:
    """Writes OUT/NAME-edge.tar.gz atomically; returns its path.

    Raises:
        EdgeError: no run folder, or an unusable --format.
        ManifestError: a missing or bad manifest, or an artifact whose sha256 does not match it.
    """
    needed = [TEMPLATES_DIR / t for t, _ in TEMPLATES] + [REPO / f for f in REQUIREMENTS.values()]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise EdgeError(f"{', '.join(missing)} not found: build bundles from a checkout of the project")
    run = Path(options.run)
    if not run.is_dir():
        raise EdgeError(f"{run} not found: pass --run runs/NAME (a run folder with export/{MANIFEST_NAME})")
    why = why_unwritable(options.out, "folder")  # atomic_path makes the folders that are missing
    if why:
        raise EdgeError(f"--out {options.out} {why}: pass --out a folder you can write")
    name = run.resolve().name  # runs/latest is a link: name the bundle after the real run
    manifest_path = run / "export" / MANIFEST_NAME
    manifest = load_manifest(manifest_path)
    entry = choose_artifact(manifest, options.format, str(manifest_path))
    artifact = run / "export" / entry.file
    verify_checksum(artifact, entry)  # never ship a file that does not match what was checked at export
    top = f"{name}-edge"
    model = f"model/{entry.file}"
    now = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    values = {
        "RUN": name, "FORMAT": entry.format, "MODEL": model, "FILE": entry.file, "SIZE": str(manifest.image_size),
        "LABELS": ", ".join(manifest.labels) if len(manifest.labels) <= 20 else f"{len(manifest.labels)} classes",
        "BUILT": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }  # fmt: skip
    bundled_manifest = json.dumps(manifest.with_artifacts([entry]).to_dict(), indent=2) + "\n"
    out = Path(options.out) / f"{top}.tar.gz"
    with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        files = shipped_files()
        folders = sorted({p.relative_to(REPO).parent for p in files} | {Path("model")})
        for d in [top] + [f"{top}/{f.as_posix()}" for f in folders]:
            _add_dir(tar, d, now)
        for p in files:
            _add(tar, f"{top}/{p.relative_to(REPO).as_posix()}", p.read_bytes(), now)
        _add(tar, f"{top}/{model}", artifact.read_bytes(), now)
        _add(tar, f"{top}/model/{MANIFEST_NAME}", bundled_manifest.encode(), now)
        for bundled, checkout in REQUIREMENTS.items():
            _add(tar, f"{top}/{bundled}", (REPO / checkout).read_bytes(), now)
        for template, mode in TEMPLATES:
            text = _render((TEMPLATES_DIR / template).read_text(encoding="utf-8"), values)
            _add(tar, f"{top}/{template}", text.encode("utf-8"), now, mode)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build a bundle, print its path. Exit 2 with one line on stderr if the run cannot be bundled."""
    p = argparse.ArgumentParser(prog="python -m deploy.bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder with export/manifest.json (runs/NAME)")
    p.add_argument(
        "--format",
        default=None,
        help=f"artifact to ship (default: the first the manifest lists of {', '.join(BUNDLE_PREFERENCE)})",
    )
    p.add_argument("--out", default="dist", help="folder for NAME-edge.tar.gz (default dist)")
    a = p.parse_args(argv)
    try:
        out = build_bundle(BundleOptions(run=a.run, format=a.format, out=a.out))
    except (EdgeError, ManifestError) as e:
        print(f"deploy.bundle: error: {one_line(e)}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    print(f"{out} ({size / 1e6:.1f} MB)" if size >= 1e5 else f"{out} ({size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
