"""The U-Net colour-class colorizer behind `cls-afm`, `pixel-attn` and `seg`.

One class; the thesis variants differ only by constructor flags:

    cls-afm     output_stride=4                                   (ch. 1)
    pixel-attn  output_stride=1, attention=True                   (ch. 2)
    seg         output_stride=1, attention=True, num_seg_classes=NUM_SEG_CLASSES  (ch. 3)

Data flow (strides relative to the input; w = base_width):

    L -> enc0 (1, w) -> enc1 (2, 2w) -> enc2 (4, 4w) -> enc3 (8, 8w) -> bottleneck (16, 8w)
    bottleneck -> global pool -> MLP -> context (N, 8w) -> "category" logits
    bottleneck + broadcast context -> 1x1 fusion [-> intensive residual attention]
    decoder stage at stride s (8, 4[, 2, 1]): upsample x2, concat with the AFF features
        of all encoder levels at stride s [gated by attention] [and the segmentation
        branch's features at stride s], DoubleConv
    -> 1x1 conv -> "logits" (N, num_classes, H / output_stride, W / output_stride)

The segmentation branch is a light decoder (one conv per stage, plain encoder skips)
from the bottleneck to full resolution, with a 1x1 head -> "segmentation".

Encoders (``encoder=``): "scratch" is the plain U-Net encoder above, trained from random
weights. "lite0" / "lite2" (:class:`LiteEncoder`) are EfficientNet-Lite with its ImageNet
weights (``pretrained=True``): the grey image enters as grey sRGB on three channels; its
stages give the skips at strides 2, 4, 8 (a DoubleConv on L gives stride 1) and the
bottleneck at 16 (projected to 8w channels); its last stages and head give the (N, 1280)
global feature, which is the context fused into the bottleneck and feeds the category head
(initialised from the ImageNet classifier when it predicts the 1000 ImageNet classes). The
decoder is the same for every encoder (widths w, 2w, 4w, 8w).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from colorization import color
from colorization.models.efficientnet import (
    HEAD_WIDTH,
    NUM_IMAGENET_CLASSES,
    SPECS,
    EfficientNetLite,
    pretrained_state,
)
from colorization.models.layers import (
    AsymmetricFeatureFusion,
    ConvBNReLU,
    DoubleConv,
    GlobalContextFusion,
    IntensiveResidualAttention,
    PointwiseConv,
    SkipAttentionGate,
    normalize_lightness,
    upsample2,
)
from colorization.models.registry import register_model
from colorization.segmentation import NUM_SEG_CLASSES

NUM_LEVELS = 4  # encoder levels at strides 1, 2, 4, 8; the bottleneck is at stride 16
INPUT_MULTIPLE = 2**NUM_LEVELS
ENCODERS = ("scratch", *SPECS)


def grey_rgb(L: Tensor) -> Tensor:
    """L (N, 1, H, W) in [0, 100] -> the grey sRGB image (N, 3, H, W) in [0, 1] (ab = 0):
    what an ImageNet network sees when it is shown a grey photo."""
    return color.lab_to_rgb_t(torch.cat([L, torch.zeros_like(L).expand(-1, 2, -1, -1)], 1))


class LiteEncoder(nn.Module):
    """Pretrained EfficientNet-Lite as the U-Net's encoder (see the module docstring).

    forward(L, x) with x the normalised L -> (skips [(N, widths[i], H / 2**i, W / 2**i)],
    bottleneck (N, bottleneck_width, H/16, W/16), context (N, 1280)).

    A pretrained network keeps its ImageNet BatchNorm statistics while training (its
    BatchNorm layers stay in eval mode; their scale and shift still learn): batch statistics
    of a few grey crops per worker are too noisy to replace them.
    """

    def __init__(self, variant: str, width: int, pretrained: bool) -> None:
        super().__init__()
        self.net = EfficientNetLite(variant)
        self.frozen_statistics = pretrained
        if pretrained:
            self.net.load_state_dict(pretrained_state(variant), strict=True)
        # the ImageNet classifier's weights, kept (unregistered) for category_head, not a module
        self.imagenet_fc = {k: v.detach().clone() for k, v in self.net._fc.state_dict().items()}
        del self.net._fc
        w = SPECS[variant].widths
        self.full = DoubleConv(1, width)
        self.widths = [width, w[0], w[1], w[2]]
        self.bottleneck_width = w[4]

    def category_head(self, num_categories: int) -> nn.Linear:
        """A category head on the pooled head feature; over the 1000 ImageNet classes it
        starts as the (pretrained) network's own classifier."""
        head = nn.Linear(HEAD_WIDTH, num_categories)
        if num_categories == NUM_IMAGENET_CLASSES:
            head.load_state_dict(self.imagenet_fc)
        return head

    def train(self, mode: bool = True) -> LiteEncoder:
        super().train(mode)
        if mode and self.frozen_statistics:
            for m in self.net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, L: Tensor, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        feats = self.net.run_stages(self.net.stem(grey_rgb(L)), 0, 5)  # strides 2 .. 16
        deepest = self.net.run_stages(feats[-1], 5, len(self.net.stage_ends))[-1]
        return [self.full(x), *feats[:3]], feats[4], self.net.head(deepest)


