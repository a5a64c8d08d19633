"""The one inference path: L -> model -> ab (or UV) at full resolution -> RGB.

Used by validation during training, the ``colorize image`` command, the evaluation and the
archive job, so that every caller colorizes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from colorization import color
from colorization.pixels import finish_np, lightness_np, pixels_u8
from colorization.shipped import (
    DEFAULT_REBALANCE_CORRECTION,
    DEFAULT_SATURATION,
    DEFAULT_SIZE,
    DEFAULT_TEMPERATURE,
)
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
    temperature: float | None = None,
    size: tuple[int, int] | None = None,
    saturation: float | None = None,
) -> torch.Tensor:
    """Predicted chroma upsampled to ``size`` (default: the input's): ab ``(N, 2, h, w)`` for
    class models (annealed mean at ``temperature``), UV for regression models."""
    chroma = model_chroma(model, L, table, temperature, saturation)
    return upsample_chroma(chroma, size or tuple(L.shape[-2:]))


def input_size(model: nn.Module, size: int | None = None) -> int:
    """The side of the square L the model sees: ``size`` if given, else the model's own
    (``inference_defaults``, from its checkpoint), else
    :data:`~colorization.shipped.DEFAULT_SIZE`."""
    own = getattr(model, "inference_defaults", {}) or {}
    return int(size if size is not None else own.get("size", DEFAULT_SIZE))


#: what :func:`settings` returns, in its order (the keys results and manifests record them by)
SETTING_NAMES = ("temperature", "saturation", "rebalance_correction")


def settings(
    model: nn.Module,
    temperature: float | None = None,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
) -> tuple[float, float, float]:
    """(temperature, saturation, rebalance correction): the given values, else the model's own
    defaults (set by :func:`colorization.shipped.load` from its checkpoint), else
    :data:`~colorization.shipped.DEFAULT_TEMPERATURE`, ``DEFAULT_SATURATION`` and
    ``DEFAULT_REBALANCE_CORRECTION``."""
    own = getattr(model, "inference_defaults", {}) or {}
    t = temperature if temperature is not None else own.get("temperature", DEFAULT_TEMPERATURE)
    s = saturation if saturation is not None else own.get("saturation", DEFAULT_SATURATION)
    c = rebalance_correction
    if c is None:
        c = own.get("rebalance_correction", DEFAULT_REBALANCE_CORRECTION)
    return float(t), float(s), float(c)


@torch.inference_mode()
def model_chroma(
    model: nn.Module,
    L: torch.Tensor,
    table: ColorTable | None,
    temperature: float | None = None,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
) -> torch.Tensor:
    """Chroma (ab or UV) at the model's output resolution ``(N, 2, H / stride, W / stride)``;
    settings not given are the model's own (:func:`settings`)."""
    setting = settings(model, temperature, saturation, rebalance_correction)
    return decode_chroma(model, model(L), table, *setting)


def decode_chroma(
    model: nn.Module,
    out: dict,
    table: ColorTable | None,
    temperature: float,
    saturation: float,
    rebalance_correction: float = 0.0,
) -> torch.Tensor:
    """A model's output dict -> chroma at its output resolution: class logits decoded by the
    annealed mean at ``temperature`` (UV taken as is), times ``saturation``.

    A class model trained with the class-rebalanced loss (each pixel weighted by its true
    class's weight w) learns a distribution proportional to w times the posterior, which the
    annealed mean of Zhang et al. decodes as it is: colourful, but pulled towards the classes
    that the weights favour. ``rebalance_correction`` c takes a share of that back,
    logits - c log w, before the annealed mean (0: as trained; 1: the plain posterior);
    ``saturation`` then sets the colours' strength. Regression models ignore it."""
    if model.output_kind == "classes":
        if table is None:
            raise ValueError("a class model needs its colour table to decode")
        logits = out["logits"].float()
        if rebalance_correction:
            w = torch.tensor(table.weights, dtype=logits.dtype, device=logits.device)
            logits = logits - rebalance_correction * torch.log(w).view(1, -1, 1, 1)
        chroma = table.decode(logits, "annealed", temperature)
    else:
        chroma = color.unit_to_uv_t(out["uv"].float())
    return chroma if saturation == 1.0 else chroma * saturation


def upsample_chroma(chroma: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Chroma ``(N, 2, h, w)`` -> ``(N, 2, *size)``, bilinear (as is when already that size)."""
    if tuple(chroma.shape[-2:]) == tuple(size):
        return chroma
    return F.interpolate(chroma, size=size, mode="bilinear", align_corners=False)


def recombine(L_full: torch.Tensor, chroma: torch.Tensor, kind: str) -> torch.Tensor:
    """The input's own full-resolution L with predicted chroma -> RGB ``(N, 3, H, W)``; UV
    chroma becomes ab by :func:`colorization.color.uv_to_ab_t` (as :func:`finish` does in
    numpy)."""
    ab = chroma if kind == "classes" else color.uv_to_ab_t(L_full, chroma)
    return color.lab_to_rgb_t(torch.cat([L_full, ab], dim=1))


def colorize_batch(
    model: nn.Module, L: torch.Tensor, table: ColorTable | None, temperature: float | None = None
) -> torch.Tensor:
    """L ``(N, 1, H, W)`` (H, W multiples of 16) -> RGB ``(N, 3, H, W)`` in [0, 1]."""
    chroma = predict_chroma(model, L, table, temperature)
    return recombine(L, chroma, model.output_kind)


def colorize_images(
    model: nn.Module,
    table: ColorTable | None,
    images: Sequence[Image.Image],
    size: int | None = None,
    temperature: float | None = None,
    batch_size: int = 8,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
) -> list[Image.Image]:
    """Any PIL images (any sizes and modes) -> colorized images, each at its own size.

    The three steps, which the archive job runs as separate stages:
    :func:`lightness` (each image's full-resolution L and the ``size`` x ``size`` L the model
    sees), :func:`model_chroma` (batched, ``batch_size`` at a time) and :func:`finish` (the
    chroma upsampled to the image's full resolution, joined with its own L; alpha kept).
    ``temperature`` (annealed mean), ``saturation`` (a factor on the predicted chroma) and
    ``rebalance_correction`` (:func:`decode_chroma`) default to the model's own settings
    (:func:`settings`), ``size`` to its own input side (:func:`input_size`). Deterministic for
    the same inputs."""
    setting = settings(model, temperature, saturation, rebalance_correction)
    return colorize_images_at(model, table, images, [setting], size, batch_size)[0]


@torch.inference_mode()
def colorize_images_at(
    model: nn.Module,
    table: ColorTable | None,
    images: Sequence[Image.Image],
    at: Sequence[tuple[float, float, float]],
    size: int | None = None,
    batch_size: int = 8,
) -> list[list[Image.Image]]:
    """:func:`colorize_images` at several (temperature, saturation, rebalance correction)
    settings (:func:`settings`), one forward pass
    per batch for all of them (what the evaluation's settings sweep needs); returns one list
    of images per setting."""
    device = next(model.parameters()).device
    size = input_size(model, size)
    out: list[list[Image.Image]] = [[] for _ in at]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        fulls, smalls = zip(*(lightness(im, size) for im in chunk), strict=True)
        raw = model(torch.cat(smalls).to(device))
        for images_at, setting in zip(out, at, strict=True):
            chromas = decode_chroma(model, raw, table, *setting).cpu()
            for im, L_full, chroma in zip(chunk, fulls, chromas, strict=True):
                alpha = im.getchannel("A") if "A" in im.getbands() else None
                images_at.append(finish(L_full, chroma, model.output_kind, alpha))
    return out


def lightness(im: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL image (any mode) -> (its L ``(1, 1, H, W)`` in [0, 100], that L resized to
    ``(1, 1, size, size)`` for the model; ``size`` a multiple of 16)
    (:func:`colorization.pixels.lightness_np`)."""
    L, small = lightness_np(pixels_u8(im), size)
    return torch.from_numpy(L)[None, None], torch.from_numpy(small)[None, None]


def finish(
    L_full: torch.Tensor, chroma: torch.Tensor, kind: str, alpha: Image.Image | None = None
) -> Image.Image:
    """An image's own L ``(1, 1, H, W)`` + the model's chroma ``(2, h, w)`` -> 8-bit RGB (RGBA
    with ``alpha``) PIL image of size W x H (:func:`colorization.pixels.finish_np`)."""
    return finish_np(L_full[0, 0].numpy(), chroma.float().numpy(), kind, alpha)


def colorize_image(
    model: nn.Module,
    table: ColorTable | None,
    im: Image.Image,
    size: int | None = None,
    temperature: float | None = None,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
) -> Image.Image:
    """One image: :func:`colorize_images` of a single image."""
    return colorize_images(
        model,
        table,
        [im],
        size,
        temperature,
        saturation=saturation,
        rebalance_correction=rebalance_correction,
    )[0]
