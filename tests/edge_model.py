"""A tiny real model for the edge tests, shaped like a run folder written by train + export.

    python tests/edge_model.py --out /tmp/edge-model          # builds /tmp/edge-model/tiny-rgb, prints its path
    python tests/edge_model.py --commit                       # rebuilds the committed copy, tests/data/edge/model
    python tests/edge_model.py --write-samples tests/data/edge  # the committed images and their labels.csv

The model takes 0-255 RGB like the real one (Rescaling inside the model) and learns three easy classes
(reddish, greenish, bluish noisy pictures) in a few seconds. It is converted to tflite_fp32, full-integer
tflite_int8 (uint8 input and output, int8 inside) and onnx_fp32 by export's own converters and labelled as export
labels them (TFLite metadata with labels.txt packed in, ONNX metadata_props), and a real manifest is written with
contracts.manifest, so the edge runtime is tested against the same files export will produce. Only this builder
imports TensorFlow; the images need nothing but numpy and OpenCV.

The tests use a committed build (tests/data/edge/model: 25 kB of artifacts and their manifest), so a test session
trains nothing. Its KEY file holds build_key() of the sources that made it; when the builder, the preprocessing or
export's converters and labelling change, the key no longer matches, the tests build their own into pytest's cache
(about a minute) and a test says to run --commit.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from contracts.manifest import (
    SCHEMA_VERSION,
    ArtifactEntry,
    Manifest,
    Preprocessing,
    TensorSpec,
    sha256_file,
    write_manifest,
)
from contracts.preprocess import bgr_to_input, dequantize, quantize

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "edge" / "images"  # committed pictures with their labels.csv
COMMITTED = REPO / "tests" / "data" / "edge" / "model"  # the committed build: tiny-rgb/ and KEY
RUN_NAME = "tiny-rgb"
LABELS = ["red", "green", "blue"]
IMAGE_SIZE = 32  # model input side; frames are larger (FRAME_HW) so the resize path is exercised
FRAME_HW = (48, 64)  # test pictures, height x width (even, so every video codec takes them)
FORMATS = ("tflite_fp32", "tflite_int8", "onnx_fp32")


def make_images(
    n: int, seed: int = 0, hw: tuple[int, int] = FRAME_HW, boost: tuple[float, float] = (35, 120)
) -> tuple[np.ndarray, np.ndarray]:
    """n noisy BGR pictures whose dominant channel is their class, and their class indices.

    `boost` is how far the class channel is raised above a random background colour: the default leaves
    some pictures ambiguous (the model is about 90% right, with a spread of scores); (90, 130) makes them clear.

    Returns:
        (uint8 array n x H x W x 3 in OpenCV's BGR order, int array of n labels into LABELS)
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(LABELS)
    rng.shuffle(y)
    h, w = hw
    rgb = rng.uniform(20, 110, size=(n, 1, 1, 3))  # a dull background colour per picture
    rgb[np.arange(n), 0, 0, y] += rng.uniform(*boost, size=n)
    img = rgb + rng.normal(0, 18, size=(n, h, w, 3))  # pixel noise
    for k in range(n):  # a dark blob somewhere, so the pictures are not flat
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 12)
        yy, xx = np.ogrid[:h, :w]
        img[k][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= 0.5
    return np.clip(img, 0, 255).astype(np.uint8)[..., ::-1].copy(), y


def model_inputs(bgr: np.ndarray) -> np.ndarray:
    """BGR pictures -> the float 0-255 RGB inputs the model sees (edge's own preprocessing)."""
    return np.stack([bgr_to_input(b, IMAGE_SIZE) for b in bgr]).astype(np.float32)


def _build_keras_model():
    import tf_keras as keras

    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probs")(x)
    return keras.Model(inp, out)


def _tflite_spec(path: Path) -> tuple[TensorSpec, TensorSpec]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def spec(d):
        q = np.dtype(d["dtype"]).kind in "iu"
        scale, zp = d["quantization"]
        shape = [int(v) for v in d["shape"]]
        return TensorSpec(
            d["name"], shape, np.dtype(d["dtype"]).name, float(scale) if q else None, int(zp) if q else None
        )

    return spec(it.get_input_details()[0]), spec(it.get_output_details()[0])


def predict_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Float probabilities from a .tflite for float 0-255 RGB inputs, quantizing as the device does."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for img in x:
        v = img[None]
        if np.dtype(i["dtype"]).kind in "iu":
            v = quantize(v, *i["quantization"], np.dtype(i["dtype"]).name)
        it.set_tensor(i["index"], v)
        it.invoke()
        y = it.get_tensor(o["index"])[0]
        out.append(dequantize(y, *o["quantization"]) if np.dtype(o["dtype"]).kind in "iu" else y)
    return np.stack(out)


def _write_artifacts(model, calib: np.ndarray, export: Path, source_sha: str) -> None:
    """FORMATS as export writes them: its converters (calib: uint8 RGB images), then its labels."""
    import importlib

    from contracts.formats import FORMATS as TABLE
    from export.label import label
    from export.model_info import model_info

    for name in FORMATS:
        fmt = TABLE[name]
        module, func = fmt.converter.split(":")
        getattr(importlib.import_module(module), func)(model, calib, export / fmt.filename)
        info = model_info(fmt, source_sha, run=RUN_NAME, backbone="tiny-test-cnn", alpha=1.0, labels=LABELS,
                          image_size=IMAGE_SIZE, preprocessing=Preprocessing())  # fmt: skip
        label(fmt, export / fmt.filename, info)


def build_run(root: str | Path, seed: int = 0, epochs: int = 12) -> Path:
    """Trains, converts and writes root/tiny-rgb (labels.txt, model_float.keras, export/ with a manifest).

    Returns:
        the run folder.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    run = Path(root) / RUN_NAME
    export = run / "export"
    export.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(seed)
    train_bgr, train_y = make_images(600, seed=seed + 1)
    test_bgr, test_y = make_images(150, seed=seed + 2)
    train_x, test_x = model_inputs(train_bgr), model_inputs(test_bgr)
    model = _build_keras_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["acc"])
    model.fit(train_x, train_y, epochs=epochs, batch_size=32, verbose=0)
    model.save(run / "model_float.keras")
    (run / "labels.txt").write_text("".join(f"{c}\n" for c in LABELS))
    source_sha = sha256_file(run / "model_float.keras")
    _write_artifacts(model, train_x[:100].astype(np.uint8), export, source_sha)

    keras_p = model.predict(test_x, verbose=0)
    float_top1 = float(np.mean(keras_p.argmax(1) == test_y))
    entries = []
    for name in FORMATS:
        path = export / f"{name}.{name.split('_')[0]}"
        if name.startswith("onnx"):
            import onnxruntime as ort

            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            p = s.run(None, {s.get_inputs()[0].name: test_x})[0]
            shape_in = [1, IMAGE_SIZE, IMAGE_SIZE, 3]
            inp = TensorSpec(s.get_inputs()[0].name, shape_in, "float32")
            out = TensorSpec(s.get_outputs()[0].name, [1, len(LABELS)], "float32")
        else:
            p = predict_tflite(path, test_x)
            inp, out = _tflite_spec(path)
        agreement = float(np.mean(p.argmax(1) == keras_p.argmax(1)))
        entries.append(
            ArtifactEntry(
                format=name, file=path.name, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                quantization="int8" if "int8" in name else "none",
                runtime="onnxruntime" if "onnx" in name else "litert",
                input=inp, output=out, source_model="float", source_sha256=source_sha,
                test_top1=round(float(np.mean(p.argmax(1) == test_y)), 6),
                parity={"agreement": agreement, "max_abs_diff": float(np.abs(p - keras_p).max()),
                        "n_images": len(test_y), "passed": True},
            )
        )  # fmt: skip
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, run=RUN_NAME, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=list(LABELS), image_size=IMAGE_SIZE, preprocessing=Preprocessing(), backbone="tiny-test-cnn",
        alpha=1.0, weights_used="none", settings_sha256="0" * 64, float_test_top1=round(float_top1, 6),
        tool_versions={"tensorflow": tf.__version__}, artifacts=entries,
    )  # fmt: skip
    write_manifest(manifest, export / "manifest.json")
    return run


def build_key() -> str:
    """What a build depends on, hashed: the source of the functions and constants that make it, the preprocessing
    it trains through (contracts/preprocess.py) and export's modules that convert and label the artifacts. The rest
    of this file can change freely."""
    builders = (make_images, model_inputs, _build_keras_model, _tflite_spec, predict_tflite, _write_artifacts,
                build_run)  # fmt: skip
    parts = [inspect.getsource(f) for f in builders] + [repr((RUN_NAME, LABELS, IMAGE_SIZE, FRAME_HW, FORMATS))]
    makers = ("contracts/preprocess.py", "contracts/formats.py", "export/tflite.py", "export/onnx.py",
              "export/tflite_metadata.py", "export/model_info.py", "export/label.py")  # fmt: skip
    parts += [(REPO / f).read_text() for f in makers]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def committed_run() -> Path | None:
    """The committed build's run folder if its KEY is build_key() (it is what the builder makes now), else None."""
    key = COMMITTED / "KEY"
    return COMMITTED / RUN_NAME if key.is_file() and key.read_text().strip() == build_key() else None


def commit_build(folder: str | Path = COMMITTED) -> Path:
    """Builds the run and writes what the tests read (export/ and labels.txt: not the 50 kB Keras model) to
    folder/tiny-rgb, with build_key() in folder/KEY; returns the run folder."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="edge-model-") as tmp:
        run = build_run(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run / "export", folder / RUN_NAME / "export")
        shutil.copy(run / "labels.txt", folder / RUN_NAME / "labels.txt")
    (folder / "KEY").write_text(build_key() + "\n")
    return folder / RUN_NAME


def cached_run(cache_dir: str | Path) -> Path:
    """build_run() once per build_key(): later test sessions reuse the folder (built atomically)."""
    final = Path(cache_dir) / f"edge-model-{build_key()}"
    if not (final / RUN_NAME / "export" / "manifest.json").is_file():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".edge-model-", dir=cache_dir))
        build_run(tmp)
        for stale in Path(cache_dir).glob("edge-model-*"):  # models of older versions of the builder
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another test process (pytest-xdist) published the same build first: use that one
            if not (final / RUN_NAME / "export" / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return final / RUN_NAME


def session_run(request, tmp_path_factory) -> Path:
    """A test session's own copy of the run (conftest's edge_run), so no test can change the original: the committed
    build when it is current (nothing is trained), else one built once into pytest's cache, else into a temporary
    folder."""
    source = committed_run()
    if source is None:
        cache = getattr(request.config, "cache", None)
        source = cached_run(cache.mkdir("edge_model") if cache is not None else tmp_path_factory.mktemp("edge_model"))
    copy = tmp_path_factory.mktemp("edge_run") / RUN_NAME
    shutil.copytree(source, copy)
    return copy


class CaptureSpy:
    """Stands in for cv2.VideoCapture: records every open in `opened` (as `record` keeps it), gives pictures.

    Subclass it per test file with its own `opened` list, `record`, and `pictures` / `seed` for make_images().
    """

    opened: list = []
    pictures, seed = 4, 6

    @staticmethod
    def record(args: tuple):
        return args

    def __init__(self, *args):
        type(self).opened.append(self.record(args))
        self._pictures = itertools.cycle(make_images(self.pictures, seed=self.seed)[0])

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def get(self, *args):
        return 0.0

    def read(self):
        return True, next(self._pictures)

    def release(self):
        pass


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """file name -> label from a labels.csv written by write_images()."""
    with open(path, newline="") as f:
        return {row["file"]: row["label"] for row in csv.DictReader(f)}


def run_edge(*args: str, env: dict | None = None, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Runs `python -m edge ARGS` in a fresh interpreter, as a user would; text stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge", *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


_BLOCKER = """\
# Written by tests/edge_model.py: refuses to import the modules named in EDGE_BLOCK, and logs every attempt.
import importlib.abc
import os
import sys