class DecoderStage(nn.Module):
    """Upsample x2, [gate the skip], concatenate [x, skip, extra], DoubleConv to out_ch."""

    def __init__(
        self, in_ch: int, skip_ch: int, extra_ch: int, out_ch: int, attention: bool
    ) -> None:
        super().__init__()
        self.gate = SkipAttentionGate(skip_ch, in_ch) if attention else None
        self.conv = DoubleConv(in_ch + skip_ch + extra_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor, extra: Tensor | None = None) -> Tensor:
        x = upsample2(x)
        if self.gate is not None:
            skip = self.gate(skip, x)
        parts = [x, skip] if extra is None else [x, skip, extra]
        return self.conv(torch.cat(parts, dim=1))


class SegmentationBranch(nn.Module):
    """Light decoder: bottleneck (N, C, H/16, W/16) + encoder skips -> per-stride
    features {stride: (N, widths[level], H/stride, W/stride)} and full-resolution
    logits (N, num_seg_classes, H, W)."""

    def __init__(
        self, bottleneck_ch: int, enc_widths: list[int], widths: list[int], num_seg_classes: int
    ) -> None:
        super().__init__()
        in_chs = [*widths[1:], bottleneck_ch]
        self.stages = nn.ModuleList(
            ConvBNReLU(in_chs[i] + enc_widths[i], widths[i]) for i in range(NUM_LEVELS)
        )
        self.head = PointwiseConv(widths[0], num_seg_classes)

    def forward(
        self, bottleneck: Tensor, skips: list[Tensor], head: bool = True, down_to: int = 0
    ) -> tuple[list[Tensor], Tensor | None]:
        """Without the head, only the levels down to ``down_to`` (the colour decoder's last)
        are computed: the finer ones would feed nothing."""
        x, features = bottleneck, [None] * NUM_LEVELS
        for level in reversed(range(0 if head else down_to, NUM_LEVELS)):
            x = self.stages[level](torch.cat([upsample2(x), skips[level]], dim=1))
            features[level] = x
        return features, self.head(x) if head else None


