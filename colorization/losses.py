"""Training losses: colour (class or UV), image category, semantic segmentation, and the
semantic consistency of the colorized crop (a frozen ImageNet classifier's view of it).

Every loss is a mean over the items that have a target; when none has one it returns a
zero that still carries the graph (so `backward()` works on any batch).

Per-pixel class losses take the softmax over the last axis of logits.movedim(1, -1): the
models' 1x1 heads emit channels-last memory, so this is a free view and the softmax runs
over contiguous memory (several times faster on CPU than over dim 1 of NCHW).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorization.inference import decode_chroma, recombine, upsample_chroma
from colorization.segmentation import SEG_IGNORE
from colorization.tables import ColorTable

BLUR_SIZES = (3, 5)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` (same shape, bool) is true; 0 with a graph if none."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _check_spatial(logits: Tensor, target_shape: torch.Size) -> None:
    if tuple(logits.shape[-2:]) != tuple(target_shape[-2:]):
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target_shape)} differ in size"
        )


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy over the last axis: logits (..., K) and either int64 indices (...)
    in [0, K) or probabilities (..., K) -> (...). Same values as log_softmax + gather,
    but the backward writes softmax - target into one new tensor where autograd would
    allocate three; at 313 classes and full resolution that was most of a CPU step."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor) -> Tensor:
        ctx.dtype = logits.dtype  # half-precision (autocast) input is computed in float32
        dtype = torch.promote_types(logits.dtype, torch.float32)
        logp = F.log_softmax(logits.to(dtype), dim=-1)
        soft = target.is_floating_point()
        target = target.to(dtype) if soft else target
        ctx.save_for_backward(logp, target)
        if soft:
            return -(target * logp).sum(-1)
        return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        logp, target = ctx.saved_tensors
        grad_logits = logp.exp()  # d/dlogits of -sum(t * logp) is softmax * sum(t) - t
        if target.is_floating_point():
            grad_logits.mul_(target.sum(-1, keepdim=True)).sub_(target)
        else:
            index = target.unsqueeze(-1)
            grad_logits.scatter_add_(-1, index, torch.full_like(index, -1, dtype=logp.dtype))
        return grad_logits.mul_(grad.unsqueeze(-1)).to(ctx.dtype), None


def _pixel_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel cross-entropy: logits (N, K, h, w); target (N, h, w) int64 (entries
    outside [0, K) are clamped: mask them yourself) or (N, K, h, w) probabilities.
    Returns (N, h, w)."""
    _check_spatial(logits, target.shape)
    if target.is_floating_point():
        target = target.movedim(1, -1)
    else:
        target = target.clamp(0, logits.shape[1] - 1)
    return _SoftmaxCrossEntropy.apply(logits.movedim(1, -1), target)


