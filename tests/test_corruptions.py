"""benchmarks.device.corruptions: shapes kept, severity 0 is the image, seeded, damage grows, sizes agree."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.device.corruptions import (
    CORRUPTIONS,
    MIDDLE,
    SEVERITIES,
    corrupt,
    corrupt_batch,
    motion_kernel,
)

IMAGE = Path(__file__).resolve().parent / "data" / "edge" / "images" / "img_000.png"
NAMES = list(CORRUPTIONS)


def _image(h: int, w: int) -> np.ndarray:
    """The committed test picture (48x64) as uint8 RGB, blown up smoothly to h x w."""
    bgr = cv2.imread(str(IMAGE))
    return np.ascontiguousarray(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_CUBIC)[..., ::-1])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_contract_names_and_severities():
    assert NAMES == ["gaussian_blur", "gaussian_noise", "jpeg", "low_light", "pixelate", "motion_blur"]
    assert SEVERITIES == (1, 2, 3, 4, 5) and MIDDLE == 3
    assert all(len(v) == 5 for v in CORRUPTIONS.values())


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype_kept_and_severity_0_is_the_image(name):
    img = _image(50, 70)  # not square, not a multiple of 8 (JPEG blocks) or of the pixelation block
    rng = np.random.default_rng(0)
    assert corrupt(img, name, 0, rng) is img
    for s in SEVERITIES:
        out = corrupt(img, name, s, rng)
        assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_image(name):
    img = _image(96, 96)
    a = corrupt(img, name, 4, np.random.default_rng(7))
    b = corrupt(img, name, 4, np.random.default_rng(7))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["gaussian_noise", "low_light", "motion_blur"])
def test_different_seed_different_image(name):
    img = _image(96, 96)
    a = corrupt(img, name, 3, np.random.default_rng(1))
    b = corrupt(img, name, 3, np.random.default_rng(2))
    assert not np.array_equal(a, b)


def test_batch_does_not_depend_on_order_or_batch():
    imgs = np.stack([_image(64, 64), _image(64, 64)[::-1].copy(), _image(64, 64)[:, ::-1].copy()])
    for name in ("gaussian_noise", "motion_blur"):
        whole = corrupt_batch(imgs, name, 3, seed=5)
        assert np.array_equal(corrupt_batch(imgs[:1], name, 3, seed=5)[0], whole[0])
        assert not np.array_equal(whole[0], corrupt_batch(imgs, name, 3, seed=6)[0])
        assert np.array_equal(corrupt_batch(imgs, name, 3, seed=5), whole)  # a second run: the same


@pytest.mark.parametrize("name", NAMES)
def test_damage_grows_with_severity(name):
    """PSNR against the clean image falls at every step, on a 240x320 frame (where every severity bites)."""
    img = _image(240, 320)
    psnr = [_psnr(img, corrupt(img, name, s, np.random.default_rng(0))) for s in SEVERITIES]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[-1] < 31  # severity 5 is visible damage, not a rounding difference


@pytest.mark.parametrize("name", NAMES)
def test_damage_never_shrinks_at_96_px(name):
    img = _image(96, 96)
    psnr = [_psnr(img, corrupt(img, name, s, np.random.default_rng(0))) for s in (0, *SEVERITIES)]
    # 0.25 dB of slack: at 96 px severities 4 and 5 keep 67 and 56 pixels, and nearest-neighbour blocks of
    # uneven widths (1 and 2 px) can land a hair closer to the picture at the smaller size
    assert all(a >= b - 0.25 for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[-1] < 35


@pytest.mark.parametrize("name", ["gaussian_blur", "pixelate", "motion_blur"])
def test_a_severity_means_the_same_at_two_sizes(name):
    """Corrupting a 448 px picture and shrinking it to 224 gives nearly the 224 px picture's corruption: the
    lengths scale with the side. Unscaled (the 224 px lengths used at 448 px) would do half the damage."""
    small = _image(224, 224)
    big = cv2.resize(small, (448, 448), interpolation=cv2.INTER_CUBIC)
    want = corrupt(small, name, 4, np.random.default_rng(3)).astype(np.float64)
    got = cv2.resize(corrupt(big, name, 4, np.random.default_rng(3)), (224, 224), interpolation=cv2.INTER_AREA)
    damage = np.abs(want - small).mean()
    assert damage > 2
    assert np.abs(got - want).mean() < 0.35 * damage


def test_low_light_darkens_like_dusk():
    img = np.full((64, 64, 3), 200, np.uint8)
    means = [corrupt(img, "low_light", s, np.random.default_rng(0)).mean() for s in SEVERITIES]
    # gamma 2 to a peak of c: 200/255 -> (0.784^2) * c * 255; noise is zero-mean
    for m, c in zip(means, CORRUPTIONS["low_light"]):
        assert m == pytest.approx((200 / 255) ** 2 * c * 255, abs=2.0)


def test_motion_kernel_is_a_normalised_streak():
    k = motion_kernel(10, 3, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    rows, cols = np.nonzero(k)
    centre = k.shape[0] // 2
    assert set(rows) == {centre} and cols.min() == centre and cols.max() == centre + 20  # one side, 21 taps


@pytest.mark.parametrize(
    ("name", "severity", "needle"),
    [("fog", 3, "gaussian_blur, gaussian_noise, jpeg"), ("jpeg", 6, "1, 2, 3, 4, 5"), ("jpeg", -1, r"0 \(clean\)")],
)
def test_bad_name_or_severity_names_the_choices(name, severity, needle):
    with pytest.raises(ValueError, match=needle):
        corrupt(_image(32, 32), name, severity, np.random.default_rng(0))
    with pytest.raises(ValueError, match=needle):
        corrupt_batch(_image(32, 32)[None], name, severity)


def test_not_an_rgb_image():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        corrupt(np.zeros((8, 8), np.uint8), "jpeg", 1, np.random.default_rng(0))
