"""Image-quality metrics used by the colorization literature, on 8-bit RGB images.

- :func:`psnr`: peak signal-to-noise ratio over all three channels, peak 255.
- :func:`ssim`: structural similarity, the algorithm of ``skimage.metrics.structural_similarity``
  (mean of per-channel SSIM; 7x7 uniform window by default, or an 11x11 Gaussian window with
  sigma 1.5 as in Wang et al. 2004 when ``gaussian_weights=True``).
- :func:`colorfulness`: Hasler & Suesstrunk (2003), "Measuring colourfulness in natural images":
  ``M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2)`` with ``rg = R - G`` and
  ``yb = (R + G) / 2 - B`` on 0..255 values.
  ``form="abs"`` (the default) uses ``|rg|`` and ``|yb|``: the form of the widely copied
  implementation that published colorization tables report (its means are of magnitudes, so a
  balanced image still scores). ``form="signed"`` is the paper's definition.
- :func:`ab_error`, :func:`error_counts`, :func:`auc_of_counts`: the AuC of Zhang, Isola &
  Efros (ECCV 2016), "Colorful Image Colorization": the per-pixel Euclidean
  distance between the output's and the original's ab (CIE Lab, :mod:`colorization.color`),
  the fraction of pixels within each threshold 0, 1, ..., 150 (the CDF of that error), and the
  area under that curve normalised to [0, 1] (trapezoid rule over the thresholds, divided by
  150): 1 when every pixel's ab is exact. The counts are weighted sums, so one curve can pool
  the pixels of a whole set and weight them (class rebalancing: :mod:`colorization.evaluation`).
- :func:`warping_error`, :class:`FlickerMeter`: the flicker of a video, the warping error of Lai
  et al. (ECCV 2018), "Learning Blind Video Temporal Consistency": the previous output frame
  warped onto the current one along the optical flow of the grey input frames, and the squared
  RGB difference (values in [0, 1], summed over the channels) averaged over the pixels that
  the flow says are visible in both frames (:func:`colorization.flow.visible`), then over the
  frame pairs. 0 for colour that moves exactly with the picture. A colorization keeps its
  input's L, so most of this figure is the L's (the warping error of the grey video itself);
  the same measure on the ab channels (``space="ab"``, Lab units squared) is the flicker of
  the colour alone. Lai et al.'s videos are single shots; a pair across a shot cut has no
  motion to follow (the flow matches unrelated pictures, and its error is 30 to 130 times a
  pair's within a shot), so :class:`FlickerMeter` leaves such pairs out of its figure and
  counts them apart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from colorization import color

_K1, _K2 = 0.01, 0.03
#: the AuC's thresholds on the ab error are 0, 1, ..., AUC_MAX_ERROR (Zhang et al. 2016)
AUC_MAX_ERROR = 150


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"metrics take uint8 RGB images, got {a.dtype} and {b.dtype}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (``inf`` when identical)."""
    x, y = _check_pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _ssim_channel(x: np.ndarray, y: np.ndarray, gaussian_weights: bool) -> float:
    if gaussian_weights:
        sigma, truncate = 1.5, 3.5
        win = 2 * int(truncate * sigma + 0.5) + 1

        def filt(z: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(z, sigma, truncate=truncate, mode="reflect")
    else:
        win = 7

        def filt(z: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(z, size=win)

    if min(x.shape) < win:
        raise ValueError(f"image side {min(x.shape)} is smaller than the SSIM window {win}")
    n = win**2
    cov_norm = n / (n - 1.0)  # sample covariance, as skimage
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (_K1 * 255.0) ** 2, (_K2 * 255.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(a: np.ndarray, b: np.ndarray, gaussian_weights: bool = False) -> float:
    """SSIM of two uint8 images, ``(H, W)`` or ``(H, W, C)``; data range 255."""
    x, y = _check_pair(a, b)
    if x.ndim == 2:
        return _ssim_channel(x, y, gaussian_weights)
    return float(
        np.mean([_ssim_channel(x[..., c], y[..., c], gaussian_weights) for c in range(x.shape[-1])])
    )


def colorfulness(rgb: np.ndarray, form: Literal["abs", "signed"] = "abs") -> float:
    """Hasler-Suesstrunk colourfulness of a uint8 RGB image ``(H, W, 3)`` (see module doc)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    if form == "abs":
        rg, yb = np.abs(rg), np.abs(yb)
    elif form != "signed":
        raise ValueError(f"form must be 'abs' or 'signed', got {form!r}")
    std = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mean = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(std + 0.3 * mean)


def ab_error(truth: np.ndarray, output: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 Euclidean distance between the ab of two uint8 RGB images (Lab units)."""
    _check_pair(truth, output)
    diff = (
        color.rgb_to_lab(np.asarray(truth))[..., 1:] - color.rgb_to_lab(np.asarray(output))[..., 1:]
    )
    return np.sqrt((diff**2).sum(-1))


def error_counts(err: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(AUC_MAX_ERROR + 2,)`` float64: the total weight (the count when ``weights`` is None) of
    the pixels whose error is within threshold t but not t - 1, for t = 0 .. AUC_MAX_ERROR; the
    last entry holds the pixels beyond AUC_MAX_ERROR. Add the counts of several images to pool
    their pixels into one curve."""
    err = np.asarray(err, dtype=np.float64)
    if weights is not None and np.shape(weights) != err.shape:
        raise ValueError(f"weights {np.shape(weights)} do not match the errors {err.shape}")
    bins = np.minimum(np.ceil(err), AUC_MAX_ERROR + 1).astype(np.int64).ravel()
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return np.bincount(bins, weights=w, minlength=AUC_MAX_ERROR + 2).astype(np.float64)


def auc_of_counts(counts: np.ndarray) -> float:
    """Area under the error's CDF at thresholds 0 .. AUC_MAX_ERROR, normalised to [0, 1]."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (AUC_MAX_ERROR + 2,) or counts.sum() <= 0:
        raise ValueError(f"expected {AUC_MAX_ERROR + 2} counts with a positive total")
    cdf = np.cumsum(counts)[: AUC_MAX_ERROR + 1] / counts.sum()
    return float((cdf.sum() - 0.5 * (cdf[0] + cdf[-1])) / AUC_MAX_ERROR)


def ab_auc(truth: np.ndarray, output: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Zhang et al.'s AuC of one output against its original (``weights``: per pixel, optional)."""
    return auc_of_counts(error_counts(ab_error(truth, output), weights))


#: the warping error's flow is computed on the grey frames scaled to at most this many pixels
#: on the longer side (Farneback's flow: another method than the stabilizer's DIS, so that the
#: metric does not share its errors), then resampled to the frames' full resolution
WARP_FLOW_SIDE = 480


def frame_flow(
    prev_grey: np.ndarray, grey: np.ndarray, flow_side: int | None = WARP_FLOW_SIDE
) -> tuple[np.ndarray, np.ndarray]:
    """The flow from the current grey frame to the previous one at full resolution
    ``(H, W, 2)``, and the bool ``(H, W)`` mask of the current frame's pixels visible in both
    (:func:`colorization.flow.visible`); grey frames uint8 ``(H, W)``."""
    # OpenCV loads only when a video is measured: the archive job's workers import this module
    # for colourfulness alone
    from colorization import flow as fl

    size = fl.fit_side(grey.shape, flow_side)
    a, b = fl.shrink(grey, size), fl.shrink(prev_grey, size)
    fw = fl.resize_flow(fl.farneback_flow(a, b), grey.shape[:2])
    bw = fl.resize_flow(fl.farneback_flow(b, a), grey.shape[:2])
    return fw, fl.visible(fw, bw)


def flicker_space(rgb: np.ndarray, space: Literal["rgb", "ab"] = "rgb") -> np.ndarray:
    """A uint8 RGB frame in the units of a warping error: ``"rgb"`` float32 ``(H, W, 3)`` in
    [0, 1] (Lai et al.), ``"ab"`` its CIE Lab a and b ``(H, W, 2)`` (the colour alone, which is
    all a colorization chooses: its L is the input's)."""
    if space == "rgb":
        return np.asarray(rgb, np.float32) / 255.0
    if space == "ab":
        return color.rgb_to_lab(np.asarray(rgb))[..., 1:].astype(np.float32)
    raise ValueError(f"space must be 'rgb' or 'ab', got {space!r}")


def warping_error(
    prev_out: np.ndarray,
    out: np.ndarray,
    flow: np.ndarray,
    mask: np.ndarray,
    space: Literal["rgb", "ab"] = "rgb",
) -> float:
    """Lai et al.'s warping error of one frame pair: uint8 RGB ``(H, W, 3)`` outputs, ``flow``
    and ``mask`` from :func:`frame_flow` (current -> previous); the squared difference summed
    over the channels of ``space`` (:func:`flicker_space`). With no visible pixel, the mean
    over all pixels (as their code does)."""
    return _warped_difference(flicker_space(prev_out, space), flicker_space(out, space), flow, mask)


def _warped_difference(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray, mask: np.ndarray):
    from colorization.flow import warp

    warped, _ = warp(prev, flow)
    diff2 = ((cur - warped) ** 2).sum(-1)
    n = int(mask.sum())
    return float(diff2[mask].sum() / n) if n else float(diff2.mean())


class FlickerMeter:
    """The warping error of one or more videos of the same grey frames (a colorization, its
    original, another colorization), fed a frame at a time: one flow per frame pair serves all,
    and every ``space`` (:func:`flicker_space`) asked for. A frame fed with ``cut=True`` starts
    a new shot: the pair that ends on it is measured apart (:meth:`of` with ``cuts=True``),
    not in the figure.

    >>> meter = FlickerMeter(2)
    >>> for grey, a, b, cut in frames:  # doctest: +SKIP
    ...     meter.add(grey, a, b, cut=cut)
    >>> meter.values  # doctest: +SKIP
    [0.0012, 0.0034]
    """

    def __init__(
        self,
        videos: int = 1,
        flow_side: int | None = WARP_FLOW_SIDE,
        spaces: tuple[str, ...] = ("rgb",),
    ):
        self.flow_side = flow_side
        self.spaces = spaces
        self._sums = {(s, c): [0.0] * videos for s in spaces for c in (False, True)}
        self.pairs = 0  # frame pairs within a shot
        self.cut_pairs = 0  # frame pairs across a shot cut
        self._prev: tuple[np.ndarray, list[dict[str, np.ndarray]]] | None = None

    def add(self, grey: np.ndarray, *frames: np.ndarray, cut: bool = False) -> None:
        """The next grey frame uint8 ``(H, W)`` and each video's uint8 RGB frame; ``cut``:
        whether this frame starts a new shot."""
        n = len(self._sums[self.spaces[0], False])
        if len(frames) != n:
            raise ValueError(f"expected {n} frames, got {len(frames)}")
        cur = [{s: flicker_space(f, s) for s in self.spaces} for f in frames]
        if self._prev is not None:
            prev_grey, prev = self._prev
            flow, mask = frame_flow(prev_grey, grey, self.flow_side)
            for s in self.spaces:
                for i, (p, c) in enumerate(zip(prev, cur, strict=True)):
                    self._sums[s, cut][i] += _warped_difference(p[s], c[s], flow, mask)
            self.cut_pairs += cut
            self.pairs += not cut
        self._prev = (grey, cur)

    def of(self, space: str = "rgb", cuts: bool = False) -> list[float]:
        """Each video's mean warping error in ``space`` over the frame pairs within a shot so
        far (with ``cuts``: over the pairs across a cut); NaN where there are none."""
        n = self.cut_pairs if cuts else self.pairs
        return [v / n if n else float("nan") for v in self._sums[space, cuts]]

    @property
    def values(self) -> list[float]:
        """:meth:`of` the first space (Lai et al.'s ``"rgb"`` by default)."""
        return self.of(self.spaces[0])
