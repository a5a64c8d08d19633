"""Registry of model factories: `@register_model("name")` on a function returning an
nn.Module; `create_model(name, **kwargs)` builds one.

Each built model records its constructor keyword arguments in `model.config` and its
registry name in `model.variant`, so `create_model(model.variant, **model.config)`
rebuilds the same architecture (the checkpoint contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
