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
