"""The manifest: what a device needs to know about an exported model, written by export, read by edge.

This is the one definition of the format. It imports only the standard library, so the Raspberry Pi
reads it with nothing but the edge requirements.

    m = load_manifest("runs/digits/export/manifest.json")
    entry = m.entry_for_file("tflite_int8.tflite")
    verify_checksum(m, entry)          # ChecksumError naming the file on mismatch
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from contracts.atomic import write_json

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """A manifest is missing, unreadable, of another schema, or does not describe the artifact."""


class ChecksumError(ManifestError):
    """An artifact's bytes do not match the sha256 its manifest records."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor as the runtime sees it."""

    name: str  # tensor name in the artifact (ONNX feeds by name)
    shape: list[int]  # e.g. [1, 96, 96, 3] (NHWC, batch first)
    dtype: str  # "float32", "int8" or "uint8"
    scale: float | None = None  # quantization: real = scale * (q - zero_point); None for float tensors
    zero_point: int | None = None


@dataclass(frozen=True)
class Preprocessing:
    """The contract between a camera frame and the model input. Normalization is inside the model: export fills
    `normalization` from the model's own preprocessing layer (export.preprocessing), so a device feeds raw pixels."""

    color_order: str = "RGB"  # channel order the model expects (OpenCV frames are BGR: convert)
    resize: str = "area"  # cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging, no crop
    input_range: list[float] = field(default_factory=lambda: [0.0, 255.0])  # pixel values fed, before quantization
    layout: str = "NHWC"
    normalization: str = "inside the model (Rescaling layer)"  # what the model does to the pixels, as export read it


@dataclass(frozen=True)
class ArtifactEntry:
    """One published artifact and the evidence that it agrees with Keras."""

    format: str  # key in contracts.formats.FORMATS
    file: str  # file name, relative to the manifest's folder
    sha256: str
    size_bytes: int
    quantization: str  # as in the formats table
    runtime: str  # "litert" or "onnxruntime"
    input: TensorSpec
    output: TensorSpec
    source_model: str  # "float" or "qat"
    source_sha256: str  # checksum of the Keras model file it was converted from (up-to-date checks)
    test_top1: float  # top-1 of this artifact on the held-out test set
    parity: dict  # agreement, max_abs_diff, n_images, thresholds, passed


@dataclass(frozen=True)
class Manifest:
    """Everything edge and benchmarks read about a run's exported artifacts."""

    schema_version: int
    run: str  # run name (folder under runs/)
    created: str  # ISO 8601 time of writing
    labels: list[str]  # index -> class name, the model's output order
    image_size: int  # square input side in pixels
    preprocessing: Preprocessing
    backbone: str  # "mobilenetv2" or "vgg16"
    alpha: float  # MobileNetV2 width multiplier (1.0 for VGG16)
    weights_used: str  # what the model was really trained from: "imagenet", "none", a file path
    settings_sha256: str  # hash of the resolved training settings
    float_test_top1: float  # test top-1 of the float Keras model, the reference for int8 drops
    tool_versions: dict  # package -> version of the exporting environment
    artifacts: list[ArtifactEntry]

    def entry(self, format_name: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.format == format_name:
                return a
        raise ManifestError(
            f"the manifest has no artifact of format {format_name!r} (it has: {', '.join(self.formats) or 'none'})"
        )

    def entry_for_file(self, file: str | Path) -> ArtifactEntry:
        name = Path(file).name
        for a in self.artifacts:
            if a.file == name:
                return a
        raise ManifestError(
            f"{name} is not listed in the manifest (it lists: {', '.join(a.file for a in self.artifacts) or 'none'}); "
            "re-run export or pass the manifest that came with the model"
        )

    @property
    def formats(self) -> list[str]:
        return [a.format for a in self.artifacts]

    def to_dict(self) -> dict:
        return asdict(self)

    def with_artifacts(self, artifacts: list[ArtifactEntry]) -> Manifest:
        """A copy listing only `artifacts` (a bundle ships one)."""
        d = self.to_dict()
        d["artifacts"] = [asdict(a) for a in artifacts]
        return manifest_from_dict(d, "<memory>")


def package_versions(names) -> dict[str, str]:
    """Installed version of each named distribution that is present (manifests and benchmark rows record them)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}


def _type_ok(value, annotation: str) -> bool:
    """Whether a parsed JSON value fits a field annotation of this module ("float | None", "list[int]", ...)."""
    options = [a.strip() for a in annotation.split("|")]
    for a in options:
        if a == "None" and value is None:
            return True
        if a.startswith("list[") and isinstance(value, list):
            inner = _SCALARS.get(a[5:-1])
            if inner is None or all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
                return True
        kinds = _SCALARS.get(a)
        if kinds and isinstance(value, kinds) and (a == "bool" or not isinstance(value, bool)):
            return True
    return False


def _build(cls, d, where: str):
    """cls(**d), each field's type checked, so a damaged manifest is one ManifestError, never a traceback later."""
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: a {cls.__name__} entry is a JSON {type(d).__name__}, not an object; "
                            "re-run export to rewrite it")  # fmt: skip
    for f in fields(cls):
        if f.name in d and str(f.type) in ("TensorSpec", "Preprocessing", "list[ArtifactEntry]"):
            continue  # built from their own entries before this one
        if f.name in d and not _type_ok(d[f.name], str(f.type)):
            raise ManifestError(f"{where}: {cls.__name__}.{f.name} is {d[f.name]!r}, not {f.type}; "
                                "re-run export to rewrite it")  # fmt: skip
    try:
        return cls(**d)
    except TypeError as e:
        raise ManifestError(f"{where}: {e}; re-run export to rewrite it") from None


