"""Optical flow between grey frames, backward warping along it, and which pixels it says are
visible in both frames: what the video stabilizer (:mod:`colorization.video`) and the flicker
metric (:func:`colorization.metrics.warping_error`) share.

Conventions: a flow ``(H, W, 2)`` float32 from frame A to frame B holds, for each pixel ``p``
of A, the displacement ``(dx, dy)`` in pixels such that ``p + flow[p]`` is where that point
lies in B. :func:`warp` samples B there, which brings B onto A's pixel grid ("backward
warping"). Grey frames are uint8 ``(H, W)``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: DIS presets by name (OpenCV's ``DISOPTICAL_FLOW_PRESET_*``)
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def grey_u8(L: np.ndarray) -> np.ndarray:
    """Lab L ``(H, W)`` in [0, 100] -> uint8 grey frame (L scaled to 0..255)."""
    return np.clip(np.asarray(L, np.float32) * 2.55 + 0.5, 0, 255).astype(np.uint8)


def fit_side(shape: tuple[int, ...], max_side: int | None) -> tuple[int, int]:
    """``(h, w)`` of a frame of ``shape`` scaled (aspect kept) so that its longer side is at
    most ``max_side`` (unchanged when it already is, or when ``max_side`` is None)."""
    h, w = int(shape[0]), int(shape[1])
    if max_side is None or max(h, w) <= max_side:
        return h, w
    k = max_side / max(h, w)
    return max(1, round(h * k)), max(1, round(w * k))


def shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` ``(H, W[, C])`` resized to ``size`` ``(h, w)`` by area averaging."""
    if img.shape[:2] == tuple(size):
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class DisFlow:
    """OpenCV's DIS flow (Kroeger et al., ECCV 2016) at one preset; one instance per thread."""

    def __init__(self, preset: str = "fast"):
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 from grey frame ``a`` to grey frame ``b``."""
        return self._dis.calc(a, b, None)


def farneback_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback's dense flow (OpenCV, its documented example settings: 3 levels halving the
    size, 15 px window, 3 iterations, degree-5 polynomials with sigma 1.2) from ``a`` to ``b``."""
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field resampled (bilinear) to ``size`` ``(h, w)``, its vectors scaled with it."""
    h, w = flow.shape[:2]
    if (h, w) == tuple(size):
        return flow
    out = cv2.resize(flow, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= size[1] / w
    out[..., 1] *= size[0] / h
    return out


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward warping: ``out[p] = img[p + flow[p]]`` (bilinear), and a bool ``(H, W)`` mask of
    the pixels whose source ``p + flow[p]`` lies inside ``img``. ``img`` is ``(H, W)`` or
    ``(H, W, C)`` (C <= 4), float32 or uint8; pixels outside take the nearest edge value."""
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out, inside


def fb_error(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Forward-backward inconsistency ``|fw(p) + bw(p + fw(p))|`` in pixels, ``(H, W)``: near 0
    where following the flow there and back returns to ``p``, large where ``p`` is occluded
    in the other frame or the flow is wrong."""
    back, _ = warp(bw, fw)
    return np.sqrt(((fw + back) ** 2).sum(-1))


def visible(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: the pixels of frame A that the flows say are visible in frame B too
    (``fw`` A -> B, ``bw`` B -> A), by the tests of Ruder et al. (GCPR 2016) that Lai et al.
    (ECCV 2018) take for the warping error: consistent forward and backward flow
    (``|fw + bw~|^2 < 0.01 (|fw|^2 + |bw~|^2) + 0.5``, ``bw~`` the backward flow warped onto
    A), not on a motion boundary (``|grad u|^2 + |grad v|^2 < 0.01 |fw|^2 + 0.002``) and
    landing inside B."""
    back, inside = warp(bw, fw)
    consistent = ((fw + back) ** 2).sum(-1) < 0.01 * ((fw**2).sum(-1) + (back**2).sum(-1)) + 0.5
    gu = np.gradient(fw[..., 0])
    gv = np.gradient(fw[..., 1])
    grad2 = gu[0] ** 2 + gu[1] ** 2 + gv[0] ** 2 + gv[1] ** 2
    boundary = grad2 > 0.01 * (fw**2).sum(-1) + 0.002
    return consistent & ~boundary & inside
