"""The one inference path: L -> model -> ab (or UV) at full resolution -> RGB.

Used by validation during training, the ``colorize image`` command, the evaluation and the
archive job, so that every caller colorizes the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorization import color
from colorization.tables import ColorTable


def rgb_to_model_input(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> (L ``(N, 1, H, W)``, ab ``(N, 2, H, W)``)."""
    lab = color.rgb_to_lab_t(rgb)
    return lab[:, :1], lab[:, 1:]


@torch.inference_mode()
def predict_chroma(
    model: nn.Module,
    L: torch.Tensor,
    table: ColorTable | None,
    temperature: float = 0.38,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Predicted chroma upsampled to ``size`` (default: the input's): ab ``(N, 2, h, w)`` for
    class models (annealed mean at ``temperature``), UV for regression models."""
    out = model(L)
    size = size or tuple(L.shape[-2:])
    if model.output_kind == "classes":
        if table is None:
            raise ValueError("a class model needs its colour table to decode")
        chroma = table.decode(out["logits"].float(), "annealed", temperature)
    else:
        chroma = color.unit_to_uv_t(out["uv"].float())
    if tuple(chroma.shape[-2:]) != tuple(size):
        chroma = F.interpolate(chroma, size=size, mode="bilinear", align_corners=False)
    return chroma


def recombine(L_full: torch.Tensor, chroma: torch.Tensor, kind: str) -> torch.Tensor:
    """The input's own full-resolution L with predicted chroma -> RGB ``(N, 3, H, W)``."""
    if kind == "classes":
        return color.lab_to_rgb_t(torch.cat([L_full, chroma], dim=1))
    # UV models: the grey image's Y with the predicted UV, then the input's L put back
    grey = color.lab_to_rgb_t(torch.cat([L_full, torch.zeros_like(chroma)], dim=1))
    y = color.rgb_to_yuv_t(grey)[:, :1]
    ab = color.rgb_to_lab_t(color.yuv_to_rgb_t(torch.cat([y, chroma], dim=1)))[:, 1:]
    return color.lab_to_rgb_t(torch.cat([L_full, ab], dim=1))


def colorize_batch(
    model: nn.Module, L: torch.Tensor, table: ColorTable | None, temperature: float = 0.38
) -> torch.Tensor:
    """L ``(N, 1, H, W)`` (H, W multiples of 16) -> RGB ``(N, 3, H, W)`` in [0, 1]."""
    chroma = predict_chroma(model, L, table, temperature)
    return recombine(L, chroma, model.output_kind)