def manifest_from_dict(d: dict, where: str = "manifest") -> Manifest:
    """Builds and validates a Manifest from parsed JSON. Raises ManifestError with `where` in the message."""
    if not isinstance(d, dict):
        raise ManifestError(f"{where} is not a JSON object; re-run export to rewrite it")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where} has schema version {version!r}, this edge runtime reads version {SCHEMA_VERSION}; "
            "re-export the model with the same version of the toolkit"
        )
    d = dict(d)
    d["preprocessing"] = _build(Preprocessing, d.get("preprocessing") or {}, where)
    arts = []
    if not isinstance(d.get("artifacts") or [], list):
        raise ManifestError(f"{where}: artifacts is not a list; re-run export to rewrite it")
    for a in d.get("artifacts") or []:
        if not isinstance(a, dict):
            raise ManifestError(f"{where}: an artifact entry is a JSON {type(a).__name__}; re-run export to rewrite it")
        a = dict(a)
        a["input"] = _build(TensorSpec, a.get("input") or {}, where)
        a["output"] = _build(TensorSpec, a.get("output") or {}, where)
        arts.append(_build(ArtifactEntry, a, where))
    d["artifacts"] = arts
    m = _build(Manifest, d, where)
    if not m.labels or not all(isinstance(x, str) for x in m.labels):
        raise ManifestError(f"{where} has no labels; re-run export")
    for a in m.artifacts:
        n_out = a.output.shape[-1] if a.output.shape else None
        if n_out != len(m.labels):
            raise ManifestError(
                f"{where}: {a.file} has {n_out} outputs but the manifest lists {len(m.labels)} labels; re-run export"
            )
    return m


def load_manifest(path: str | Path) -> Manifest:
    """Reads a manifest file, or the manifest.json inside a folder.

    Raises:
        ManifestError: missing, not JSON, wrong schema version or inconsistent; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} not found; run `python -m export --run RUN` (or `make export`) to write it")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} is not a readable manifest ({e}); re-run export to rewrite it") from None
    return manifest_from_dict(d, str(path))


def find_manifest(model_path: str | Path) -> Path:
    """The manifest that belongs to a model file: manifest.json in the same folder."""
    return Path(model_path).resolve().parent / MANIFEST_NAME


def verify_checksum(artifact_path: str | Path, entry: ArtifactEntry) -> None:
    """Checks an artifact file against its manifest entry.

    Raises:
        ChecksumError: the file is missing, or its size or sha256 differ; the message names the file.
    """
    p = Path(artifact_path)
    if not p.is_file():
        raise ChecksumError(f"{p} not found; re-run export, or copy the file that came with the manifest")
    digest = sha256_file(p)
    if digest != entry.sha256:
        raise ChecksumError(
            f"{p} does not match its manifest (sha256 {digest[:12]}… != {entry.sha256[:12]}…): the file is "
            "corrupt or from another export; copy it again or re-run export"
        )


def choose_artifact(manifest: Manifest, requested: str | None, where: str) -> ArtifactEntry:
    """The entry to deploy: `requested`, or the best the manifest lists in the formats table's BUNDLE_PREFERENCE.

    Raises:
        ManifestError: an unknown format, or one the manifest does not list; the message lists what it has.
    """
    from contracts.formats import BUNDLE_PREFERENCE, FORMATS

    has = ", ".join(manifest.formats) or "nothing"
    if requested is not None:
        if requested not in FORMATS:
            raise ManifestError(f"unknown format {requested!r}: {where} has {has}; pass one of those to --format")
        if requested not in manifest.formats:
            raise ManifestError(
                f"{where} has no {requested} artifact (not exported, or it failed the parity gate); it has {has}: "
                f"pass one of those to --format, or run `python -m export --run RUN --formats {requested}`"
            )
        return manifest.entry(requested)
    for name in BUNDLE_PREFERENCE:
        if name in manifest.formats:
            return manifest.entry(name)
    raise ManifestError(
        f"{where} has none of {', '.join(BUNDLE_PREFERENCE)} (it has {has}): pass --format to choose one"
    )


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Writes the manifest atomically (after every artifact it lists is in place)."""
    return write_json(path, manifest.to_dict())


def main(argv: list[str] | None = None) -> int:
    """`python -m contracts.manifest --pick EXPORT_DIR [--format NAME]` prints the artifact to run (make edge)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m contracts.manifest", description="Read an export's manifest.")
    p.add_argument("--pick", metavar="EXPORT_DIR", required=True, help="folder with manifest.json (runs/NAME/export)")
    p.add_argument("--format", help="format to pick (default: the best deployable one the manifest lists)")
    args = p.parse_args(argv)
    folder = Path(args.pick)
    try:
        entry = choose_artifact(load_manifest(folder / MANIFEST_NAME), args.format, str(folder / MANIFEST_NAME))
    except ManifestError as e:
        print(f"contracts.manifest: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(folder / entry.file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
