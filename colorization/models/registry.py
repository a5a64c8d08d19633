"""Registry of model factories: `@register_model("name")` on a function returning an
nn.Module; `create_model(name, **kwargs)` builds one.

Each built model records its constructor keyword arguments in `model.config` and its
registry name in `model.variant`, so `create_model(model.variant, **model.config)`
rebuilds the same architecture (the checkpoint contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering `factory` under `name`; a name may be registered once."""

    def decorate(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_FACTORIES)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """The same model, faster for colorizing (eval mode; no training afterwards): every
    BatchNorm folded into the convolution before it, channels-last memory layout (oneDNN's
    fast path on the CPU), and only the colour output computed (``colour_only``: the category
    and segmentation heads are skipped; the segmentation features that guide the colour
    decoder are still computed)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:], strict=False):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                setattr(module, name_a, fuse_conv_bn_eval(a, b))
                setattr(module, name_b, nn.Identity())
    for module in list(model.modules()):  # blocks that know their own conv/BN pairs
        if hasattr(module, "fuse_batchnorm"):
            module.fuse_batchnorm()
    model.colour_only = True
    return model.to(memory_format=torch.channels_last)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with keyword arguments `kwargs`.

    Raises KeyError naming the known models for an unknown `name`; unknown keyword
    arguments raise TypeError from the model's constructor.
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _FACTORIES[name](**kwargs)
    model.variant = name
    return model
