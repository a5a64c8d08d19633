"""Colour science: sRGB (D65) <-> CIE Lab and sRGB <-> YUV, as numpy and torch twins.

One set of constants serves both twins. The constants are those of scikit-image
(``skimage.color``), the library every colorization code base trains with, so that
tables and models built here agree with it (``tests/test_color.py`` checks parity).

Conventions
- numpy functions take channel-last arrays ``(..., 3)``; torch functions take
  channel-first tensors ``(..., 3, H, W)`` (the channel is dimension -3).
- RGB is float in [0, 1] (``uint8`` numpy input is divided by 255).
- L in [0, 100]; a, b roughly in [-128, 128] (8-bit sRGB spans a in [-86.2, 98.2],
  b in [-107.9, 94.5]).
- YUV is the analogue BT.601 transform (``skimage.color.rgb2yuv``): Y in [0, 1],
  U in [-U_MAX, U_MAX], V in [-V_MAX, V_MAX].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# --- constants (one owner) -------------------------------------------------------------------
#: sRGB (linear) -> CIE XYZ, D65 (skimage.color.colorconv.xyz_from_rgb)
XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
#: D65 reference white, 2 degree observer
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: analogue YUV (BT.601), as skimage.color.rgb2yuv
YUV_FROM_RGB = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.14714119, -0.28886916, 0.43601035],
        [0.61497538, -0.51496512, -0.10001026],
    ]
)
RGB_FROM_YUV = np.linalg.inv(YUV_FROM_RGB)
U_MAX = 0.436
V_MAX = 0.615

_SRGB_THRESHOLD = 0.04045  # encoded value below which sRGB is linear
_LINEAR_THRESHOLD = 0.0031308
_LAB_EPSILON = 0.008856  # (6/29)^3 as rounded by CIE / skimage
_LAB_KAPPA = 7.787
_LAB_INV_THRESHOLD = 0.2068966  # 6/29


# --- numpy twin ------------------------------------------------------------------------------
def _as_float_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float64) / 255.0
    return np.asarray(rgb, dtype=np.float64 if rgb.dtype == np.float64 else np.float32)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Encoded sRGB in [0, 1] -> linear RGB."""
    return np.where(rgb > _SRGB_THRESHOLD, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92).astype(
        rgb.dtype
    )


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear RGB -> encoded sRGB, clipped to [0, 1]."""
    lin = np.clip(lin, 0.0, None)
    out = np.where(lin > _LINEAR_THRESHOLD, 1.055 * lin ** (1 / 2.4) - 0.055, lin * 12.92)
    return np.clip(out, 0.0, 1.0).astype(lin.dtype)


def xyz_to_lab(xyz: np.ndarray) -> np.ndarray:
    t = xyz / WHITE_D65.astype(xyz.dtype)
    f = np.where(t > _LAB_EPSILON, np.cbrt(t), _LAB_KAPPA * t + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_xyz(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = lab[..., 1] / 500.0 + fy
    fz = np.maximum(fy - lab[..., 2] / 200.0, 0.0)
    f = np.stack([fx, fy, fz], axis=-1)
    t = np.where(f > _LAB_INV_THRESHOLD, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA)
    return t * WHITE_D65.astype(lab.dtype)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` (uint8 or float in [0, 1]) -> Lab ``(..., 3)`` float."""
    rgb = _as_float_rgb(rgb)
    xyz = srgb_to_linear(rgb) @ XYZ_FROM_RGB.T.astype(rgb.dtype)
    return xyz_to_lab(xyz)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab ``(..., 3)`` -> sRGB float in [0, 1] (out-of-gamut colours clipped)."""
    lab = np.asarray(lab)
    lab = lab.astype(np.float64 if lab.dtype == np.float64 else np.float32)
    lin = lab_to_xyz(lab) @ RGB_FROM_XYZ.T.astype(lab.dtype)
    return linear_to_srgb(lin)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` -> YUV ``(..., 3)`` (BT.601 analogue, on encoded values)."""
    rgb = _as_float_rgb(rgb)
    return rgb @ YUV_FROM_RGB.T.astype(rgb.dtype)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """YUV ``(..., 3)`` -> sRGB float in [0, 1] (clipped)."""
    yuv = np.asarray(yuv)
    return np.clip(yuv @ RGB_FROM_YUV.T.astype(yuv.dtype), 0.0, 1.0)