class UNetColorizer(nn.Module):
    """U-Net predicting colour-class logits from L (see the module docstring).

    forward(L): L (N, 1, H, W) CIE L* in [0, 100], H and W multiples of 16 (else
    ValueError). Returns {"logits": (N, num_classes, H/s, W/s)} with s = output_stride,
    plus "category" (N, num_categories) when num_categories > 0 and "segmentation"
    (N, num_seg_classes, H, W) when num_seg_classes > 0.
    """

    output_kind = "classes"

    def __init__(
        self,
        *,
        num_classes: int = 313,
        num_categories: int = 80,
        base_width: int = 16,
        output_stride: int = 4,
        attention: bool = False,
        num_attn_blocks: int = 2,
        num_seg_classes: int = 0,
        encoder: str = "scratch",
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in (1, 2, 4, 8):
            raise ValueError(f"output_stride must be 1, 2, 4 or 8, got {output_stride}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.config = dict(
            num_classes=num_classes,
            num_categories=num_categories,
            base_width=base_width,
            output_stride=output_stride,
            attention=attention,
            num_attn_blocks=num_attn_blocks,
            num_seg_classes=num_seg_classes,
            encoder=encoder,
            pretrained=pretrained,
        )
        self.output_stride = output_stride
        w = base_width
        dec = [w * 2**i for i in range(NUM_LEVELS)]  # decoder widths w, 2w, 4w, 8w
        deep = dec[-1]

        if encoder == "scratch":
            self.pool = nn.MaxPool2d(2)
            self.encoder = nn.ModuleList(
                DoubleConv(1 if i == 0 else dec[i - 1], dec[i]) for i in range(NUM_LEVELS)
            )
            self.bottleneck = DoubleConv(deep, deep)
            self.context = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(deep, deep), nn.ReLU(inplace=True)
            )
            enc, context_dim = dec, deep
        else:
            self.encoder = LiteEncoder(encoder, w, pretrained)
            self.bottleneck = ConvBNReLU(self.encoder.bottleneck_width, deep, kernel_size=1)
            enc, context_dim = self.encoder.widths, HEAD_WIDTH
        if num_categories <= 0:
            self.category_head = None
        elif encoder == "scratch":
            self.category_head = nn.Linear(context_dim, num_categories)
        else:
            self.category_head = self.encoder.category_head(num_categories)
        self.context_fusion = GlobalContextFusion(deep, context_dim)
        self.bottleneck_attention = (
            IntensiveResidualAttention(deep, num_attn_blocks, growth=w) if attention else None
        )

        seg_widths = [w, w, 2 * w, 4 * w]
        self.segmentation = (
            SegmentationBranch(deep, enc, seg_widths, num_seg_classes)
            if num_seg_classes > 0
            else None
        )
        extra = seg_widths if num_seg_classes > 0 else [0] * NUM_LEVELS

        # Decoder levels from deepest to the output level (stride 2**level).
        self.levels = list(reversed(range(int(math.log2(output_stride)), NUM_LEVELS)))
        self.fusions = nn.ModuleDict(
            {str(i): AsymmetricFeatureFusion(enc, dec[i]) for i in self.levels}
        )
        in_chs = {i: dec[i + 1] if i + 1 < NUM_LEVELS else deep for i in self.levels}
        self.decoder = nn.ModuleDict(
            {
                str(i): DecoderStage(in_chs[i], dec[i], extra[i], dec[i], attention)
                for i in self.levels
            }
        )
        self.head = PointwiseConv(dec[self.levels[-1]], num_classes)

    def _encode(self, L: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """L -> (skips at strides 1, 2, 4, 8; bottleneck at 16 with 8w channels; context)."""
        x = normalize_lightness(L, INPUT_MULTIPLE)
        if isinstance(self.encoder, LiteEncoder):
            skips, deep, context = self.encoder(L, x)
            return skips, self.bottleneck(deep), context
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(x if level == 0 else self.pool(x))
            skips.append(x)
        x = self.bottleneck(self.pool(x))
        return skips, x, self.context(x)

    def forward(self, L: Tensor) -> dict[str, Tensor]:
        skips, x, context = self._encode(L)
        out: dict[str, Tensor] = {}
        auxiliary = not getattr(self, "colour_only", False)  # see prepare_for_inference
        if self.category_head is not None and auxiliary:
            out["category"] = self.category_head(context)
        x = self.context_fusion(x, context)
        if self.bottleneck_attention is not None:
            x = self.bottleneck_attention(x)

        seg_features: list[Tensor | None] = [None] * NUM_LEVELS
        if self.segmentation is not None:
            seg_features, seg = self.segmentation(x, skips, auxiliary, self.levels[-1])
            if seg is not None:
                out["segmentation"] = seg

        for level in self.levels:
            skip = self.fusions[str(level)](skips, skips[level].shape[-2:])
            x = self.decoder[str(level)](x, skip, seg_features[level])
        out["logits"] = self.head(x)
        return out


# Factories: each fixes the variant's flags; any UNetColorizer keyword may be passed
# (e.g. base_width=64 for the GPU-sized model) and overrides them.


@register_model("cls-afm")
def cls_afm(**kwargs: Any) -> UNetColorizer:
    """Thesis ch. 1: classes at 1/4 resolution, AFF skips, category branch."""
    return UNetColorizer(**{"output_stride": 4, "attention": False, **kwargs})


@register_model("pixel-attn")
def pixel_attn(**kwargs: Any) -> UNetColorizer:
    """Thesis ch. 2: full-resolution classes, bottleneck and skip attention."""
    return UNetColorizer(**{"output_stride": 1, "attention": True, **kwargs})


@register_model("seg")
def seg(**kwargs: Any) -> UNetColorizer:
    """Thesis ch. 3 (main model): pixel-attn plus a segmentation branch over the merged
    label space (:mod:`colorization.segmentation`)."""
    kwargs = {"output_stride": 1, "attention": True, "num_seg_classes": NUM_SEG_CLASSES, **kwargs}
    return UNetColorizer(**kwargs)
