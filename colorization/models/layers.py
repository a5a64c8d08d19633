"""Small building blocks shared by the colorizers, one concept per class.

All blocks map (N, C_in, H, W) -> (N, C_out, H', W') float tensors; the docstrings say
only what changes. Convolutions followed by BatchNorm carry no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (N, C, h, w) to (N, C, *size): average pooling to shrink, bilinear to grow."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PointwiseConv(nn.Conv2d):
    """1x1 convolution (same parameters as nn.Conv2d(in_ch, out_ch, 1, bias=bias)) computed
    as one matrix product over pixels. On CPU, oneDNN's 1x1 conv with an odd output width
    (313 colour classes) is several times slower than the matmul, and PyTorch runs the 1x1
    convolutions of EfficientNet's blocks on its slow im2col path."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True) -> None:
        super().__init__(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)
        weight = self.weight.view(self.out_channels, c).t()
        y = pixels @ weight if self.bias is None else torch.addmm(self.bias, pixels, weight)
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)


class ConvBNReLU(nn.Sequential):
    """k x k convolution (same padding, optional stride) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBNReLU, the U-Net stage body."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: scale each channel by a sigmoid gate from its global mean."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a k x k conv over [channel mean, channel max] gives a
    (N, 1, H, W) sigmoid map that scales every channel."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class DenseResidualBlock(nn.Module):
    """Residual dense block (RDN): `num_layers` 3x3 convs, each seeing the concatenation
    of the input and all previous outputs (`growth` channels each), a 1x1 fusion back to
    `channels`, plus the input. Shape-preserving."""

    def __init__(self, channels: int, growth: int, num_layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvBNReLU(channels + i * growth, growth) for i in range(num_layers)
        )
        self.fuse = nn.Conv2d(channels + num_layers * growth, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.fuse(torch.cat(features, dim=1))


class IntensiveResidualAttention(nn.Module):
    """Bottleneck "intensive residual attention fusion" (thesis ch. 2): `num_blocks` x
    [DenseResidualBlock -> ChannelAttention -> SpatialAttention], with a long skip over
    the whole chain. Shape-preserving."""

    def __init__(self, channels: int, num_blocks: int = 2, growth: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(
                nn.Sequential(
                    DenseResidualBlock(channels, growth),
                    ChannelAttention(channels),
                    SpatialAttention(),
                )
                for _ in range(num_blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AsymmetricFeatureFusion(nn.Module):
    """MIMO-UNet AFF (Cho et al., ICCV 2021): every encoder level, resized to one target
    scale, concatenated, then a 1x1 conv and a 3x3 conv.

    The 1x1 conv over the concatenation is computed as the sum of per-level 1x1
    projections; resizing (bilinear / average pooling) is linear and per channel, so it
    commutes with them and each level is projected at the smaller of its own and the
    target scale. Same function, without the wide concatenation at full resolution.
    """

    def __init__(self, in_channels: list[int], out_ch: int) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, out_ch, 1, bias=False) for c in in_channels)
        self.post = nn.Sequential(nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        self.conv = ConvBNReLU(out_ch, out_ch)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        """features: one (N, C_i, H_i, W_i) per encoder level -> (N, out_ch, *size)."""
        fused = 0
        for project, f in zip(self.project, features, strict=True):
            shrink = f.shape[-2] * f.shape[-1] > size[0] * size[1]
            fused = fused + (project(resize_to(f, size)) if shrink else resize_to(project(f), size))
        return self.conv(self.post(fused))


class SkipAttentionGate(nn.Module):
    """Attention half of the "asymmetric attention fusion" (thesis ch. 2): a per-pixel,
    per-channel sigmoid gate computed from both the skip (N, C_s, H, W) and the decoder
    features (N, C_d, H, W) weights the skip, which is returned as (N, C_s, H, W)."""

    def __init__(self, skip_ch: int, dec_ch: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            ConvBNReLU(skip_ch + dec_ch, skip_ch, kernel_size=1),
            nn.Conv2d(skip_ch, skip_ch, 1),
            nn.Sigmoid(),
        )

    def forward(self, skip: Tensor, dec: Tensor) -> Tensor:
        return skip * self.gate(torch.cat([skip, dec], dim=1))


class GlobalContextFusion(nn.Module):
    """Classification-guided global context (Iizuka et al. 2016 style): a (N, D) vector
    is broadcast over (N, C, H, W) features, concatenated, and fused by a 1x1 conv."""

    def __init__(self, channels: int, context_dim: int) -> None:
        super().__init__()
        self.fuse = ConvBNReLU(channels + context_dim, channels, kernel_size=1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        tiled = context[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.fuse(torch.cat([x, tiled], dim=1))


def upsample2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling of (N, C, H, W)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def normalize_lightness(L: Tensor, multiple: int) -> Tensor:
    """Check L (N, 1, H, W) in CIE L* [0, 100], H and W multiples of `multiple`, and
    return (L - 50) / 50 (roughly [-1, 1])."""
    if L.ndim != 4 or L.shape[1] != 1:
        raise ValueError(f"expected L of shape (N, 1, H, W), got {tuple(L.shape)}")
    if L.shape[-2] % multiple or L.shape[-1] % multiple:
        raise ValueError(
            f"H and W must be multiples of {multiple}, got {tuple(L.shape[-2:])}; "
            "pad or crop the input first"
        )
    return (L - 50.0) / 50.0
