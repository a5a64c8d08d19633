"""Losses against hand-computed values and torch's reference implementations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from colorization.inference import rgb_to_model_input
from colorization.losses import (
    ColorizationLoss,
    SemanticConsistencyLoss,
    blurred_uv_loss,
    category_loss,
    gaussian_kernel1d,
    rebalanced_cross_entropy,
    segmentation_loss,
)
from colorization.models.efficientnet import imagenet_classifier
from colorization.tables import load_zhang_313
from pipeline.prepare_stage import _square
from tests.conftest import require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE

Q = 7


def uniform_logits(n: int = 2, h: int = 3, w: int = 4) -> torch.Tensor:
    return torch.zeros(n, Q, h, w, requires_grad=True)


# --- rebalanced_cross_entropy ---------------------------------------------------------


def test_uniform_logits_give_log_q() -> None:
    target = torch.randint(0, Q, (2, 3, 4))
    loss = rebalanced_cross_entropy(uniform_logits(), target, torch.ones(Q))
    assert loss.item() == pytest.approx(math.log(Q))


def test_weights_scale_each_pixel_by_its_target_class() -> None:
    target = torch.zeros(2, 3, 4, dtype=torch.long)
    target[1] = 1  # half the pixels class 0 (weight 1), half class 1 (weight 3)
    weights = torch.ones(Q)
    weights[1] = 3.0
    loss = rebalanced_cross_entropy(uniform_logits(), target, weights)
    assert loss.item() == pytest.approx(2 * math.log(Q))


def test_soft_targets_weighted_by_argmax_class() -> None:
    soft = torch.softmax(torch.randn(2, Q, 3, 4), dim=1)
    weights = torch.arange(1.0, Q + 1)
    expected = weights[soft.argmax(1)].mean() * math.log(Q)  # uniform logits: CE = log Q
    loss = rebalanced_cross_entropy(uniform_logits(), soft, weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_matches_torch_cross_entropy_and_soft_one_hot() -> None:
    logits = torch.randn(2, Q, 5, 6)
    target = torch.randint(0, Q, (2, 5, 6))
    reference = F.cross_entropy(logits, target)
    hard = rebalanced_cross_entropy(logits, target, torch.ones(Q))
    soft = rebalanced_cross_entropy(
        logits, F.one_hot(target, Q).permute(0, 3, 1, 2).float(), torch.ones(Q)
    )
    assert hard.item() == pytest.approx(reference.item(), rel=1e-5)
    assert soft.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_gradient_matches_finite_differences(soft: bool) -> None:
    logits = torch.randn(2, Q, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(-1, Q, (2, 3, 3))
    if soft:
        target = torch.softmax(torch.randn(2, Q, 3, 3, dtype=torch.float64), dim=1)
    weights = torch.rand(Q, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda x: rebalanced_cross_entropy(x, target, weights), (logits,)
    )


def test_ignore_index_and_valid_mask_exclude_pixels() -> None:
    logits = torch.zeros(2, Q, 3, 4)
    logits[0, 0] = 100.0  # image 0 is confidently class 0: huge loss where target != 0
    target = torch.full((2, 3, 4), 2)
    target[0] = -1
    loss = rebalanced_cross_entropy(logits, target, torch.ones(Q))
    assert loss.item() == pytest.approx(math.log(Q))
    masked = rebalanced_cross_entropy(
        logits, torch.full((2, 3, 4), 2), torch.ones(Q), valid=torch.tensor([False, True])
    )
    assert masked.item() == pytest.approx(math.log(Q))


def test_nothing_valid_gives_zero_with_a_graph() -> None:
    logits = uniform_logits()
    loss = rebalanced_cross_entropy(logits, torch.full((2, 3, 4), -1), torch.ones(Q))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_rejects_target_of_another_size() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        rebalanced_cross_entropy(
            torch.zeros(1, Q, 4, 4), torch.zeros(1, 8, 8).long(), torch.ones(Q)
        )


# --- blurred_uv_loss ------------------------------------------------------------------


def test_gaussian_kernels_are_normalised_and_symmetric() -> None:
    for size in (3, 5):
        k = gaussian_kernel1d(size)
        assert k.sum().item() == pytest.approx(1.0)
        assert torch.allclose(k, k.flip(0))


def test_blurred_loss_of_identical_inputs_is_zero() -> None:
    uv = torch.rand(2, 2, 16, 16, requires_grad=True)
    loss = blurred_uv_loss(uv, uv.detach())
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(uv.grad).all()


def test_blurred_loss_of_constant_offset_is_its_length() -> None:
    target = torch.rand(2, 2, 16, 16)
    pred = target + torch.tensor([0.3, 0.4]).view(1, 2, 1, 1)
    assert blurred_uv_loss(pred, target).item() == pytest.approx(0.5, rel=1e-5)


def test_blurred_loss_valid_mask() -> None:
    target = torch.zeros(2, 2, 8, 8)
    pred = target.clone()
    pred[0] += 0.5  # only image 0 is wrong; drop it
    valid = torch.tensor([False, True])
    assert blurred_uv_loss(pred, target, valid).item() == 0.0
    assert blurred_uv_loss(pred, target).item() == pytest.approx(0.5 * math.sqrt(0.5))


# --- category_loss ---------------------------------------------------------------------


def test_category_loss_is_the_kl_divergence_to_the_teacher() -> None:
    logits = torch.randn(4, 10)
    teacher = torch.softmax(torch.randn(4, 10), -1)
    teacher[1] = 0.0  # no teacher for image 1
    keep = [0, 2, 3]
    expected = F.kl_div(F.log_softmax(logits[keep], -1), teacher[keep], reduction="batchmean")
    assert category_loss(logits, teacher).item() == pytest.approx(expected.item(), rel=1e-5)
    has = torch.tensor([True, True, False, True])
    expected = F.kl_div(F.log_softmax(logits[[0, 3]], -1), teacher[[0, 3]], reduction="batchmean")
    assert category_loss(logits, teacher, has).item() == pytest.approx(expected.item(), rel=1e-5)


def test_category_loss_is_zero_when_the_student_matches_the_teacher() -> None:
    logits = torch.randn(3, 7)
    assert category_loss(logits, torch.softmax(logits, -1)).item() == pytest.approx(0, abs=1e-6)


def test_category_loss_without_a_teacher_is_zero() -> None:
    logits = torch.randn(3, 5, requires_grad=True)
    loss = category_loss(logits, torch.zeros(3, 5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- segmentation_loss -----------------------------------------------------------------


def test_segmentation_matches_torch_with_ignore_255() -> None:
    logits = torch.randn(2, 5, 4, 4)
    target = torch.randint(0, 5, (2, 4, 4))
    target[0, :2] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert segmentation_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_segmentation_all_ignored_is_zero() -> None:
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- ColorizationLoss ------------------------------------------------------------------


def test_combined_loss_is_the_weighted_sum() -> None:
    outputs = {
        "logits": torch.randn(2, Q, 4, 4, requires_grad=True),
        "category": torch.randn(2, 3, requires_grad=True),
        "segmentation": torch.randn(2, 5, 8, 8, requires_grad=True),
    }
    targets = dict(
        color_target=torch.randint(0, Q, (2, 4, 4)),
        category_target=torch.tensor([[0.7, 0.2, 0.1], [0.0] * 3]),
        segmentation_target=torch.randint(0, 5, (2, 8, 8)),
    )
    weights = torch.rand(Q) + 0.5
    criterion = ColorizationLoss(
        class_weights=weights, color_weight=1.0, category_weight=0.5, segmentation_weight=0.25
    )
    terms = criterion(outputs, **targets)
    assert set(terms) == {"color", "category", "segmentation", "total"}
    expected = terms["color"] + 0.5 * terms["category"] + 0.25 * terms["segmentation"]
    assert terms["total"].item() == pytest.approx(expected.item())
    assert terms["color"].item() == pytest.approx(
        rebalanced_cross_entropy(outputs["logits"], targets["color_target"], weights).item()
    )
    terms["total"].backward()
    assert all(v.grad is not None for v in outputs.values())


def test_combined_loss_uv_and_missing_targets() -> None:
    uv = torch.rand(2, 2, 8, 8, requires_grad=True)
    terms = ColorizationLoss()({"uv": uv}, color_target=uv.detach())
    assert set(terms) == {"color", "total"}
    assert terms["total"].item() == 0.0
    logits = {"logits": torch.zeros(1, Q, 2, 2), "category": torch.zeros(1, 3)}
    terms = ColorizationLoss(category_weight=0.0)(
        logits, color_target=torch.zeros(1, 2, 2).long(), category_target=torch.ones(1, 3)
    )
    assert set(terms) == {"color", "total"}
    assert terms["total"].item() == pytest.approx(math.log(Q))


# --- SemanticConsistencyLoss ----------------------------------------------------------------
@pytest.fixture(scope="module")
def photos_and_table():
    """Four ImageNet sample photos (128 px centre crops, RGB in [0, 1]), Zhang's 313 classes."""
    names = ["n01440764_tench", "n01530575_brambling", "n01558993_robin", "n01614925_bald_eagle"]
    crops = []
    for name in names:
        im = Image.open(require(SHARED_DATA / "imagenet-samples" / f"{name}.jpg")).convert("RGB")
        crops.append(np.asarray(_square(im, 128, Image.BICUBIC)))  # as `colorize prepare` does
    rgb = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    table = load_zhang_313(require(SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"))
    return rgb, table


CLASS_MODEL = SimpleNamespace(output_kind="classes")  # what the decoding reads of a model


def sharp_logits(table, ab: torch.Tensor) -> torch.Tensor:
    """Logits that decode to the class nearest ab at every pixel (a near one-hot)."""
    classes = table.encode_hard_t(ab)
    return (
        20.0 * F.one_hot(classes, table.num_classes).permute(0, 3, 1, 2).float()
    ).requires_grad_()


def test_semantic_loss_is_small_for_true_colours_and_large_for_wrong_ones(
    photos_and_table,
) -> None:
    rgb, table = photos_and_table
    L, ab = rgb_to_model_input(rgb)
    loss = SemanticConsistencyLoss(imagenet_classifier("lite0"), table, temperature=0.38)
    true = loss(CLASS_MODEL, {"logits": sharp_logits(table, ab)}, L, rgb)
    swapped = loss(CLASS_MODEL, {"logits": sharp_logits(table, -ab.flip(1))}, L, rgb)
    grey = loss(CLASS_MODEL, {"logits": sharp_logits(table, torch.zeros_like(ab))}, L, rgb)
    assert true.item() < 0.2  # only the quantisation of the true colours (0.06)
    assert swapped.item() > 10 * true.item()  # 7.0
    assert grey.item() > 10 * true.item()  # 3.2


def test_semantic_loss_trains_the_colours_not_the_classifier(photos_and_table) -> None:
    rgb, table = photos_and_table
    L, ab = rgb_to_model_input(rgb)
    loss = SemanticConsistencyLoss(imagenet_classifier("lite0"), table, temperature=0.38).train()
    assert not loss.classifier.training  # BatchNorm keeps its ImageNet statistics
    logits = sharp_logits(table, -ab.flip(1))
    criterion = ColorizationLoss(semantic=loss, semantic_weight=0.5)
    target = table.encode_hard_t(ab)
    terms = criterion({"logits": logits}, color_target=target, model=CLASS_MODEL, L=L, rgb=rgb)
    assert set(terms) == {"color", "semantic", "total"}
    expected = terms["color"] + 0.5 * terms["semantic"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    terms["semantic"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.classifier.parameters())
    # off unless weighted
    off = ColorizationLoss(semantic=loss)(
        {"logits": logits}, color_target=target, model=CLASS_MODEL, L=L, rgb=rgb
    )
    assert set(off) == {"color", "total"}
    # weighted, it needs what it looks at: never dropped without a word
    with pytest.raises(ValueError, match="needs the model, L and rgb"):
        criterion({"logits": logits}, color_target=target, model=CLASS_MODEL, L=L)
    with pytest.raises(ValueError, match="needs a SemanticConsistencyLoss"):
        ColorizationLoss(semantic_weight=0.5)
