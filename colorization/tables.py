"""Colour-class tables: the quantized ab gamut, the class lookup tables, the prior and the
class-rebalancing weights of a classification-loss colorizer (Zhang et al., ECCV 2016; the
thesis' 'category transformation matrix' and 'category balance matrix').

A :class:`ColorTable` holds Q classes, each an ab cell centre of an :class:`AbGrid`:

- ``cell_to_class`` ``(n_cells,)``: every grid cell -> its class (out-of-gamut cells -> nearest);
- :meth:`ColorTable.rgb_to_class_lut` ``(2**24,)``: every 8-bit sRGB colour -> its class;
- ``prior`` p ``(Q,)``, its Gaussian-smoothed form, and the rebalancing weights
  ``w ~ ((1 - lambda) * p_smoothed + lambda / Q) ** -1`` normalised so that ``sum(p * w) == 1``
  (the expected per-pixel loss weight over the data is 1; Zhang et al. normalise with the
  smoothed prior, which differs by well under 1%).

Encoding (ab -> class) is a gather, never a per-pixel search: hard encoding through the cell
table, soft encoding (k nearest classes, Gaussian weights) through a table precomputed on a
fine ab grid (``soft_step`` ab units). Decoding turns class probabilities into ab.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from colorization.abgrid import AB_MAX, AbGrid, rgb_code
from colorization.kernels import hard_encode, soft_encode
from colorization.shipped import DEFAULT_TEMPERATURE

FORMAT_NAME = "colorization.color-table"
FORMAT_VERSION = 1
METADATA_KEY = b"colorization.table"
COLUMNS = {
    "id": pa.int32(),
    "a": pa.float64(),
    "b": pa.float64(),
    "count": pa.int64(),
    "prior": pa.float64(),
    "prior_smoothed": pa.float64(),
    "weight": pa.float64(),
}
#: extent of the encoding tables: all of the usual Lab ab range, still < 2**16 cells at step 1
FINE_AB_MAX = 127.0
DecodeMode = Literal["annealed", "mean", "mode"]


class TableFormatError(ValueError):
    """A file that is not a valid colour-class table, with what is wrong with it."""


@dataclass(frozen=True)
class TableParams:
    """How a table was derived from a histogram (saved in the file)."""

    grid: float = 10.0
    ab_max: float = AB_MAX
    min_count: int = 1  # a cell joins the gamut with at least this many pixels ...
    min_mass: float = 0.0  # ... and at least this fraction of all pixels
    sigma: float = 5.0  # Gaussian smoothing of the prior, ab units
    lam: float = 0.5  # mixing with the uniform distribution
    soft_k: int = 10  # soft encoding: neighbours ...
    soft_sigma: float = 5.0  # ... and their Gaussian width, ab units
    soft_step: float = 1.0  # resolution of the soft-encoding table, ab units


@dataclass
class ColorTable:
    """Q colour classes with their prior and weights. Build with :meth:`from_histogram`,
    :meth:`from_centres` or :meth:`load`; arrays are read-only after construction."""

    centres: np.ndarray  # (Q, 2) float64 ab
    counts: np.ndarray  # (Q,) int64 pixels per class (zeros when unknown)
    prior: np.ndarray  # (Q,) float64, sums to 1
    prior_smoothed: np.ndarray  # (Q,) float64, sums to 1
    weights: np.ndarray  # (Q,) float64, sum(prior * weights) == 1
    params: TableParams = field(default_factory=TableParams)
    provenance: dict[str, Any] = field(default_factory=dict)  # source, n_images, n_pixels, ...

    def __post_init__(self) -> None:
        for name in ("centres", "counts", "prior", "prior_smoothed", "weights"):
            getattr(self, name).setflags(write=False)

    # --- construction ----------------------------------------------------------------------
    @property
    def grid(self) -> AbGrid:
        return AbGrid(self.params.grid, self.params.ab_max)

    @property
    def num_classes(self) -> int:
        return len(self.centres)

    @classmethod
    def from_histogram(
        cls, hist: np.ndarray, params: TableParams = TableParams(), **provenance: Any
    ) -> ColorTable:
        """Build from a histogram over the cells of ``AbGrid(params.grid, params.ab_max)``."""
        grid = AbGrid(params.grid, params.ab_max)
        hist = np.asarray(hist, dtype=np.int64)
        if hist.shape != (grid.n_cells,):
            raise ValueError(f"histogram has shape {hist.shape}, grid needs ({grid.n_cells},)")
        total = int(hist.sum())
        if total == 0:
            raise ValueError("the histogram is empty: no pixels were counted")
        keep = (hist >= max(params.min_count, 1)) & (hist >= params.min_mass * total)
        centres = grid.centres()[keep]
        provenance.setdefault("n_pixels", total)
        provenance["n_pixels_outside_gamut"] = int(total - hist[keep].sum())
        return cls._derive(centres, hist[keep], params, provenance)

    @classmethod
    def from_centres(
        cls,
        centres: np.ndarray,
        counts: np.ndarray | None = None,
        params: TableParams = TableParams(),
        **provenance: Any,
    ) -> ColorTable:
        """Build from given class centres (e.g. Zhang et al.'s 313), with optional counts;
        without counts the prior is uniform."""
        centres = np.asarray(centres, dtype=np.float64)
        grid = AbGrid(params.grid, params.ab_max)
        if centres.ndim != 2 or centres.shape[1] != 2 or len(centres) == 0:
            raise ValueError(f"centres must be (Q, 2), got {centres.shape}")
        if not grid.on_grid(centres).all():
            raise ValueError(f"centres are not all on the {params.grid:g}-grid within the extent")
        if len(np.unique(grid.cell_of(centres))) != len(centres):
            raise ValueError("centres repeat a grid cell")
        counts = np.zeros(len(centres), np.int64) if counts is None else np.asarray(counts)
        return cls._derive(centres, counts.astype(np.int64), params, provenance)

    @classmethod
    def _derive(
        cls, centres: np.ndarray, counts: np.ndarray, params: TableParams, prov: dict
    ) -> ColorTable:
        q = len(centres)
        total = counts.sum()
        prior = counts / total if total > 0 else np.full(q, 1.0 / q)
        d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        kernel = np.exp(-d2 / (2 * params.sigma**2))
        smoothed = (kernel / kernel.sum(0, keepdims=True)) @ prior  # each class spreads its mass
        smoothed /= smoothed.sum()
        weights = 1.0 / ((1 - params.lam) * smoothed + params.lam / q)
        weights /= (prior * weights).sum()
        return cls(centres, counts, prior, smoothed, weights, params, dict(prov))

    # --- lookup tables (derived, cached per instance) ----------------------------------------
    @functools.cached_property
    def cell_to_class(self) -> np.ndarray:
        """``(n_cells,)`` int64: the class of every grid cell; outside the gamut, the nearest."""
        cells = self.grid.centres()
        d2 = ((cells[:, None, :] - self.centres[None, :, :]) ** 2).sum(-1)
        return d2.argmin(1)

    @property
    def fine_grid(self) -> AbGrid:
        """The grid of the encoding tables (``soft_step`` ab units, 1 by default)."""
        return AbGrid(self.params.soft_step, FINE_AB_MAX, centred=False)

    @functools.cached_property
    def fine_to_class(self) -> np.ndarray:
        """``(n_fine,)`` int64: the nearest class of every fine-grid cell (hard encoding)."""
        return self.soft_table[0][:, 0]

    def rgb_to_class_lut(self) -> np.ndarray:
        """``(2**24,)`` uint16: the nearest class of every 8-bit sRGB colour (index: ``rgb_code``)."""
        return self._rgb_lut

    @functools.cached_property
    def _rgb_lut(self) -> np.ndarray:
        lut = np.take(self.fine_to_class.astype(np.uint16), self.fine_grid.rgb_cell_lut())
        lut.setflags(write=False)
        return lut

    @functools.cached_property
    def _soft_table_t(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx, w = self.soft_table
        return torch.from_numpy(idx.copy()), torch.from_numpy(w.copy())

    @functools.cached_property
    def soft_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(idx (n_fine, k) int64, w (n_fine, k) float32)`` on the fine grid ``soft_step``."""
        pts = self.fine_grid.centres()
        d2 = ((pts[:, None, :] - self.centres[None, :, :]) ** 2).sum(-1)
        k = min(self.params.soft_k, self.num_classes)
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < self.num_classes else None
        if idx is None:
            idx = np.tile(np.arange(k), (len(pts), 1))
        dk = np.take_along_axis(d2, idx, 1)
        order = np.argsort(dk, axis=1, kind="stable")
        idx, dk = np.take_along_axis(idx, order, 1), np.take_along_axis(dk, order, 1)
        w = np.exp(-dk / (2 * self.params.soft_sigma**2))
        w /= w.sum(1, keepdims=True)
        return idx, w.astype(np.float32)

    # --- encoding / decoding ------------------------------------------------------------------
    def encode_hard(self, ab: np.ndarray) -> np.ndarray:
        """ab ``(..., 2)`` -> nearest class ``(...)`` int64, one gather in the fine table
        (exact but for points within ``soft_step / 2`` of a tie between two classes)."""
        flat = np.ascontiguousarray(ab, dtype=np.float64).reshape(-1, 2)
        g = self.fine_grid
        out = hard_encode(flat, 1.0 / g.step, 0.0, g.half, g.side, self.fine_to_class)
        return out.reshape(np.shape(ab)[:-1])

    def encode_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 sRGB ``(..., 3)`` -> class ``(...)`` uint16, one gather."""
        return np.take(self._rgb_lut, rgb_code(rgb))

    def encode_soft(
        self, ab: np.ndarray, out: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """ab ``(..., 2)`` -> (classes ``(..., k)`` uint16, weights ``(..., k)`` float32): the
        k nearest classes and their Gaussian weights, one table row per point. ``out``: reusable
        output buffers of shape ``(n, k)``."""
        idx, w = self._soft_table_u16
        flat = np.ascontiguousarray(ab, dtype=np.float64).reshape(-1, 2)
        k = idx.shape[1]
        out_i, out_w = out or (
            np.empty((len(flat), k), np.uint16),
            np.empty((len(flat), k), np.float32),
        )
        g = self.fine_grid
        soft_encode(flat, 1.0 / g.step, 0.0, g.half, g.side, idx, w, out_i, out_w)
        shape = np.shape(ab)[:-1] + (k,)
        return out_i.reshape(shape), out_w.reshape(shape)

    @functools.cached_property
    def _soft_table_u16(self) -> tuple[np.ndarray, np.ndarray]:
        idx, w = self.soft_table
        return idx.astype(np.uint16), np.ascontiguousarray(w)

    def encode_soft_t(self, ab: torch.Tensor) -> torch.Tensor:
        """ab ``(N, 2, H, W)`` tensor -> dense soft targets ``(N, Q, H, W)``."""
        idx, w = self._soft_table_t
        cell = self.fine_grid.cell_of_t(ab).cpu()  # (N, H, W)
        idx_t = idx[cell].permute(0, 3, 1, 2).to(ab.device)
        w_t = w[cell].permute(0, 3, 1, 2).to(ab.device, ab.dtype)
        out = torch.zeros(ab.shape[0], self.num_classes, *ab.shape[2:], dtype=ab.dtype)
        return out.to(ab.device).scatter_(1, idx_t, w_t)

    def encode_hard_t(self, ab: torch.Tensor) -> torch.Tensor:
        """ab ``(N, 2, H, W)`` tensor -> classes ``(N, H, W)`` int64."""
        fine_to_class = self._soft_table_t[0][:, 0]
        return fine_to_class[self.fine_grid.cell_of_t(ab).cpu()].to(ab.device)

    def decode(
        self,
        scores: torch.Tensor,
        mode: DecodeMode = "annealed",
        temperature: float = DEFAULT_TEMPERATURE,
        logits: bool = True,
    ) -> torch.Tensor:
        """Class scores ``(N, Q, H, W)`` (logits, or probabilities if ``logits=False``) ->
        ab ``(N, 2, H, W)``. ``annealed``: mean of the distribution sharpened to temperature
        T (Zhang et al.; T=1 is the mean, T->0 the mode); ``mean``; ``mode``."""
        log_p = scores if logits else torch.log(scores.clamp(min=1e-12))
        centres = torch.tensor(self.centres, dtype=scores.dtype, device=scores.device)
        if mode == "mode":
            return centres[log_p.argmax(1)].permute(0, 3, 1, 2)
        if mode == "mean":
            temperature = 1.0
        elif mode != "annealed":
            raise ValueError(f"unknown decode mode {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if _compiled_decode_applies(log_p):
            return _annealed_mean_compiled(log_p, self.centres, temperature)
        q = torch.softmax(log_p / temperature, dim=1)
        return torch.einsum("nqhw,qc->nchw", q, centres)

    # --- file format --------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 of the table's content and parameters (hex)."""
        return _fingerprint(self.centres, self.counts, self.prior, self.weights, self.params)

    def to_arrow(self) -> pa.Table:
        cols = {
            "id": np.arange(self.num_classes, dtype=np.int32),
            "a": self.centres[:, 0],
            "b": self.centres[:, 1],
            "count": self.counts,
            "prior": self.prior,
            "prior_smoothed": self.prior_smoothed,
            "weight": self.weights,
        }
        schema = pa.schema([pa.field(k, t, nullable=False) for k, t in COLUMNS.items()])
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "params": self.params.__dict__,
            "provenance": self.provenance,
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint,
        }
        schema = schema.with_metadata({METADATA_KEY: json.dumps(meta, default=str)})
        return pa.Table.from_pydict(cols, schema=schema)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(self.to_arrow(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ColorTable:
        """Read and validate a table written by :meth:`save`; :class:`TableFormatError` says
        what is wrong with a bad or foreign file."""
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as e:
            raise TableFormatError(f"{path}: not a readable parquet file ({e})") from e
        return cls.from_arrow(table, str(path))

    @classmethod
    def from_arrow(cls, table: pa.Table, where: str = "<table>") -> ColorTable:
        meta = _read_metadata(table, where)
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise TableFormatError(f"{where}: missing columns {missing}")
        for name, typ in COLUMNS.items():
            if table.schema.field(name).type != typ:
                got = table.schema.field(name).type
                raise TableFormatError(f"{where}: column {name!r} is {got}, expected {typ}")
        if table.num_rows == 0 or table.num_rows != meta.get("num_classes"):
            raise TableFormatError(
                f"{where}: {table.num_rows} rows but metadata says {meta.get('num_classes')}"
            )
        col = {c: table.column(c).to_numpy() for c in COLUMNS}
        if col["id"].tolist() != list(range(table.num_rows)):
            raise TableFormatError(f"{where}: class ids are not 0..Q-1 in order")
        try:
            params = TableParams(**meta["params"])
        except TypeError as e:
            raise TableFormatError(f"{where}: bad parameters in metadata ({e})") from e
        centres = np.stack([col["a"], col["b"]], axis=-1)
        if not AbGrid(params.grid, params.ab_max).on_grid(centres).all():
            raise TableFormatError(f"{where}: class centres are not on the {params.grid:g} grid")
        for name in ("prior", "prior_smoothed"):
            if not np.isfinite(col[name]).all() or abs(col[name].sum() - 1) > 1e-6:
                raise TableFormatError(f"{where}: column {name!r} is not a distribution")
        if not (np.isfinite(col["weight"]).all() and (col["weight"] > 0).all()):
            raise TableFormatError(f"{where}: weights must be finite and positive")
        found = _fingerprint(centres, col["count"], col["prior"], col["weight"], params)
        if found != meta.get("fingerprint"):
            raise TableFormatError(
                f"{where}: content does not match its fingerprint "
                f"(stored {str(meta.get('fingerprint'))[:12]}, computed {found[:12]}): "
                "the file was altered or is corrupt"
            )
        return cls(
            centres,
            col["count"],
            col["prior"],
            col["prior_smoothed"],
            col["weight"],
            params,
            meta.get("provenance", {}),
        )


def _fingerprint(centres, counts, prior, weights, params: TableParams) -> str:
    h = hashlib.sha256()
    h.update(f"{FORMAT_NAME}/{FORMAT_VERSION}".encode())
    h.update(json.dumps(params.__dict__, sort_keys=True).encode())
    for arr, dtype in ((centres, "<f8"), (counts, "<i8"), (prior, "<f8"), (weights, "<f8")):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h.hexdigest()


def _read_metadata(table: pa.Table, where: str) -> dict:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableFormatError(
            f"{where}: parquet file without colour-table metadata (key {METADATA_KEY.decode()!r});"
            f" columns are {table.column_names}: not a table written by this project"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise TableFormatError(f"{where}: colour-table metadata is not valid JSON ({e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise TableFormatError(f"{where}: format is {meta.get('format')!r}, not {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise TableFormatError(
            f"{where}: format version {meta.get('version')} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    return meta


def load_zhang_313(path: str | Path, params: TableParams = TableParams()) -> ColorTable:
    """The 313 ab classes of Zhang et al. (``pts_in_hull.npy``) as a table, uniform prior."""
    pts = np.load(path, allow_pickle=False)
    return ColorTable.from_centres(pts, params=params, source=str(path))


def _compiled_decode_applies(log_p: torch.Tensor) -> bool:
    """CPU float32 logits that need no gradient: the compiled kernel decodes them."""
    return (
        log_p.device.type == "cpu"
        and log_p.dtype == torch.float32
        and not (torch.is_grad_enabled() and log_p.requires_grad)
    )


def _annealed_mean_compiled(
    log_p: torch.Tensor, centres: np.ndarray, temperature: float
) -> torch.Tensor:
    """The annealed mean by :func:`colorization.kernels.annealed_mean` (same result as the
    softmax + einsum path within float32 rounding; several times faster on the CPU)."""
    import numba

    from colorization.kernels import annealed_mean, annealed_mean_nhwc

    n, q, h, w = log_p.shape
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    args = (centres.astype(np.float32), np.float32(1.0 / temperature))
    if log_p.is_contiguous(memory_format=torch.channels_last) and q > 1:
        pixels = log_p.detach().permute(0, 2, 3, 1).numpy().reshape(n, h * w, q)  # no copy
        ab = annealed_mean_nhwc(pixels, *args)
    else:
        ab = annealed_mean(log_p.detach().contiguous().numpy().reshape(n, q, h * w), *args)
    return torch.from_numpy(ab).reshape(n, 2, h, w)