def uv_to_ab(L: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """A regression model's chroma as Lab ab: ``L`` ``(...)`` in [0, 100] and U, V ``(..., 2)``
    -> ab ``(..., 2)``. U and V join the Y of the grey image of lightness ``L``; the colour
    that gives (clipped to sRGB) has this ab. :func:`uv_to_ab_t` is the torch twin."""
    L = np.asarray(L)
    grey = lab_to_rgb(np.stack([L, np.zeros_like(L), np.zeros_like(L)], axis=-1))
    y = rgb_to_yuv(grey)[..., :1]
    rgb = yuv_to_rgb(np.concatenate([y, np.asarray(uv, y.dtype)], axis=-1))
    return rgb_to_lab(rgb)[..., 1:]


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8, rounding to nearest."""
    return np.clip(np.rint(np.asarray(rgb) * 255.0), 0, 255).astype(np.uint8)


# --- torch twin (channel dimension -3) -------------------------------------------------------
# torch is imported where it is used: the archive job's decode and finish tasks import this
# module, and a Ray worker without torch is 250-450 MB smaller.
def _mat(m: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.as_tensor(m, dtype=like.dtype, device=like.device)


def _apply_matrix(m: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """Multiply the channel vector (dim -3) of ``x`` by the 3x3 matrix ``m``."""
    import torch

    return torch.einsum("ij,...jhw->...ihw", _mat(m, x), x)


def srgb_to_linear_t(rgb: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.where(
        rgb > _SRGB_THRESHOLD, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4, rgb / 12.92
    )


def linear_to_srgb_t(lin: torch.Tensor) -> torch.Tensor:
    import torch

    lin = lin.clamp(min=0.0)
    out = torch.where(
        lin > _LINEAR_THRESHOLD,
        1.055 * lin.clamp(min=_LINEAR_THRESHOLD) ** (1 / 2.4) - 0.055,
        lin * 12.92,
    )
    return out.clamp(0.0, 1.0)


def rgb_to_lab_t(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(..., 3, H, W)`` float in [0, 1] -> Lab ``(..., 3, H, W)``."""
    import torch

    xyz = _apply_matrix(XYZ_FROM_RGB, srgb_to_linear_t(rgb))
    t = xyz / _mat(WHITE_D65, xyz)[:, None, None]
    f = torch.where(
        t > _LAB_EPSILON, t.clamp(min=_LAB_EPSILON) ** (1 / 3), _LAB_KAPPA * t + 16.0 / 116.0
    )
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb_t(lab: torch.Tensor) -> torch.Tensor:
    """Lab ``(..., 3, H, W)`` -> sRGB float in [0, 1] (clipped)."""
    import torch

    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    f = torch.stack([a / 500.0 + fy, fy, (fy - b / 200.0).clamp(min=0.0)], dim=-3)
    t = torch.where(f > _LAB_INV_THRESHOLD, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA)
    xyz = t * _mat(WHITE_D65, t)[:, None, None]
    return linear_to_srgb_t(_apply_matrix(RGB_FROM_XYZ, xyz))


def rgb_to_yuv_t(rgb: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(YUV_FROM_RGB, rgb)


def yuv_to_rgb_t(yuv: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(RGB_FROM_YUV, yuv).clamp(0.0, 1.0)


def uv_to_ab_t(L: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`uv_to_ab`: L ``(N, 1, H, W)`` and UV ``(N, 2, H, W)`` -> ab
    ``(N, 2, H, W)``."""
    import torch

    grey = lab_to_rgb_t(torch.cat([L, torch.zeros_like(uv)], dim=-3))
    y = rgb_to_yuv_t(grey)[:, :1]
    return rgb_to_lab_t(yuv_to_rgb_t(torch.cat([y, uv], dim=-3)))[:, 1:]


def uv_to_unit_t(uv: torch.Tensor) -> torch.Tensor:
    """U, V ``(..., 2, H, W)`` -> [0, 1], the range of a sigmoid output."""
    import torch

    scale = torch.tensor([U_MAX, V_MAX], dtype=uv.dtype, device=uv.device)[:, None, None]
    return (uv / scale + 1.0) / 2.0


def unit_to_uv_t(unit: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`uv_to_unit_t`."""
    import torch

    scale = torch.tensor([U_MAX, V_MAX], dtype=unit.dtype, device=unit.device)[:, None, None]
    return (unit * 2.0 - 1.0) * scale


_LINEAR_OF_U8 = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
_Y_WEIGHTS = (XYZ_FROM_RGB[1] / WHITE_D65[1]).astype(np.float32)


def _l_of_y(y: np.ndarray) -> np.ndarray:
    f = np.where(y > _LAB_EPSILON, np.cbrt(np.maximum(y, _LAB_EPSILON)), _LAB_KAPPA * y + 16 / 116)
    return (116.0 * f - 16.0).astype(np.float32)


_L_OF_GREY_U8 = _l_of_y(_LINEAR_OF_U8.astype(np.float64))


def lightness_u8(img: np.ndarray) -> np.ndarray:
    """Lab L (float32, [0, 100]) of a uint8 image, ``(H, W)`` grey or ``(H, W, 3)`` RGB: the L
    channel of :func:`rgb_to_lab` without computing a and b (a table lookup for grey)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {img.dtype}")
    if img.ndim == 2:
        return _L_OF_GREY_U8[img]
    lin = _LINEAR_OF_U8
    y = lin[img[..., 0]] * _Y_WEIGHTS[0]
    y += lin[img[..., 1]] * _Y_WEIGHTS[1]
    y += lin[img[..., 2]] * _Y_WEIGHTS[2]
    return _l_of_y(y)


def _srgb_rounding_thresholds() -> np.ndarray:
    """The linear values at which the 8-bit sRGB code steps from k to k + 1 (k = 0..254)."""
    encoded = (np.arange(255) + 0.5) / 255.0
    return srgb_to_linear(encoded)


_U8_THRESHOLDS = np.append(_srgb_rounding_thresholds(), np.inf)  # 256: the last is never met
_U8_COARSE = np.searchsorted(_U8_THRESHOLDS, np.arange(4097) / 4096.0, side="right").astype(
    np.int64
)
# the compiled Lab -> 8-bit pass takes at most one step past the coarse count
assert np.diff(_U8_COARSE).max() <= 1


def lab_to_rgb_u8(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Lab as ``L`` ``(H, W)`` and ``ab`` ``(2, H, W)`` -> uint8 sRGB ``(H, W, 3)``: what
    ``to_uint8(lab_to_rgb(...))`` gives (out-of-gamut colours clipped), in one compiled pass."""
    from colorization.kernels import lab_to_rgb_u8 as kernel

    return kernel(
        np.ascontiguousarray(L, np.float32 if L.dtype == np.float32 else np.float64),
        np.ascontiguousarray(ab, np.float32 if ab.dtype == np.float32 else np.float64),
        WHITE_D65,
        RGB_FROM_XYZ,
        _U8_THRESHOLDS,
        _U8_COARSE,
    )
