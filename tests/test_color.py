"""Colour science against scikit-image, and numpy vs torch twins."""

import warnings

import numpy as np
import pytest
import torch
from skimage import color as skc

from colorization import color as C
from colorization.abgrid import code_to_rgb


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def test_lab_matches_skimage(rgb8):
    assert np.abs(C.rgb_to_lab(rgb8) - skc.rgb2lab(rgb8)).max() < 1e-3
    lab = skc.rgb2lab(rgb8)
    assert np.abs(C.lab_to_rgb(lab) - skc.lab2rgb(lab)).max() < 1e-3


def test_lab_inverse_matches_skimage_out_of_gamut():
    lab = np.random.default_rng(1).uniform([0, -110, -110], [100, 110, 110], (2000, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skimage warns about negative Z
        ref = skc.lab2rgb(lab)
    assert np.abs(C.lab_to_rgb(lab) - ref).max() < 1e-3


def test_yuv_matches_skimage(rgb8):
    assert np.abs(C.rgb_to_yuv(rgb8) - skc.rgb2yuv(rgb8)).max() < 1e-6
    yuv = skc.rgb2yuv(rgb8)
    assert np.abs(C.yuv_to_rgb(yuv) - rgb8 / 255.0).max() < 1e-6


def test_every_8bit_colour_round_trips_exactly():
    """All 2^24 sRGB colours -> Lab -> sRGB -> uint8 give the same colour back."""
    for start in range(0, 1 << 24, 1 << 22):
        rgb = code_to_rgb(np.arange(start, start + (1 << 22), dtype=np.uint32))
        back = C.to_uint8(C.lab_to_rgb(C.rgb_to_lab(rgb)))
        assert np.array_equal(back, rgb), f"round trip differs in block {start}"


def test_torch_twin_matches_numpy(rgb8):
    x = _chw(rgb8.astype(np.float32) / 255.0)
    lab_t = C.rgb_to_lab_t(x).permute(1, 2, 0).numpy()
    assert np.abs(lab_t - C.rgb_to_lab(rgb8)).max() < 1e-3
    back = C.lab_to_rgb_t(C.rgb_to_lab_t(x))
    assert np.array_equal(C.to_uint8(back.permute(1, 2, 0).numpy()), rgb8)
    yuv_t = C.rgb_to_yuv_t(x).permute(1, 2, 0).numpy()
    assert np.abs(yuv_t - C.rgb_to_yuv(rgb8)).max() < 1e-5
    assert torch.allclose(C.yuv_to_rgb_t(C.rgb_to_yuv_t(x)), x, atol=1e-5)


def test_uv_to_ab_twins_agree_and_keep_a_grey_grey(rgb8):
    lab = C.rgb_to_lab(rgb8)
    uv = C.rgb_to_yuv(rgb8)[..., 1:]
    ab = C.uv_to_ab(lab[..., 0], uv)
    L_t, uv_t = _chw(lab[..., :1]).float()[None], _chw(uv).float()[None]
    ab_t = C.uv_to_ab_t(L_t, uv_t)[0].permute(1, 2, 0).numpy()
    assert np.abs(ab_t - ab).max() < 1e-2
    assert np.abs(C.uv_to_ab(lab[..., 0], np.zeros_like(uv))).max() < 1e-2


def test_torch_twin_batched_and_differentiable(rgb8):
    x = _chw(rgb8.astype(np.float64) / 255.0)[None].repeat(2, 1, 1, 1).requires_grad_()
    lab = C.rgb_to_lab_t(x)
    assert lab.shape == (2, 3, 64, 96)
    lab.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_uv_unit_range():
    uv = torch.tensor([[-C.U_MAX, 0.0, C.U_MAX], [-C.V_MAX, 0.0, C.V_MAX]])[:, :, None]
    unit = C.uv_to_unit_t(uv)
    assert torch.allclose(unit[:, :, 0], torch.tensor([[0.0, 0.5, 1.0]] * 2))
    assert torch.allclose(C.unit_to_uv_t(unit), uv)


def test_known_values():
    lab = C.rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], np.uint8))
    # white is (100, 0, 0) to within the rounding of skimage's matrix (a -0.0025, b 0.0047)
    assert np.allclose(lab[0], [100, 0, 0], atol=1e-2)
    assert np.allclose(lab[1], [0, 0, 0], atol=1e-6)
    assert np.allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=1e-3)  # CIE reference red


def test_lightness_u8_is_the_l_of_rgb_to_lab():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    ref = C.rgb_to_lab(rgb)[..., 0]
    assert C.lightness_u8(rgb).dtype == np.float32
    assert np.abs(C.lightness_u8(rgb) - ref).max() < 1e-4
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ref_grey = C.rgb_to_lab(np.repeat(grey[..., None], 3, axis=2))[..., 0]
    assert np.abs(C.lightness_u8(grey) - ref_grey).max() < 1e-4
    with pytest.raises(TypeError):
        C.lightness_u8(rgb.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lab_to_rgb_u8_equals_the_reference_path(dtype):
    rng = np.random.default_rng(4)
    L = rng.uniform(0, 100, (60, 70)).astype(dtype)
    ab = rng.uniform(-128, 127, (2, 60, 70)).astype(dtype)  # much of it out of gamut
    ref = C.to_uint8(C.lab_to_rgb(np.stack([L, ab[0], ab[1]], -1).astype(np.float64)))
    assert np.array_equal(C.lab_to_rgb_u8(L, ab), ref)
    rgb = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)  # and in gamut: exact round trip
    lab = C.rgb_to_lab(rgb)
    assert np.array_equal(C.lab_to_rgb_u8(lab[..., 0], np.moveaxis(lab[..., 1:], -1, 0)), rgb)
