"""Metrics against scikit-image and hand-computed reference values."""

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorization.metrics import colorfulness, psnr, ssim
from tests.shared_paths import SHARED_DATA


@pytest.fixture(scope="module")
def photo_pair() -> tuple[np.ndarray, np.ndarray]:
    files = sorted((SHARED_DATA / "coco-tiny" / "val2017").glob("*.jpg"))
    if not files:
        pytest.skip("../shared/data/coco-tiny is missing")
    a = np.asarray(Image.open(files[0]).convert("RGB"))
    grey = np.asarray(Image.fromarray(a).convert("L").convert("RGB"))
    return a, grey


def test_psnr_reference_values(photo_pair):
    a, b = photo_pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    x = np.zeros((4, 4, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0] = 255  # MSE = 255^2 / 48
    assert psnr(x, y) == pytest.approx(10 * np.log10(48), abs=1e-9)
    assert psnr(x, x) == float("inf")


@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_skimage(photo_pair, gaussian):
    a, b = photo_pair
    ref = structural_similarity(
        a, b, channel_axis=2, data_range=255, gaussian_weights=gaussian, use_sample_covariance=True
    )
    assert ssim(a, b, gaussian_weights=gaussian) == pytest.approx(ref, abs=1e-3)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_rejects_mismatch():
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(TypeError):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_colorfulness_reference_values():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread
    expected = 0.3 * np.hypot(255, 127.5)
    assert colorfulness(red, "abs") == pytest.approx(expected)
    assert colorfulness(red, "signed") == pytest.approx(expected)
    grey = np.full((8, 8, 3), 128, np.uint8)
    assert colorfulness(grey) == 0.0
    half = np.zeros((2, 2, 3), np.uint8)  # half red, half green: signed means cancel
    half[0, :, 0] = 255
    half[1, :, 1] = 255
    # rg = +-255 (std 255, mean 0 signed / 255 abs); yb = 127.5 everywhere
    assert colorfulness(half, "signed") == pytest.approx(255 + 0.3 * 127.5)
    assert colorfulness(half, "abs") == pytest.approx(0 + 0.3 * np.hypot(255, 127.5))


def test_colorfulness_of_photo_is_in_the_usual_range(photo_pair):
    a, grey = photo_pair
    assert 5 < colorfulness(a) < 150
    assert colorfulness(grey) < 1.0


def _moving(t: int, h: int = 72, w: int = 96) -> np.ndarray:
    """uint8 RGB: a smooth coloured pattern moved 3 px right per frame."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = xs - 3 * t
    g = 128 + 60 * np.sin(xs / 6.0) * np.cos(ys / 8.0) + 40 * np.sin((xs + ys) / 13.0)
    return np.clip(np.stack([g, 0.7 * g + 40, 230 - 0.6 * g], -1), 0, 255).astype(np.uint8)


@pytest.mark.timeout(60)
def test_warping_error_is_near_zero_for_consistent_colour_and_large_for_flicker():
    """Lai et al.'s warping error on a translated pattern: the video itself is consistent
    (its colour moves with the picture); the same frames with a colour cast that changes
    every frame flicker (a shift of d levels in one channel costs (d / 255)^2 where it
    changes)."""
    from colorization import color
    from colorization.flow import grey_u8
    from colorization.metrics import FlickerMeter

    rng = np.random.default_rng(0)
    meter = FlickerMeter(2, spaces=("rgb", "ab"))
    for t in range(8):
        rgb = _moving(t)
        cast = rng.choice([-20, 20], size=3)
        flicker = np.clip(rgb.astype(int) + cast, 0, 255).astype(np.uint8)
        meter.add(grey_u8(color.lightness_u8(rgb)), rgb, flicker)
    consistent, flickering = meter.values
    assert meter.pairs == 7
    assert consistent < 1e-3  # what flow and bilinear sampling miss of a perfect translation
    assert flickering > 0.02 and flickering > 30 * consistent  # about 0.037 expected
    ab_consistent, ab_flickering = meter.of("ab")
    assert ab_consistent < 10 and ab_flickering > 8 * ab_consistent  # Lab units squared
    with pytest.raises(ValueError):
        meter.add(np.zeros((72, 96), np.uint8), _moving(0))


@pytest.mark.timeout(60)
def test_warping_error_leaves_the_pairs_across_a_shot_cut_apart():
    """A consistent video with a cut to another scene: the pair across the cut (a flow between
    unrelated pictures) is measured apart, and the figure is that of the pairs within a shot."""
    from colorization import color
    from colorization.flow import grey_u8
    from colorization.metrics import FlickerMeter

    other = [np.ascontiguousarray(_moving(t)[::-1, :, ::-1]) for t in range(4)]  # another scene
    frames = [_moving(t) for t in range(4)] + other
    meter, whole = FlickerMeter(1, spaces=("rgb", "ab")), FlickerMeter(1)
    for i, rgb in enumerate(frames):
        grey = grey_u8(color.lightness_u8(rgb))
        meter.add(grey, rgb, cut=i == 4)
        whole.add(grey, rgb)
    assert (meter.pairs, meter.cut_pairs) == (6, 1) and (whole.pairs, whole.cut_pairs) == (7, 0)
    assert meter.values[0] < 2e-3  # each shot alone is consistent
    assert meter.of("rgb", cuts=True)[0] > 0.01 and meter.of("ab", cuts=True)[0] > 10
    # with the cut among the pairs, the figure is the cut's share of them
    assert whole.values[0] == pytest.approx((6 * meter.values[0] + meter.of(cuts=True)[0]) / 7)
    assert np.isnan(whole.of(cuts=True)[0])
