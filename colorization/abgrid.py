"""The quantization grid of the ab plane and the 8-bit sRGB -> grid-cell lookup table.

A centred grid of step ``g`` (the class grid) has cell centres at integer multiples of ``g``
on both axes, from ``-half * g`` to ``half * g`` with ``half = ceil(ab_max / g)``; a value maps
to the nearest centre (round half up). An edge-aligned grid (``centred=False``, the fine grid of
the encoding tables) has cell edges at the multiples of ``g`` instead, so that the Voronoi
boundaries of a coarser centred grid (at odd multiples of half its step) fall on cell edges,
never through a cell. Cells are numbered a-major: ``cell = ia * side + ib``.

Every 8-bit sRGB colour is addressed by its 24-bit code ``R | G << 8 | B << 16`` (the byte
order of an RGBX pixel read as a little-endian uint32), so a whole decoded image maps to cells
with one gather into :meth:`AbGrid.rgb_cell_lut` (``2**24`` uint16 entries, 32 MiB).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colorization import color

#: ab extent covered by the default grid: 8-bit sRGB spans a in [-86, 98], b in [-108, 95]
#: and the 313-class table of Zhang et al. spans a in [-90, 100], b in [-110, 100].
AB_MAX = 110.0
N_RGB_CODES = 1 << 24
_LUT_VERSION = "1"  # bump when colour constants or rounding change


def rgb_code(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``(..., 3)`` -> uint32 ``(...)`` code ``R | G << 8 | B << 16``."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    return (
        rgb[..., 0].astype(np.uint32)
        | (rgb[..., 1].astype(np.uint32) << 8)
        | (rgb[..., 2].astype(np.uint32) << 16)
    )


def code_to_rgb(code: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_code`."""
    code = np.asarray(code, dtype=np.uint32)
    return np.stack([code & 255, (code >> 8) & 255, (code >> 16) & 255], axis=-1).astype(np.uint8)


def cache_dir() -> Path:
    """Where derived lookup tables are cached (``$COLORIZATION_CACHE`` or ``~/.cache``)."""
    root = os.environ.get("COLORIZATION_CACHE") or Path.home() / ".cache" / "colorization"
    return Path(root)


@dataclass(frozen=True)
class AbGrid:
    """A square quantization grid of the ab plane (step in ab units)."""

    step: float = 10.0
    ab_max: float = AB_MAX
    centred: bool = True

    def __post_init__(self) -> None:
        if not (0 < self.step <= self.ab_max):
            raise ValueError(f"grid step must be in (0, {self.ab_max}], got {self.step}")

    @property
    def half(self) -> int:
        return math.ceil(self.ab_max / self.step - 1e-9)

    @property
    def side(self) -> int:
        return 2 * self.half + int(self.centred)

    @property
    def _shift(self) -> float:
        return 0.5 if self.centred else 0.0

    @property
    def n_cells(self) -> int:
        return self.side**2

    def centres(self) -> np.ndarray:
        """``(n_cells, 2)`` float64 ab centre of every cell, in cell order."""
        axis = (np.arange(self.side) - self.half + 0.5 - self._shift) * self.step
        a, b = np.meshgrid(axis, axis, indexing="ij")
        return np.stack([a.ravel(), b.ravel()], axis=-1)

    def axis_index(self, v: np.ndarray) -> np.ndarray:
        """ab values -> index along one axis (nearest centre, clipped to the grid)."""
        i = np.floor(np.asarray(v, dtype=np.float64) / self.step + self._shift).astype(np.int64)
        return np.clip(i + self.half, 0, self.side - 1)

    def cell_of_t(self, ab: torch.Tensor) -> torch.Tensor:
        """Torch twin of :meth:`cell_of` for channel-first ab ``(N, 2, H, W)`` -> ``(N, H, W)``."""
        i = torch.floor(ab.double() / self.step + self._shift).long() + self.half
        i = i.clamp(0, self.side - 1)
        return i[:, 0] * self.side + i[:, 1]

    def cell_of(self, ab: np.ndarray) -> np.ndarray:
        """ab ``(..., 2)`` -> cell index ``(...)`` int64."""
        ab = np.asarray(ab)
        return self.axis_index(ab[..., 0]) * self.side + self.axis_index(ab[..., 1])

    def on_grid(self, ab: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Whether each ab point ``(..., 2)`` is a cell centre of this grid."""
        q = np.asarray(ab, dtype=np.float64) / self.step - 0.5 + self._shift
        inside = np.abs(ab).max(axis=-1) <= self.half * self.step + tol
        return (np.abs(q - np.rint(q)).max(axis=-1) < tol) & inside

    def rgb_cell_lut(self) -> np.ndarray:
        """``(2**24,)`` uint16: the cell of every 8-bit sRGB colour, indexed by :func:`rgb_code`.

        Computed once in float64 (a few seconds), then cached in memory and on disk.
        """
        return _rgb_cell_lut(self.step, self.ab_max, self.centred)


def _compute_rgb_cell_lut(grid: AbGrid, chunk: int = 1 << 21) -> np.ndarray:
    out = np.empty(N_RGB_CODES, dtype=np.uint16)
    for start in range(0, N_RGB_CODES, chunk):
        codes = np.arange(start, min(start + chunk, N_RGB_CODES), dtype=np.uint32)
        lab = color.rgb_to_lab(code_to_rgb(codes))
        out[start : start + len(codes)] = grid.cell_of(lab[..., 1:])
    return out


@functools.lru_cache(maxsize=4)
def _rgb_cell_lut(step: float, ab_max: float, centred: bool) -> np.ndarray:
    grid = AbGrid(step, ab_max, centred)
    if grid.n_cells > np.iinfo(np.uint16).max:
        raise ValueError(f"a {step:g}-grid has {grid.n_cells} cells, too many for a uint16 table")
    kind = "c" if centred else "e"
    path = cache_dir() / f"rgb_cell_lut_v{_LUT_VERSION}_{kind}{step:g}_m{ab_max:g}.npy"
    if path.exists():
        try:
            lut = np.load(path, allow_pickle=False)
            if lut.shape == (N_RGB_CODES,) and lut.dtype == np.uint16:
                return lut
        except (OSError, ValueError):
            pass  # unreadable cache: recompute and overwrite below
    lut = _compute_rgb_cell_lut(grid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, lut)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the recomputation next time
    return lut
