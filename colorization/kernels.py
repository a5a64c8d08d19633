"""Compiled inner loops (numba) where numpy's temporaries cost more than the work.

Each kernel has a plain-numpy twin in its caller's tests, so results are checked, not trusted.
"""

from __future__ import annotations

import numba
import numpy as np

# The parallel kernels run on numba's own thread pool, never the OpenMP one: after a parallel
# kernel, numba's OpenMP layer left a thread spinning at ~70% of a core (measured: a one-thread
# torch loop went from 0.97 to 1.71 CPU per wall second after one annealed-mean decode),
# which took CPU from training (rank 0 after each validation) and the archive job's actors.
# The work-queue layer's threads sleep between kernels; each process calls the kernels from
# one thread at a time, which is all that layer needs.
numba.config.THREADING_LAYER = "workqueue"


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
    boundaries, then +inf) at or below ``x``; ``coarse`` (the count at ``i / (len(coarse) -
    1)``) is that number within one, so no power is computed per channel and no data-dependent
    branch is taken (those mispredicted and cost most of the pass)."""
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
                lin = min(max(lin, 0.0), 1.0)  # out of gamut: clipped
                v = coarse[int(lin * n_coarse)]
                out[y, x, c] = v + (lin >= thresholds[v])  # at most one step, no branch
    return out


@numba.njit(cache=True, nogil=True)
def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """float32 ``(C, H, W)`` -> ``(C, out_h, out_w)``, bilinear with half-pixel centres: torch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing) in float32."""
    c, h, w = x.shape
    out = np.empty((c, out_h, out_w), np.float32)
    sh, sw = np.float32(h / out_h), np.float32(w / out_w)
    half, one = np.float32(0.5), np.float32(1.0)
    x0s, x1s = np.empty(out_w, np.int64), np.empty(out_w, np.int64)
    lxs = np.empty(out_w, np.float32)
    for ox in range(out_w):  # the columns' sources, once
        fx = max(sw * (np.float32(ox) + half) - half, np.float32(0.0))
        x0s[ox] = min(int(fx), w - 1)
        x1s[ox] = x0s[ox] + 1 if x0s[ox] < w - 1 else x0s[ox]
        lxs[ox] = fx - np.float32(x0s[ox])
    for k in range(c):
        for oy in range(out_h):
            fy = max(sh * (np.float32(oy) + half) - half, np.float32(0.0))
            y0 = min(int(fy), h - 1)
            y1 = y0 + 1 if y0 < h - 1 else y0
            ly = fy - np.float32(y0)
            for ox in range(out_w):
                x0, x1, lx = x0s[ox], x1s[ox], lxs[ox]
                top = (one - lx) * x[k, y0, x0] + lx * x[k, y0, x1]
                bottom = (one - lx) * x[k, y1, x0] + lx * x[k, y1, x1]
                out[k, oy, ox] = (one - ly) * top + ly * bottom
    return out


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def annealed_mean(logits: np.ndarray, centres: np.ndarray, inv_t: float) -> np.ndarray:
    """Class logits ``(N, Q, P)`` -> the mean ab ``(N, 2, P)`` of ``softmax(logits / T)``.

    Two passes over the logits per block of pixels (the maximum, then the weighted sums), so
    no ``(N, Q, P)`` temporary is written; blocks run in parallel."""
    n, q, p = logits.shape
    out = np.empty((n, 2, p), np.float32)
    block = 512
    n_blocks = (p + block - 1) // block
    for job in numba.prange(n * n_blocks):
        i = job // n_blocks
        j0 = (job % n_blocks) * block
        j1 = min(j0 + block, p)
        w = j1 - j0
        top = np.full(w, -np.inf, np.float32)
        for k in range(q):
            for j in range(w):
                v = logits[i, k, j0 + j]
                if v > top[j]:
                    top[j] = v
        s = np.zeros(w, np.float32)
        sa = np.zeros(w, np.float32)
        sb = np.zeros(w, np.float32)
        for k in range(q):
            a, b = centres[k, 0], centres[k, 1]
            for j in range(w):
                e = np.exp((logits[i, k, j0 + j] - top[j]) * inv_t)
                s[j] += e
                sa[j] += e * a
                sb[j] += e * b
        for j in range(w):
            out[i, 0, j0 + j] = sa[j] / s[j]
            out[i, 1, j0 + j] = sb[j] / s[j]
    return out


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def annealed_mean_nhwc(logits: np.ndarray, centres: np.ndarray, inv_t: float) -> np.ndarray:
    """As :func:`annealed_mean` for pixel-major logits ``(N, P, Q)`` (channels-last models):
    each pixel's Q logits are contiguous, read twice from cache."""
    n, p, q = logits.shape
    out = np.empty((n, 2, p), np.float32)
    for job in numba.prange(n * p):
        i = job // p
        j = job % p
        top = -np.inf
        for k in range(q):
            top = max(top, logits[i, j, k])
        s = np.float32(0.0)
        sa = np.float32(0.0)
        sb = np.float32(0.0)
        for k in range(q):
            e = np.exp((logits[i, j, k] - top) * inv_t)
            s += e
            sa += e * centres[k, 0]
            sb += e * centres[k, 1]
        out[i, 0, j] = sa / s
        out[i, 1, j] = sb / s
    return out
