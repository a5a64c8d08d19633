"""Regression baseline after Pavel Gonchar's 'colornet' (hypercolumn UV regression).

Encoder: VGG16-style stages of 2, 2, 3, 3 3x3 ConvBNReLU with widths
(w, 2w, 4w, 8w), max-pooled between stages (strides 1, 2, 4, 8).
Decoder, from the deepest stage up: infer colour (3x3 ConvBNReLU to the next shallower
width), upsample x2, add the shallower stage's features after a 1x1 conv + BN
projection; at full resolution a 3x3 ConvBNReLU and a 3x3 conv to U, V with a sigmoid.

With ``encoder="lite0"`` (or "lite2") the hypercolumn is taken over the ImageNet-pretrained
EfficientNet-Lite instead (the original colornet used a pretrained VGG16): a DoubleConv on
L at stride 1 and the network's stages at strides 2, 4, 8 and 16, decoded the same way from
stride 16 (the deepest features projected to 8w channels first); the category head, if any,
reads its pooled 1280-channel head feature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from colorization.models.efficientnet import HEAD_WIDTH
from colorization.models.layers import ConvBNReLU, normalize_lightness, upsample2
from colorization.models.registry import register_model
from colorization.models.unet import ENCODERS, LiteEncoder

STAGE_DEPTHS = (2, 2, 3, 3)
INPUT_MULTIPLE = 16  # the encoder needs 8; 16 keeps one rule for every model


class ColorNet(nn.Module):
    """forward(L): L (N, 1, H, W) CIE L* in [0, 100], H and W multiples of 16 (else
    ValueError). Returns {"uv": (N, 2, H, W)} in [0, 1] (YUV chroma rescaled; the caller
    converts), plus "category" (N, num_categories) when num_categories > 0 (default 0:
    the original baseline has no classification head)."""

    output_kind = "uv"
    output_stride = 1

    def __init__(
        self,
        *,
        base_width: int = 16,
        num_categories: int = 0,
        encoder: str = "scratch",
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.config = dict(
            base_width=base_width,
            num_categories=num_categories,
            encoder=encoder,
            pretrained=pretrained,
        )
        widths = [base_width * 2**i for i in range(len(STAGE_DEPTHS))]
        if encoder == "scratch":
            in_chs = [1, *widths[:-1]]
            self.pool = nn.MaxPool2d(2)
            self.encoder = nn.ModuleList(
                nn.Sequential(*(ConvBNReLU(c_in if j == 0 else c, c) for j in range(depth)))
                for c_in, c, depth in zip(in_chs, widths, STAGE_DEPTHS, strict=True)
            )
            enc, context_dim = widths, widths[-1]
        else:
            self.encoder = LiteEncoder(encoder, base_width, pretrained)
            self.deepest = ConvBNReLU(self.encoder.bottleneck_width, widths[-1], kernel_size=1)
            enc, context_dim = [*self.encoder.widths, widths[-1]], HEAD_WIDTH
            widths = [*widths, widths[-1]]
        levels = len(widths) - 1
        # infer[i]: widths[i + 1] -> widths[i]; project[i]: 1x1 conv + BN, enc[i] -> widths[i].
        self.infer = nn.ModuleList(ConvBNReLU(widths[i + 1], widths[i]) for i in range(levels))
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
            for e, c in zip(enc[:levels], widths[:levels], strict=True)
        )
        self.refine = ConvBNReLU(widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)
        if num_categories <= 0:
            self.category_head = None
        elif encoder == "scratch":
            self.category_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(context_dim, num_categories)
            )
        else:
            self.category_head = self.encoder.category_head(num_categories)

    def _features(self, L: Tensor) -> tuple[list[Tensor], Tensor]:
        """L -> (features at strides 1, 2, 4, 8[, 16], the category head's input)."""
        x = normalize_lightness(L, INPUT_MULTIPLE)
        if isinstance(self.encoder, LiteEncoder):
            skips, deep, context = self.encoder(L, x)
            return [*skips, self.deepest(deep)], context
        features = []
        for level, stage in enumerate(self.encoder):
            x = stage(x if level == 0 else self.pool(x))
            features.append(x)
        return features, features[-1]

    def forward(self, L: Tensor) -> dict[str, Tensor]:
        features, context = self._features(L)
        x = features[-1]
        for level in reversed(range(len(self.infer))):
            x = upsample2(self.infer[level](x)) + self.project[level](features[level])
        out = {"uv": torch.sigmoid(self.head(self.refine(x)))}
        if self.category_head is not None and not getattr(self, "colour_only", False):
            out["category"] = self.category_head(context)
        return out


@register_model("colornet")
def colornet(**kwargs: Any) -> ColorNet:
    """UV regression baseline; kwargs are ColorNet's (base_width, num_categories)."""
    return ColorNet(**kwargs)
