"""Both ends of the inference path in numpy, without torch: the 8-bit pixels an image's L comes
from, that L at full resolution and at the model's input size, and the model's chroma upsampled
and joined with the image's own L as 8-bit sRGB.

:mod:`colorization.inference` wraps these around the model in between (it imports this
module, never the other way round); the archive job's decode
and finish tasks call them directly, in Ray workers that never import torch (250-450 MB less
per worker). The resize is torch's ``F.interpolate(mode="bilinear", align_corners=False)`` in
float32 (tested against it)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from colorization import color
from colorization.imageio import to_rgb8
from colorization.kernels import resize_bilinear


def pixels_u8(im: Image.Image) -> np.ndarray:
    """The 8-bit pixels the lightness is computed from: ``(H, W)`` for 8-bit grey scans,
    ``(H, W, 3)`` RGB for any other mode (:func:`colorization.imageio.to_rgb8`). Four times
    smaller than the float L, so the archive job carries these between its stages."""
    return np.asarray(im) if im.mode == "L" else np.asarray(to_rgb8(im))


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``(C, H, W)`` -> ``(C, *size)``, bilinear (half-pixel centres, no antialias)."""
    x = np.ascontiguousarray(x, np.float32)
    return x if x.shape[-2:] == tuple(size) else resize_bilinear(x, int(size[0]), int(size[1]))


def lightness_np(pixels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """8-bit pixels (:func:`pixels_u8`) -> (their L ``(H, W)`` in [0, 100], that L resized to
    ``(size, size)`` for the model; ``size`` a multiple of 16), float32."""
    if size % 16:
        raise ValueError(f"size must be a multiple of 16, got {size}")
    L = color.lightness_u8(pixels)
    return L, resize(L[None], (size, size))[0]


def finish_np(
    L_full: np.ndarray, chroma: np.ndarray, kind: str, alpha: Image.Image | None = None
) -> Image.Image:
    """An image's own L ``(H, W)`` + the model's chroma ``(2, h, w)`` (ab of a class model,
    UV of a regression model, ``kind`` ``"classes"`` or ``"uv"``) -> 8-bit RGB (RGBA with
    ``alpha``) PIL image of size W x H: one compiled pass from Lab to 8 bits."""
    up = resize(chroma, L_full.shape)
    if kind != "classes":
        up = np.moveaxis(color.uv_to_ab(L_full, np.moveaxis(up, 0, -1)), -1, 0)
    result = Image.fromarray(color.lab_to_rgb_u8(L_full, up), "RGB")
    if alpha is not None:
        result.putalpha(alpha)
    return result
