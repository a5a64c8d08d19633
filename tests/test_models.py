"""Every registered model: output contract, gradients, size, rebuild from config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colorization.models import create_model, list_models, register_model
from colorization.segmentation import NUM_SEG_CLASSES

ENCODERS = ["scratch", "lite0"]

EXPECTED_MODELS = {"colornet", "cls-afm", "pixel-attn", "seg"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_shapes(name: str, n: int, size: int) -> dict[str, tuple[int, ...]]:
    if name == "colornet":
        return {"uv": (n, 2, size, size), "category": (n, 1000)}
    hq = size // 4 if name == "cls-afm" else size
    shapes = {"logits": (n, 313, hq, hq), "category": (n, 1000)}
    if name == "seg":
        shapes["segmentation"] = (n, NUM_SEG_CLASSES, size, size)
    return shapes


def test_registry_lists_the_four_variants() -> None:
    assert set(list_models()) == EXPECTED_MODELS


def test_unknown_model_error_lists_known_names() -> None:
    with pytest.raises(KeyError) as excinfo:
        create_model("nope")
    message = str(excinfo.value)
    assert "nope" in message
    assert all(name in message for name in EXPECTED_MODELS)


def test_register_model_rejects_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("seg")(lambda: torch.nn.Identity())


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_forward_backward(name: str, size: int, encoder: str, record_property) -> None:
    torch.manual_seed(0)
    model = create_model(name, encoder=encoder, pretrained=False, num_categories=1000)
    L = torch.rand(2, 1, size, size) * 100
    out = model(L)

    assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(name, 2, size)
    if name == "colornet":
        assert out["uv"].min() >= 0 and out["uv"].max() <= 1
    sum(v.square().mean() for v in out.values()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    record_property("params", n_params(model))
    print(f"{name}: {n_params(model):,d} parameters")


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_contract_attributes_and_rebuild_from_config(name: str, encoder: str) -> None:
    model = create_model(name, encoder=encoder, pretrained=False)
    assert model.output_kind == ("uv" if name == "colornet" else "classes")
    assert model.output_stride == (4 if name == "cls-afm" else 1)
    assert model.variant == name
    assert all(isinstance(v, (int, float, bool, str)) for v in model.config.values())
    rebuilt = create_model(model.variant, **model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.config == model.config


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_gpu_sized_config_is_larger(name: str) -> None:
    small, large = create_model(name), create_model(name, base_width=64)
    assert large.config["base_width"] == 64
    assert n_params(large) > 4 * n_params(small)


def test_default_seg_is_cpu_sized() -> None:
    assert 1_000_000 <= n_params(create_model("seg")) <= 4_000_000


def test_category_head_can_be_disabled() -> None:
    model = create_model("cls-afm", num_categories=0, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.full((1, 1, 32, 48), 50.0))
    assert set(out) == {"logits"}
    assert out["logits"].shape == (1, 10, 8, 12)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_rejects_sizes_not_multiple_of_16(name: str) -> None:
    model = create_model(name)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 1, 40, 64))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.zeros(1, 3, 64, 64))


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        create_model("seg", base_widht=32)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", ["cls-afm", "pixel-attn", "seg", "colornet"])
def test_prepare_for_inference_keeps_the_colours(name, encoder):
    """BatchNorm folded, channels-last, auxiliary heads skipped: the same colour output."""
    from colorization.models import prepare_for_inference

    torch.manual_seed(0)
    kwargs = {"base_width": 8, "encoder": encoder, "pretrained": False, "num_categories": 5}
    if name != "colornet":
        kwargs["num_classes"] = 40
    model = create_model(name, **kwargs)
    model.train()
    x = torch.rand(2, 1, 64, 64) * 100
    model(x)  # move the BatchNorm running statistics away from their initial values
    model.eval()
    key = "uv" if name == "colornet" else "logits"
    with torch.inference_mode():
        ref = model(x)[key]
        fast = prepare_for_inference(model)
        out = fast(x)
    assert torch.allclose(out[key], ref, atol=1e-3, rtol=1e-4)
    assert set(out) == {key}  # no category or segmentation output
    if encoder != "scratch":  # every BatchNorm of the pretrained encoder was folded too
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.encoder.modules())


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_pretrained_encoder_and_category_head_start_from_the_imagenet_classifier(name) -> None:
    from colorization.models.efficientnet import pretrained_state

    model = create_model(name, encoder="lite0", num_categories=1000)
    state = pretrained_state("lite0")
    own = model.state_dict()
    assert torch.equal(
        own["encoder.net._blocks.3._depthwise_conv.weight"],
        state["_blocks.3._depthwise_conv.weight"],
    )
    assert torch.equal(own["category_head.weight"], state["_fc.weight"])
    scratch = create_model(name, encoder="lite0", pretrained=False, num_categories=1000)
    assert not torch.equal(scratch.state_dict()["category_head.weight"], state["_fc.weight"])


def test_pretrained_encoder_recognises_a_grey_photo() -> None:
    """The seg model's category head, before any training, is the ImageNet classifier run on
    the grey image: a grey tench photo comes out as class 0."""
    from PIL import Image

    from colorization import color
    from tests.shared_paths import SHARED_DATA

    model = create_model("seg", encoder="lite0", num_categories=1000).eval()
    im = Image.open(next((SHARED_DATA / "imagenet-samples").glob("n01440764_*.jpg")))
    rgb = np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC))
    L = torch.from_numpy(color.rgb_to_lab(rgb)[..., :1]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        assert model(L)["category"].argmax(1).item() == 0


def test_pretrained_encoder_keeps_its_batchnorm_statistics_while_training() -> None:
    model = create_model("cls-afm", encoder="lite0", num_categories=0).train()
    bn = model.encoder.net._blocks[2]._bn1
    before = bn.running_mean.clone()
    model(torch.rand(2, 1, 64, 64) * 100)
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert model.encoder.full[0][1].training  # the new layers' BatchNorm does learn
    scratch = create_model("cls-afm", encoder="lite0", pretrained=False, num_categories=0)
    assert scratch.train().encoder.net._blocks[2]._bn1.training