_BLOCKED = tuple(os.environ.get("EDGE_BLOCK", "").split(","))
_LOG = os.environ.get("EDGE_BLOCK_LOG")


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            if _LOG:
                with open(_LOG, "a") as f:
                    f.write(name + "\\n")
            raise ImportError(f"{name} is blocked by the test (EDGE_BLOCK)", name=name)
        return None


sys.meta_path.insert(0, _Refuse())
"""

TF_MODULES = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx")
# What the Pi does not have: nothing the bundle ships may even try to import these (import_blocker logs each try).
HOST_ONLY = (*TF_MODULES, "sklearn", "scipy", "matplotlib", "PIL", "train", "export", "sweep", "deploy")


def import_blocker(folder: str | Path, blocked: tuple[str, ...], log: str | Path) -> dict:
    """Writes a sitecustomize.py that makes importing `blocked` fail (and logs each try to `log`).

    Returns:
        the environment variables that switch it on for a subprocess.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_BLOCKER)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "EDGE_BLOCK": ",".join(blocked), "EDGE_BLOCK_LOG": str(log)}


def copy_shipped(folder: str | Path) -> Path:
    """Copies the Python files deploy.bundle ships (contracts/, edge/, benchmarks/device/, benchmarks/__init__.py) into
    folder, as a bundle holds them, and nothing else of the repository; returns folder."""
    from deploy.bundle import shipped_files

    for f in shipped_files():
        dest = Path(folder) / f.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    return Path(folder)


