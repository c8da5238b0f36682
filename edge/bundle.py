"""Pack a run for a Raspberry Pi: the edge runtime, one verified model, its install script and systemd unit.

    python -m edge.bundle --run runs/NAME [--format tflite_int8] [--out dist]    # -> dist/NAME-edge.tar.gz

The default model is the best int8 one that passed export's parity gate (only those are in a manifest):
tflite_int8_qat, else tflite_int8, else tflite_fp32. The tarball holds one folder, NAME-edge/, with edge/
(package source only), model/ (the artifact and a manifest listing only it), requirements-edge.txt,
requirements-edge-armv7.txt, install.sh, edge-classifier.service and README.md (templates in edge/deploy/).
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

from edge.atomic import atomic_path
from edge.errors import EdgeError
from edge.formats import FORMATS
from edge.manifest import MANIFEST_NAME, ArtifactEntry, Manifest, ManifestError, load_manifest, verify_checksum

PREFERENCE = ("tflite_int8_qat", "tflite_int8", "tflite_fp32")  # best deployable first: QAT int8 loses least
PACKAGE = Path(__file__).resolve().parent
DEPLOY = PACKAGE / "deploy"
REQUIREMENTS = {  # name in the bundle: where it is in a checkout, where it is inside a bundle
    "requirements-edge.txt": ("requirements/edge.txt", "requirements-edge.txt"),
    "requirements-edge-armv7.txt": ("requirements/edge-armv7.txt", "requirements-edge-armv7.txt"),
}


@dataclass(frozen=True)
class BundleOptions:
    """What to pack and where."""

    run: str  # run folder with export/manifest.json (runs/NAME)
    format: str | None = None  # artifact to ship; None: PREFERENCE order among what the manifest lists
    out: str = "dist"  # folder the tarball is written to


TEMPLATES = (("install.sh", 0o755), ("edge-classifier.service", 0o644), ("README.md", 0o644))  # in edge/deploy/


def choose_artifact(manifest: Manifest, requested: str | None, where: str) -> ArtifactEntry:
    """The manifest entry to ship: `requested`, or the first of PREFERENCE the manifest lists.

    Raises:
        EdgeError: an unknown format, or one the manifest does not list; the message lists what it has.
    """
    has = ", ".join(manifest.formats) or "nothing"
    if requested is not None:
        if requested not in FORMATS:
            raise EdgeError(f"unknown format {requested!r}: {where} has {has}; pass one of those to --format")
        if requested not in manifest.formats:
            raise EdgeError(
                f"{where} has no {requested} artifact (not exported, or it failed the parity gate); it has {has}: "
                f"pass one of those to --format, or run `python -m export --run RUN --formats {requested}`"
            )
        return manifest.entry(requested)
    for name in PREFERENCE:
        if name in manifest.formats:
            return manifest.entry(name)
    raise EdgeError(f"{where} has none of {', '.join(PREFERENCE)} (it has {has}): pass --format to choose one")


def _repo_file(candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        p = PACKAGE.parent / rel
        if p.is_file():
            return p
    raise EdgeError(f"{PACKAGE.parent / candidates[0]} not found: build bundles from a checkout of the project")


def _render(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@@{key}@@", value)
    return template


def _package_files() -> list[Path]:
    """The runtime's source: every .py file under edge/ (no caches, no templates, no tests)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _benchmark_files() -> list[Path]:
    """benchmarks/ files that `python -m benchmarks.latency` needs on the device (TF-free, edge requirements only).

    Imported here, at bundle time on the training machine, never by the runtime itself.
    """
    from benchmarks.latency import DEVICE_FILES

    root = PACKAGE.parent / "benchmarks"
    return [root / name for name in DEVICE_FILES]


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
    missing = [t for t, _ in TEMPLATES if not (DEPLOY / t).is_file()]
    if missing:
        raise EdgeError(f"{DEPLOY} lacks {', '.join(missing)}: build bundles from a checkout of the project")
    run = Path(options.run)
    if not run.is_dir():
        raise EdgeError(f"{run} not found: pass --run runs/NAME (a run folder with export/{MANIFEST_NAME})")
    out_dir = Path(options.out)
    nearest = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())  # atomic_path makes the rest
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        what = "a file" if not nearest.is_dir() else "not writable"
        raise EdgeError(f"--out {out_dir} cannot be written ({nearest} is {what}): pass --out a folder you can write")
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
        for d in (top, f"{top}/edge", f"{top}/model", f"{top}/benchmarks"):
            _add_dir(tar, d, now)
        for p in _package_files():
            _add(tar, f"{top}/edge/{p.relative_to(PACKAGE).as_posix()}", p.read_bytes(), now)
        for p in _benchmark_files():
            _add(tar, f"{top}/benchmarks/{p.name}", p.read_bytes(), now)
        _add(tar, f"{top}/{model}", artifact.read_bytes(), now)
        _add(tar, f"{top}/model/{MANIFEST_NAME}", bundled_manifest.encode(), now)
        for bundled, candidates in REQUIREMENTS.items():
            _add(tar, f"{top}/{bundled}", _repo_file(candidates).read_bytes(), now)
        for template, mode in TEMPLATES:
            text = _render((DEPLOY / template).read_text(encoding="utf-8"), values)
            _add(tar, f"{top}/{template}", text.encode("utf-8"), now, mode)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build a bundle, print its path. Exit 2 with one line on stderr if the run cannot be bundled."""
    p = argparse.ArgumentParser(prog="python -m edge.bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder with export/manifest.json (runs/NAME)")
    p.add_argument(
        "--format",
        default=None,
        help=f"artifact to ship (default: the first the manifest lists of {', '.join(PREFERENCE)})",
    )
    p.add_argument("--out", default="dist", help="folder for NAME-edge.tar.gz (default dist)")
    a = p.parse_args(argv)
    try:
        out = build_bundle(BundleOptions(run=a.run, format=a.format, out=a.out))
    except (EdgeError, ManifestError) as e:
        print(f"edge.bundle: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    print(f"{out} ({size / 1e6:.1f} MB)" if size >= 1e5 else f"{out} ({size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
