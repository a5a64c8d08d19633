"""The one inference path: L -> model -> ab (or UV) at full resolution -> RGB.

Used by validation during training, the ``colorize image`` command, the evaluation and the
archive job, so that every caller colorizes the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from colorization import color
from colorization.imageio import to_rgb8
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


def colorize_image(
    model: nn.Module,
    table: ColorTable | None,
    im: Image.Image,
    size: int = 256,
    temperature: float = 0.38,
) -> Image.Image:
    """Any PIL image -> its colorized version at the input's own size and mode family.

    The model sees a ``size`` x ``size`` grey version (``size`` a multiple of 16); the
    predicted chroma is upsampled to the full resolution and joined with the input's own
    full-resolution L. Alpha, if any, is carried over unchanged. Deterministic."""
    if size % 16:
        raise ValueError(f"size must be a multiple of 16, got {size}")
    rgb = np.asarray(to_rgb8(im), dtype=np.float32) / 255.0
    full = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    L_full, _ = rgb_to_model_input(full)
    small = F.interpolate(L_full, size=(size, size), mode="bilinear", align_corners=False)
    device = next(model.parameters()).device
    chroma = predict_chroma(model, small.to(device), table, temperature, size=full.shape[-2:])
    out = recombine(L_full, chroma.cpu(), model.output_kind)[0].permute(1, 2, 0).numpy()
    result = Image.fromarray(color.to_uint8(out), "RGB")
    if "A" in im.getbands():
        result.putalpha(im.getchannel("A"))
    return result
