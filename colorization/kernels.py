"""Compiled inner loops (numba) where numpy's temporaries cost more than the work.

Each kernel has a plain-numpy twin in its caller's tests, so results are checked, not trusted.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def histogram_pixels(px: np.ndarray, lut: np.ndarray, n_cells: int) -> np.ndarray:
    """uint32 pixels ``R | G << 8 | B << 16 | X << 24`` ``(n,)`` -> counts ``(n_cells,)`` of
    ``lut[px & 0xFFFFFF]``: mask, gather and count in one pass, no temporaries."""
    h = np.zeros(n_cells, np.int64)
    for i in range(px.shape[0]):
        h[lut[px[i] & 0xFFFFFF]] += 1
    return h


@numba.njit(cache=True, nogil=True)
def soft_encode(
    ab: np.ndarray,
    inv_step: float,
    shift: float,
    half: int,
    side: int,
    idx: np.ndarray,
    w: np.ndarray,
    out_idx: np.ndarray,
    out_w: np.ndarray,
) -> None:
    """ab ``(n, 2)`` -> rows of the soft-encoding table ``idx``/``w`` ``(n_fine, k)`` of each
    point's fine-grid cell, written into ``out_idx``/``out_w`` ``(n, k)``."""
    k = idx.shape[1]
    for p in range(ab.shape[0]):
        ia = min(max(int(np.floor(ab[p, 0] * inv_step + shift)) + half, 0), side - 1)
        ib = min(max(int(np.floor(ab[p, 1] * inv_step + shift)) + half, 0), side - 1)
        c = ia * side + ib
        for j in range(k):
            out_idx[p, j] = idx[c, j]
            out_w[p, j] = w[c, j]


@numba.njit(cache=True, nogil=True)
def hard_encode(
    ab: np.ndarray, inv_step: float, shift: float, half: int, side: int, table: np.ndarray
) -> np.ndarray:
    """ab ``(n, 2)`` -> ``table[cell]`` ``(n,)`` for each point's fine-grid cell."""
    out = np.empty(ab.shape[0], table.dtype)
    for p in range(ab.shape[0]):
        ia = min(max(int(np.floor(ab[p, 0] * inv_step + shift)) + half, 0), side - 1)
        ib = min(max(int(np.floor(ab[p, 1] * inv_step + shift)) + half, 0), side - 1)
        out[p] = table[ia * side + ib]
    return out


@numba.njit(cache=True, nogil=True)
def lab_to_rgb_u8(
    L: np.ndarray,
    ab: np.ndarray,
    white: np.ndarray,
    rgb_from_xyz: np.ndarray,
    thresholds: np.ndarray,
    coarse: np.ndarray,
) -> np.ndarray:
    """Lab (``L`` ``(H, W)``, ``ab`` ``(2, H, W)``) -> 8-bit sRGB ``(H, W, 3)`` in one pass.

    The sRGB encoding and the rounding to 8 bits are one step: the 8-bit value of a linear
    value ``x`` is the number of ``thresholds`` (the linear values of the 255 rounding
    boundaries) at or below ``x``; ``coarse`` (the count at ``i / len(coarse)``) gives the
    starting point, so no power is computed per channel."""
    h, w = L.shape
    out = np.empty((h, w, 3), np.uint8)
    n_coarse = coarse.shape[0] - 1
    eps, kappa = 0.2068966, 7.787
    for y in range(h):
        for x in range(w):
            fy = (L[y, x] + 16.0) / 116.0
            fx = ab[0, y, x] / 500.0 + fy
            fz = max(fy - ab[1, y, x] / 200.0, 0.0)
            tx = fx * fx * fx if fx > eps else (fx - 16.0 / 116.0) / kappa
            ty = fy * fy * fy if fy > eps else (fy - 16.0 / 116.0) / kappa
            tz = fz * fz * fz if fz > eps else (fz - 16.0 / 116.0) / kappa
            X, Y, Z = tx * white[0], ty * white[1], tz * white[2]
            for c in range(3):
                lin = rgb_from_xyz[c, 0] * X + rgb_from_xyz[c, 1] * Y + rgb_from_xyz[c, 2] * Z
                if lin <= 0.0:
                    out[y, x, c] = 0
                    continue
                if lin >= 1.0:
                    out[y, x, c] = 255
                    continue
                v = coarse[int(lin * n_coarse)]
                while v < 255 and lin >= thresholds[v]:
                    v += 1
                out[y, x, c] = v
    return out
