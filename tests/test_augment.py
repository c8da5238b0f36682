"""Camera-condition augmentation (train.augment): identity at inference, real damage in training that grows with
strength, its settings and flags, and models holding it that save, load, quantize and export exactly as without."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

KINDS = ("scale", "blur", "light", "noise", "jpeg")


def _images(n: int = 48, size: int = 40) -> np.ndarray:
    """Clean pictures with edges and smooth shading (noise would hide what blur, JPEG and scale do)."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    out = []
    for _ in range(n):
        img = rng.uniform(40, 200, 3) + rng.uniform(-40, 40, 3) * ramp[:, None, None]
        img = np.broadcast_to(img, (size, size, 3)).copy()
        for _ in range(3):
            y, x, h, w = rng.integers(0, size - 4, 4)
            img[y : y + 2 + h // 2, x : x + 2 + w // 2] = rng.uniform(0, 255, 3)
        out.append(img)
    return np.round(np.stack(out)).astype(np.float32)


def _layer(kind: str, strength: float = 1.0, fraction: float = 1.0, seed: int = 7):
    from train.augment import LAYERS

    return LAYERS[kind](strength, fraction, seed=seed, name="augment_" + kind)


def _damage(kind: str, strength: float, x: np.ndarray, calls: int = 4) -> float:
    """Mean absolute change of the pixels, over a few training calls (the amounts are random)."""
    layer = _layer(kind, strength)
    return float(np.mean([np.abs(layer(x, training=True).numpy() - x).mean() for _ in range(calls)]))


@pytest.mark.parametrize("kind", KINDS)
def test_layer_is_the_identity_at_inference(kind):
    import tf_keras as keras

    x = _images(8)
    layer = _layer(kind)
    assert np.array_equal(layer(x).numpy(), x) and np.array_equal(layer(x, training=False).numpy(), x)
    inp = keras.Input(x.shape[1:])
    model = keras.Model(inp, layer(inp))
    assert np.array_equal(model.predict(x, verbose=0), x) and np.array_equal(model(x).numpy(), x)


@pytest.mark.parametrize("kind", KINDS)
def test_training_changes_images_in_range_and_stronger_does_more(kind):
    x = _images()
    y = _layer(kind)(x, training=True).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 255.0
    changed = np.abs(y - x).reshape(len(x), -1).mean(1) > 0.5
    assert changed.mean() > 0.5, f"{kind} left {np.sum(~changed)} of {len(x)} images as they were"
    weak, default, strong = (_damage(kind, s, x) for s in (0.25, 1.0, 3.0))
    assert weak < default < strong, (kind, weak, default, strong)
    assert strong > 1.5 * weak, (kind, weak, strong)


@pytest.mark.parametrize("kind", ("blur", "noise"))
def test_only_a_fraction_of_each_batch_is_changed(kind):
    x = _images(96)
    y = _layer(kind, fraction=0.25, seed=11)(x, training=True).numpy()
    same = np.all(y == x, axis=(1, 2, 3))
    assert 0.55 <= same.mean() <= 0.92, f"{same.mean():.2f} of the images passed clean, not about 0.75"


def test_strength_zero_builds_no_layer_and_no_augment_builds_none():
    from train.model import AUGMENT_PREFIX, build_model
    from train.settings import TrainSettings, camera_strengths, resolve

    s = resolve(TrainSettings(aug_blur=0.0, aug_jpeg=2.5))
    model = build_model(3, 32, alpha=0.35, weights="none", flip=s.flip, camera=camera_strengths(s),
                        camera_fraction=s.aug_fraction)  # fmt: skip
    names = [layer.name for layer in model.layers if layer.name.startswith(AUGMENT_PREFIX)]
    assert names == [f"{AUGMENT_PREFIX}{k}" for k in ("rotation", "zoom", "translation", "scale", "light", "noise",
                                                      "jpeg")]  # fmt: skip
    assert model.get_layer(AUGMENT_PREFIX + "jpeg").strength == 2.5
    off = resolve(TrainSettings(augment=False))
    assert camera_strengths(off) == dict.fromkeys(KINDS, 0.0)


def test_flags_reach_the_settings_and_round_trip_through_settings_json(tmp_path):
    from train.cli import build_parser
    from train.settings import TrainSettings, load_run_settings, resolve, write_run_settings

    args = vars(build_parser().parse_args(["--aug-blur", "1.5", "--aug-noise", "0", "--aug-fraction", "0.3"]))
    args.update(out=str(tmp_path / "run"))
    s = resolve(TrainSettings(**{k: v for k, v in args.items() if k != "force"}))
    assert (s.aug_blur, s.aug_noise, s.aug_fraction, s.aug_jpeg) == (1.5, 0.0, 0.3, 1.0)
    assert s.sha256() != resolve(TrainSettings(out=s.out)).sha256()
    write_run_settings(tmp_path / "run", s, "none")
    assert load_run_settings(tmp_path / "run").settings == s


def test_settings_json_from_before_camera_augmentation_loads_it_as_off(tmp_path):
    from train.settings import TrainSettings as T
    from train.settings import load_settings, resolve, write_run_settings

    s = resolve(T(out=str(tmp_path)))
    write_run_settings(tmp_path, s, "none")
    doc = json.loads((tmp_path / "settings.json").read_text())
    (tmp_path / "settings.json").write_text(json.dumps({k: v for k, v in doc.items() if not k.startswith("aug_")}))
    old = load_settings(tmp_path)
    assert all(getattr(old, "aug_" + k) == 0.0 for k in KINDS) and old.aug_fraction == T().aug_fraction


@pytest.mark.parametrize(
    "argv, flag",
    [(["--aug-blur", "-0.5"], "--aug-blur -0.5"), (["--aug-jpeg", "3.5"], "--aug-jpeg 3.5"),
     (["--aug-fraction", "0"], "--aug-fraction 0"), (["--aug-fraction", "1.5"], "--aug-fraction 1.5")],
)  # fmt: skip
def test_bad_strength_is_one_line_naming_the_flag(argv, flag, tmp_path, capsys):
    from train.cli import main
    from train.settings import SettingsError, TrainSettings, resolve

    key = argv[0][2:].replace("-", "_")
    with pytest.raises(SettingsError, match=flag.replace("+", r"\+")):
        resolve(TrainSettings(**{key: float(argv[1])}))
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"error: {flag} is out of range") and "Traceback" not in out
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_model_with_camera_layers_saves_loads_and_quantizes(tmp_path):
    """With its camera layers it saves and reloads (.keras); the float model as train saves it (without them) loads
    in a fresh process with a plain load_model, train never imported; the QAT twin trains, saves to .h5, reloads."""
    import tf_keras as keras

    from train.augment import CameraAugment
    from train.model import build_model, without_camera_layers
    from train.qat import load_qat_model, quantize_model, save_qat_model

    model = build_model(3, 32, alpha=0.35, weights="none", camera=dict.fromkeys(KINDS, 1.0), camera_fraction=0.5)
    x = _images(8, size=32)
    ref = model.predict(x, verbose=0)
    model.save(str(tmp_path / "with.keras"))
    again = keras.models.load_model(str(tmp_path / "with.keras"), compile=False)
    assert sum(isinstance(layer, CameraAugment) for layer in again.layers) == len(KINDS)
    assert np.array_equal(again.predict(x, verbose=0), ref)

    plain = without_camera_layers(model)
    assert not any(isinstance(layer, CameraAugment) for layer in plain.layers)
    assert len(plain.layers) == len(model.layers) - len(KINDS) and np.array_equal(plain.predict(x, verbose=0), ref)
    plain.save(str(tmp_path / "plain.keras"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", ref)
    code = ("import sys, numpy as np, tf_keras as k; m = k.models.load_model(sys.argv[1], compile=False); "
            "assert not any(n.startswith('train') for n in sys.modules); "
            "assert np.array_equal(m.predict(np.load(sys.argv[2]), verbose=0), np.load(sys.argv[3]))")  # fmt: skip
    argv = [sys.executable, "-c", code, *(str(tmp_path / f) for f in ("plain.keras", "x.npy", "ref.npy"))]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]

    qat = quantize_model(model)
    wrapped = {type(layer.layer).__name__ for layer in qat.layers if layer.name.startswith("quant_augment_")}
    assert wrapped >= {"ResolutionJitter", "CameraBlur", "Lighting", "SensorNoise", "JpegQuality"}
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    qat.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)  # the layers run in training, under tfmot
    save_qat_model(qat, tmp_path / "q.h5")
    assert np.allclose(load_qat_model(tmp_path / "q.h5").predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_tflite_fp32_is_the_same_with_and_without_the_layers(tmp_path):
    """The export is unchanged: same operators, bit-identical outputs, from the same weights."""
    from ai_edge_litert.interpreter import Interpreter

    from export.runtime import predict
    from export.tflite import convert_fp32
    from train.model import build_model

    kw = dict(num_classes=3, image_size=32, alpha=0.35, weights="none")
    with_layers = build_model(augment=True, camera=dict.fromkeys(KINDS, 2.0), camera_fraction=1.0, **kw)
    without = build_model(augment=False, **kw)
    without.set_weights(with_layers.get_weights())
    x = _images(12, size=32)
    for model, name in ((with_layers, "with"), (without, "without")):
        convert_fp32(model, x, tmp_path / f"{name}.tflite")

    def ops(name):
        return [op["op_name"] for op in Interpreter(model_path=str(tmp_path / f"{name}.tflite"))._get_ops_details()]

    assert ops("with") == ops("without") and len(ops("with")) > 20
    a, b = (
        predict(tmp_path / "with.tflite", x.astype(np.uint8)),
        predict(tmp_path / "without.tflite", x.astype(np.uint8)),
    )
    assert np.array_equal(a, b) and a.std() > 0