def rebalanced_cross_entropy(
    logits: Tensor, target: Tensor, weights: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Class-rebalanced cross-entropy (Zhang et al., ECCV 2016, eq. 2-3).

    logits: (N, Q, h, w). target: soft (N, Q, h, w) probabilities, or hard (N, h, w)
    int64 class indices with -1 = ignore. weights: (Q,) rebalancing weights; each pixel
    is weighted by weights[argmax of its target]. valid: optional (N,) bool, False drops
    the whole image (e.g. grey ground truth). Returns the mean over valid pixels.
    """
    ce = _pixel_cross_entropy(logits, target)
    if target.is_floating_point():
        classes = target.argmax(1)
        mask = torch.ones_like(classes, dtype=torch.bool)
    else:
        classes = target.clamp(min=0)
        mask = target >= 0
    if valid is not None:
        mask = mask & valid.view(-1, 1, 1)
    return _masked_mean(weights[classes] * ce, mask)


def gaussian_kernel1d(size: int) -> Tensor:
    """Normalised 1-D Gaussian of odd `size` with OpenCV's default sigma for that size,
    0.3 * ((size - 1) / 2 - 1) + 0.8 (0.8 for 3 px, 1.1 for 5 px). Shape (size,)."""
    sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).float()


def gaussian_blur(x: Tensor, size: int) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) per channel, reflect padding."""
    channels = x.shape[1]
    k = gaussian_kernel1d(size).to(x)
    pad = size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, k.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def blurred_uv_loss(pred_uv: Tensor, target_uv: Tensor, valid: Tensor | None = None) -> Tensor:
    """colornet loss: per-pixel Euclidean distance between predicted and target UV
    (N, 2, H, W), averaged over pixels, and averaged with the same distance after 3 px
    and 5 px Gaussian blurs of both. Blurring is linear, so blur(p) - blur(t) is taken
    as blur(p - t). valid: optional (N,) bool, False drops the image."""
    diff = pred_uv - target_uv
    diffs = [diff] + [gaussian_blur(diff, size) for size in BLUR_SIZES]
    per_image = torch.stack([torch.linalg.vector_norm(d, dim=1).mean((1, 2)) for d in diffs]).mean(
        0
    )
    mask = torch.ones_like(per_image, dtype=torch.bool) if valid is None else valid
    return _masked_mean(per_image, mask)


def category_loss(logits: Tensor, teacher: Tensor, has_teacher: Tensor | None = None) -> Tensor:
    """The thesis' category loss as distillation: KL(teacher || softmax(logits)) per image,
    logits (N, C), teacher (N, C) probabilities (the frozen ImageNet classifier on the colour
    original); images with has_teacher (N,) False, or whose teacher row is all zeros, are
    skipped. Mean over the remaining images (0 with a graph if none)."""
    present = teacher.sum(-1) > 0
    if has_teacher is not None:
        present = present & has_teacher
    logp = F.log_softmax(logits.float(), dim=-1)
    t = teacher.float()
    kl = (t * (t.clamp_min(1e-12).log() - logp)).sum(-1)
    return _masked_mean(kl, present)


class SemanticConsistencyLoss(nn.Module):
    """A frozen ImageNet classifier should see the same classes in the colorized crop as in its
    colour original: KL(softmax(classifier(original)) || softmax(classifier(colorized))).

    The colorized crop comes from the one decoding of :mod:`colorization.inference` (annealed
    mean at ``temperature``, saturation 1; differentiable), upsampled onto the crop's own L, so
    the gradient reaches the model only through the colours it predicts. Zhang et al. score
    colorizations by such a classifier; here it is a training signal, and the evaluation's
    judge should be another network (the shipped recipe trains against Lite0, and
    ``colorize eval`` judges with Lite2). The classifier stays in eval mode and is not trained.
    """

    def __init__(self, classifier: nn.Module, table: ColorTable | None, temperature: float) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.table = table
        self.temperature = temperature

    def train(self, mode: bool = True) -> SemanticConsistencyLoss:
        super().train(mode)
        self.classifier.eval()  # BatchNorm keeps its ImageNet statistics
        return self

    def forward(
        self, model: nn.Module, outputs: dict[str, Tensor], L: Tensor, rgb: Tensor
    ) -> Tensor:
        """model: the colorizer (its output kind); outputs: its output dict on L (N, 1, H, W);
        rgb: the colour originals (N, 3, H, W) in [0, 1]. Mean KL over the batch."""
        with torch.no_grad():
            target = F.softmax(self.classifier(rgb).float(), dim=-1)
        chroma = decode_chroma(model, outputs, self.table, self.temperature, 1.0)
        colorized = recombine(L.float(), upsample_chroma(chroma, L.shape[-2:]), model.output_kind)
        return category_loss(self.classifier(colorized), target)


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel cross-entropy; logits (N, K, H, W), target (N, H, W) int64 with SEG_IGNORE
    (255; images without masks are all SEG_IGNORE). Mean over non-ignored pixels."""
    mask = target != SEG_IGNORE
    return _masked_mean(_pixel_cross_entropy(logits, target), mask)


class ColorizationLoss(nn.Module):
    """Weighted sum of the colour, category, segmentation and semantic-consistency losses.

    class_weights: (Q,) rebalancing weights for class outputs (None = uniform).
    forward(outputs, color_target=..., ...) takes a model's output dict: its "logits"
    (with a soft or hard target, see rebalanced_cross_entropy) or "uv" (target (N, 2, H,
    W)) give "color"; "category" (see category_loss: the teacher's probabilities) and
    "segmentation" are added when the output, its target and a positive weight are present;
    "semantic" (a :class:`SemanticConsistencyLoss`) when given with a positive weight, and
    then the model, L and the colour originals must be passed too (a ValueError otherwise: the
    term is never dropped silently).
    valid (N,) bool drops images from the colour term; has_teacher (N,) bool marks images
    with a category target. Returns each term and
    "total" (the weighted sum), all scalars.
    """

    def __init__(
        self,
        *,
        class_weights: Tensor | None = None,
        color_weight: float = 1.0,
        category_weight: float = 0.1,
        segmentation_weight: float = 0.1,
        semantic: SemanticConsistencyLoss | None = None,
        semantic_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if semantic_weight and semantic is None:
            raise ValueError("semantic_weight needs a SemanticConsistencyLoss (semantic=...)")
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.semantic = semantic if semantic_weight else None
        self.weights = {
            "color": color_weight,
            "category": category_weight,
            "segmentation": segmentation_weight,
            "semantic": semantic_weight,
        }

    def forward(
        self,
        outputs: dict[str, Tensor],
        *,
        color_target: Tensor,
        category_target: Tensor | None = None,
        segmentation_target: Tensor | None = None,
        valid: Tensor | None = None,
        has_teacher: Tensor | None = None,
        model: nn.Module | None = None,
        L: Tensor | None = None,
        rgb: Tensor | None = None,
    ) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if "uv" in outputs:
            terms["color"] = blurred_uv_loss(outputs["uv"], color_target, valid)
        else:
            logits = outputs["logits"]
            weights = self.class_weights
            if weights is None:
                weights = logits.new_ones(logits.shape[1])
            terms["color"] = rebalanced_cross_entropy(logits, color_target, weights, valid)
        if "category" in outputs and category_target is not None and self.weights["category"]:
            terms["category"] = category_loss(outputs["category"], category_target, has_teacher)
        if (
            "segmentation" in outputs
            and segmentation_target is not None
            and self.weights["segmentation"]
        ):
            terms["segmentation"] = segmentation_loss(outputs["segmentation"], segmentation_target)
        if self.semantic is not None:
            if model is None or L is None or rgb is None:
                raise ValueError("the semantic term needs the model, L and rgb (the originals)")
            terms["semantic"] = self.semantic(model, outputs, L, rgb)
        terms["total"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms
