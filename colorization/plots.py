"""Pictures of colour-class tables (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from colorization import color  # noqa: E402
from colorization.tables import ColorTable  # noqa: E402


def _plane(table: ColorTable, values: np.ndarray) -> np.ndarray:
    """Per-class values -> a (side, side) image of the ab plane, NaN outside the gamut."""
    grid = table.grid
    img = np.full(grid.n_cells, np.nan)
    img[grid.cell_of(table.centres)] = values
    return img.reshape(grid.side, grid.side).T  # rows b, columns a


def plot_ab_plane(table: ColorTable, path: str | Path, lightness: float = 50.0) -> Path:
    """Zhang et al. Fig. 3 style: the gamut's colours at L=``lightness``, log10 of the
    empirical prior, and the rebalancing weights, on the ab plane (a across, b up)."""
    grid = table.grid
    extent = [-grid.half * grid.step - grid.step / 2, grid.half * grid.step + grid.step / 2] * 2
    lab = np.concatenate([np.full((table.num_classes, 1), lightness), table.centres], axis=1)
    rgb = color.lab_to_rgb(lab)
    swatch = np.ones((grid.n_cells, 3))
    swatch[grid.cell_of(table.centres)] = rgb
    with np.errstate(divide="ignore"):
        log_prior = np.where(table.prior > 0, np.log10(table.prior), np.nan)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(
        swatch.reshape(grid.side, grid.side, 3).transpose(1, 0, 2), extent=extent, origin="lower"
    )
    axes[0].set_title(f"{table.num_classes} classes, colour at L={lightness:g}")
    panels = [(log_prior, "log10 prior p", "viridis"), (table.weights, "weight w", "magma")]
    for ax, (vals, title, cmap) in zip(axes[1:], panels, strict=True):
        im = ax.imshow(_plane(table, vals), extent=extent, origin="lower", cmap=cmap)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("a")
        ax.set_ylabel("b")
    src = str(table.provenance.get("source", ""))[-60:]
    fig.suptitle(f"colour-class table {table.fingerprint[:12]}  {src}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
