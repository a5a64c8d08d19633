"""Colorization models: a registry of small factories over two model classes.

colornet    ColorNet, UV regression baseline
cls-afm     UNetColorizer, colour classes at 1/4 resolution + AFF + category branch
pixel-attn  UNetColorizer, full-resolution classes + attention fusion
seg         UNetColorizer, pixel-attn + semantic-segmentation branch (main model)
"""

from colorization.models import colornet, unet  # noqa: F401  (registers the factories)
from colorization.models.registry import (
    create_model,
    list_models,
    prepare_for_inference,
    register_model,
)

__all__ = ["create_model", "list_models", "prepare_for_inference", "register_model"]
