"""Regression baseline after Pavel Gonchar's 'colornet' (hypercolumn UV regression).

Encoder: VGG16-style stages of 2, 2, 3, 3 3x3 ConvBNReLU with widths
(w, 2w, 4w, 8w), max-pooled between stages (strides 1, 2, 4, 8).
Decoder, from the deepest stage up: infer colour (3x3 ConvBNReLU to the next shallower
width), upsample x2, add the shallower stage's features after a 1x1 conv + BN
projection; at full resolution a 3x3 ConvBNReLU and a 3x3 conv to U, V with a sigmoid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from colorization.models.layers import ConvBNReLU, normalize_lightness, upsample2
from colorization.models.registry import register_model

STAGE_DEPTHS = (2, 2, 3, 3)
INPUT_MULTIPLE = 16  # the encoder needs 8; 16 keeps one rule for every model


class ColorNet(nn.Module):
    """forward(L): L (N, 1, H, W) CIE L* in [0, 100], H and W multiples of 16 (else
    ValueError). Returns {"uv": (N, 2, H, W)} in [0, 1] (YUV chroma rescaled; the caller
    converts), plus "category" (N, num_categories) when num_categories > 0 (default 0:
    the original baseline has no classification head)."""

    output_kind = "uv"
    output_stride = 1

    def __init__(self, *, base_width: int = 16, num_categories: int = 0) -> None:
        super().__init__()
        self.config = dict(base_width=base_width, num_categories=num_categories)
        widths = [base_width * 2**i for i in range(len(STAGE_DEPTHS))]
        in_chs = [1, *widths[:-1]]
        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList(
            nn.Sequential(*(ConvBNReLU(c_in if j == 0 else c, c) for j in range(depth)))
            for c_in, c, depth in zip(in_chs, widths, STAGE_DEPTHS, strict=True)
        )
        # infer[i]: widths[i + 1] -> widths[i]; project[i]: 1x1 conv + BN on stage i.
        self.infer = nn.ModuleList(ConvBNReLU(widths[i + 1], widths[i]) for i in range(3))
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)) for c in widths[:3]
        )
        self.refine = ConvBNReLU(widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)
        self.category_head = (
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_categories)
            )
            if num_categories > 0
            else None
        )

    def forward(self, L: Tensor) -> dict[str, Tensor]:
        x = normalize_lightness(L, INPUT_MULTIPLE)
        features = []
        for level, stage in enumerate(self.encoder):
            x = stage(x if level == 0 else self.pool(x))
            features.append(x)
        for level in reversed(range(3)):
            x = upsample2(self.infer[level](x)) + self.project[level](features[level])
        out = {"uv": torch.sigmoid(self.head(self.refine(x)))}
        if self.category_head is not None:
            out["category"] = self.category_head(features[-1])
        return out


@register_model("colornet")
def colornet(**kwargs: Any) -> ColorNet:
    """UV regression baseline; kwargs are ColorNet's (base_width, num_categories)."""
    return ColorNet(**kwargs)
