"""Models that ship inside the package, and how a model argument is resolved.

Every command that takes ``--model`` accepts a shipped model's name (``seg-lite0``, the
default), a checkpoint directory (:mod:`colorization.checkpoint`: weights, table, ``meta.json``)
or a training run directory (its newest checkpoint). Each shipped model has a ``MODEL_CARD.md``
beside its weights: data, steps, wall time, the command that trained it and its evaluation.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only when a model is loaded: the CLI starts fast
    import torch
    from torch import nn

    from colorization.tables import ColorTable

DEFAULT_MODEL = "seg-lite0"
#: inference settings of a model whose checkpoint gives none (``meta.json`` ``inference``):
#: the annealed-mean temperature, the factor on the predicted chroma, how much of the
#: training's class rebalancing the decoding takes back (``rebalance_correction``: 0 decodes
#: the distribution as trained, 1 the plain posterior; :func:`colorization.inference.
#: decode_chroma`), and the side (px, a multiple of 16) of the square L the model sees (its
#: chroma is upsampled onto the image's own full-resolution L)
DEFAULT_TEMPERATURE = 0.38
DEFAULT_SATURATION = 1.0
DEFAULT_REBALANCE_CORRECTION = 0.0
DEFAULT_SIZE = 256


def inference_size(spec: str | Path | None = None, size: int | None = None) -> int:
    """The model input side: ``size`` if given, else the model's own (its ``meta.json``
    ``inference.size``, read without loading the model: what a driver or a task without
    torch needs), else :data:`DEFAULT_SIZE`. A loaded model's twin is
    :func:`colorization.inference.input_size`."""
    if size is not None:
        return int(size)
    from colorization.checkpoint import read_meta

    return int(read_meta(resolve_model(spec)).get("inference", {}).get("size", DEFAULT_SIZE))


def models_dir() -> Path:
    """The folder of shipped models inside the installed package."""
    return Path(str(resources.files("colorization") / "assets" / "models"))


def shipped_models() -> list[str]:
    """Names of the models shipped with the package."""
    from colorization.checkpoint import WEIGHTS

    d = models_dir()
    return sorted(p.name for p in d.iterdir() if (p / WEIGHTS).exists()) if d.is_dir() else []


def resolve_model(spec: str | Path | None = None) -> Path:
    """A shipped model's name, a checkpoint directory or a run directory -> checkpoint path."""
    from colorization.checkpoint import WEIGHTS, CheckpointError, checkpoints_newest_first

    spec = str(spec or DEFAULT_MODEL)
    shipped = models_dir() / spec
    if "/" not in spec and (shipped / WEIGHTS).exists():
        return shipped
    p = Path(spec)
    if (p / WEIGHTS).exists():
        return p
    if p.is_dir():
        found = [c for c in checkpoints_newest_first(p) if (c / WEIGHTS).exists()]
        if found:
            return found[0]
    names = ", ".join(shipped_models()) or "none"
    raise CheckpointError(
        f"no model {spec!r}: not a shipped model ({names}), a checkpoint directory "
        f"(with {WEIGHTS}) or a training run directory with checkpoints"
    )


def load(
    spec: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ColorTable | None, Path]:
    """Resolve and load a model: (model in eval mode on ``device``, its table, its path)."""
    from colorization.checkpoint import load_model, read_meta
    from colorization.models import prepare_for_inference

    path = resolve_model(spec)
    model, table = load_model(path, map_location=device)
    # the model's own inference settings (temperature, saturation), if its card gives them
    model.inference_defaults = dict(read_meta(path).get("inference", {}))
    # BatchNorm folded, channels-last, colour output only: the same colours, faster
    return prepare_for_inference(model.to(device)), table, path