def write_images(folder: str | Path, bgr: np.ndarray, y: np.ndarray, prefix: str = "img") -> list[Path]:
    """Writes pictures as PNG (lossless) with a labels.csv (file,label); returns the paths, in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for k, (img, label) in enumerate(zip(bgr, y, strict=True)):
            p = folder / f"{prefix}_{k:03d}.png"
            cv2.imwrite(str(p), img)
            w.writerow([p.name, LABELS[label]])
            paths.append(p)
    return paths


def write_video(path: str | Path, bgr: np.ndarray, fps: float = 10.0) -> Path:
    """Writes pictures as a video, one frame each: MJPG for .avi, mp4v for anything else."""
    fourcc = "MJPG" if str(path).endswith(".avi") else "mp4v"
    h, w = bgr.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with {fourcc}")
    for img in bgr:
        writer.write(img)
    writer.release()
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder to build the run in (the run is OUT/tiny-rgb)")
    p.add_argument("--commit", action="store_true", help=f"rebuild the committed copy the tests use, {COMMITTED}")
    p.add_argument("--write-samples", type=Path, help="write the committed sample images and labels.csv here")
    a = p.parse_args(argv)
    if a.commit:
        print(commit_build())
    if a.write_samples:
        bgr, y = make_images(12, seed=100, boost=(90, 130))
        write_images(a.write_samples / "images", bgr, y)
    if a.out:
        print(build_run(a.out))


if __name__ == "__main__":
    main()
