"""The one inference path (colorization/inference.py) on untrained tiny models: shapes and
ranges, the input's own L kept, upsampling, determinism, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from colorization import color
from colorization.inference import colorize_batch, predict_chroma, recombine, rgb_to_model_input
from colorization.models import create_model
from colorization.tables import ColorTable, load_zhang_313
from tests.conftest import require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE

pytestmark = pytest.mark.timeout(60)

SIZE = 64


@pytest.fixture(scope="module")
def zhang() -> ColorTable:
    return load_zhang_313(require(SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Two real photographs (coco-tiny val2017), centre-cropped and resized: (2, 3, 64, 64)."""
    paths = sorted(require(SHARED_DATA / "coco-tiny" / "val2017").glob("*.jpg"))[:2]
    arrays = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
        arrays.append(np.asarray(im))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def model(name: str, table: ColorTable | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = {"base_width": 8}
    if table is not None:
        kwargs["num_classes"] = table.num_classes
    return create_model(name, **kwargs).eval()


def unclipped(rgb: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
    """(N, H, W) mask of pixels with every channel strictly inside (0, 1)."""
    return ((rgb > margin) & (rgb < 1 - margin)).all(dim=1)


@pytest.mark.parametrize("name", ["cls-afm", "seg", "colornet"])
def test_colorize_batch_shape_range_and_no_grad(name, zhang, photos):
    m = model(name, None if name == "colornet" else zhang)
    L, _ = rgb_to_model_input(photos)
    out = colorize_batch(m, L, None if name == "colornet" else zhang)
    assert out.shape == (2, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert not out.requires_grad


@pytest.mark.parametrize("grey", [True, False], ids=["mid-grey", "photo"])
def test_class_model_keeps_the_input_lightness(grey, zhang, photos):
    m = model("cls-afm", zhang)
    rgb = torch.full((1, 3, SIZE, SIZE), 0.47) if grey else photos
    L, _ = rgb_to_model_input(rgb)
    out = colorize_batch(m, L, zhang)
    back = color.rgb_to_lab_t(out)[:, 0]
    keep = unclipped(out)
    assert keep.float().mean() > 0.5, "too few unclipped pixels to check"
    assert (back - L[:, 0])[keep].abs().max() < 0.5
    assert out.std(dim=1).mean() > 1e-3 or grey, "the untrained model gave no colour at all"


def test_regression_model_keeps_the_input_lightness(photos):
    m = model("colornet")
    L, _ = rgb_to_model_input(photos)
    out = colorize_batch(m, L, None)
    keep = unclipped(out)
    assert keep.float().mean() > 0.5
    back = color.rgb_to_lab_t(out)[:, 0]
    assert (back - L[:, 0])[keep].abs().max() < 0.5


def test_predict_chroma_upsamples_stride_4_logits(zhang, photos):
    m = model("cls-afm", zhang)
    L, _ = rgb_to_model_input(photos)
    with torch.no_grad():
        logits = m(L)["logits"]
    assert logits.shape[-2:] == (SIZE // 4, SIZE // 4)
    ab = predict_chroma(m, L, zhang)
    assert ab.shape == (2, 2, SIZE, SIZE)
    # the annealed mean is a convex combination of class centres; bilinear keeps that hull box
    lo, hi = zhang.centres.min(0), zhang.centres.max(0)
    for c in range(2):
        assert lo[c] - 1e-4 <= ab[:, c].min() and ab[:, c].max() <= hi[c] + 1e-4
    low = zhang.decode(logits.float(), "annealed", 0.38)
    assert torch.allclose(torch.nn.functional.avg_pool2d(ab, 4), low, atol=3.0)
    assert predict_chroma(m, L, zhang, size=(32, 48)).shape == (2, 2, 32, 48)


def test_full_resolution_model_needs_no_upsampling(zhang, photos):
    m = model("pixel-attn", zhang)
    L, _ = rgb_to_model_input(photos)
    with torch.no_grad():
        logits = m(L)["logits"]
    assert torch.allclose(predict_chroma(m, L, zhang), zhang.decode(logits, "annealed", 0.38))


def test_temperature_sharpens_the_annealed_mean(zhang, photos):
    m = model("pixel-attn", zhang)
    L, _ = rgb_to_model_input(photos)
    with torch.no_grad():
        logits = m(L)["logits"]
    mean = predict_chroma(m, L, zhang, 1.0)
    assert torch.allclose(mean, zhang.decode(logits, "mean"), atol=1e-4)
    sharp = predict_chroma(m, L, zhang, 0.05)
    assert torch.allclose(sharp, zhang.decode(logits, "annealed", 0.05), atol=1e-4)
    assert not torch.allclose(sharp, mean, atol=0.5)


@pytest.mark.parametrize("name", ["cls-afm", "colornet"])
def test_deterministic_and_batch_independent(name, zhang, photos):
    table = None if name == "colornet" else zhang
    m = model(name, table)
    L, _ = rgb_to_model_input(photos)
    first, second = colorize_batch(m, L, table), colorize_batch(m, L, table)
    assert torch.equal(first, second)
    one = colorize_batch(m, L[1:], table)
    assert torch.allclose(one, first[1:], atol=1e-5)


def test_class_model_without_table_raises(photos):
    m = create_model("cls-afm", base_width=8).eval()
    L, _ = rgb_to_model_input(photos)
    with pytest.raises(ValueError, match="colour table"):
        colorize_batch(m, L, None)


def test_recombine_with_zero_chroma_is_grey(photos):
    L, _ = rgb_to_model_input(photos)
    for kind in ("classes", "uv"):
        out = recombine(L, torch.zeros_like(L).repeat(1, 2, 1, 1), kind)
        assert (out.max(dim=1).values - out.min(dim=1).values).max() < 2e-3


def test_recombine_with_true_ab_reproduces_the_photo(photos):
    L, ab = rgb_to_model_input(photos)
    assert torch.allclose(recombine(L, ab, "classes"), photos, atol=1e-4)
    # UV models combine the true UV with the grey image's Y' and then put L back: the hue
    # comes through the YUV detour, so even the true UV only comes close
    uv = color.rgb_to_yuv_t(photos)[:, 1:]
    assert (recombine(L, uv, "uv") - photos).abs().mean() < 0.02


def test_input_size_must_be_a_multiple_of_16(zhang):
    m = model("cls-afm", zhang)
    with pytest.raises(ValueError):
        colorize_batch(m, torch.full((1, 1, 40, 40), 50.0), zhang)


def test_the_input_side_is_the_given_one_else_the_models_own_else_256(zhang):
    from colorization.inference import colorize_images, input_size

    m = model("cls-afm", zhang)
    seen = []
    m.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    im = Image.new("L", (90, 50), 128)
    assert input_size(m) == 256
    m.inference_defaults = {"size": 96}
    assert input_size(m) == 96 and input_size(m, 64) == 64
    (out,) = colorize_images(m, zhang, [im])
    colorize_images(m, zhang, [im], size=64)
    assert seen == [(96, 96), (64, 64)] and out.size == (90, 50)


COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16"])
def test_colorize_image_any_mode_keeps_size_and_lightness(mode, zhang):
    from colorization.inference import colorize_image

    photo = Image.open(require(sorted(COCO_VAL.glob("*.jpg"))[0])).convert("RGB")
    photo = photo.resize((203, 131))
    if mode == "I;16":
        im = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
        assert im.mode.startswith("I;16")
        seen = photo.convert("L").convert("RGB")  # what the 16-bit scan shows in 8 bits
    else:
        im = photo.convert(mode)
        seen = im.convert("RGB")
    net = model("cls-afm", zhang)
    out = colorize_image(net, zhang, im, size=64)
    assert out.size == (203, 131)
    assert out.mode == ("RGBA" if mode in ("RGBA", "LA") else "RGB")
    L_out = color.rgb_to_lab(np.asarray(out.convert("RGB")))[..., 0]
    L_in = color.rgb_to_lab(np.asarray(seen))[..., 0]
    # the input's own lightness, except where the predicted colour is out of gamut (clipped)
    assert np.median(np.abs(L_out - L_in)) < 0.5
    again = colorize_image(net, zhang, im, size=64)
    assert np.array_equal(np.asarray(out), np.asarray(again))


def test_colorize_image_cli(tmp_path, zhang):
    from typer.testing import CliRunner

    from colorization.checkpoint import save_checkpoint
    from colorization.inference import colorize_image
    from colorization.shipped import load
    from pipeline.cli import app

    ckpt = save_checkpoint(tmp_path / "ckpt", model("cls-afm", zhang), zhang)
    src = require(sorted(COCO_VAL.glob("*.jpg"))[0])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    args = ["image", str(src), str(bad), "--model", str(ckpt), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, [*args, "--size", "64"])
    assert res.exit_code == 1  # one input failed and said so; the other was written
    out = Image.open(tmp_path / "o" / f"{src.stem}.png")
    assert out.size == Image.open(src).size and out.mode == "RGB"
    # --rebalance-correction reaches the decoding: the pixels of colorize_image at that setting
    net, table, _ = load(ckpt)
    im = Image.open(src)
    for c in ("0", "1"):
        args[-1] = str(tmp_path / f"c{c}")
        res = CliRunner().invoke(app, [*args, "--size", "64", "--rebalance-correction", c])
        assert res.exit_code == 1, res.output
    got = {c: np.asarray(Image.open(tmp_path / f"c{c}" / f"{src.stem}.png")) for c in "01"}
    for c in "01":
        want = colorize_image(net, table, im, size=64, rebalance_correction=float(c))
        assert np.array_equal(got[c], np.asarray(want)), c
    assert not np.array_equal(got["0"], got["1"])


def test_saturation_and_temperature_default_to_the_models_own_settings(zhang, photos):
    from colorization.inference import model_chroma, settings

    m = model("cls-afm", zhang)
    L, _ = rgb_to_model_input(photos)
    base = model_chroma(m, L, zhang)
    assert settings(m) == (0.38, 1.0, 0.0)
    m.inference_defaults = {"saturation": 0.5, "temperature": 0.6, "rebalance_correction": 0.25}
    assert settings(m) == (0.6, 0.5, 0.25)
    assert settings(m, temperature=0.38, saturation=1.0, rebalance_correction=0) == (0.38, 1, 0)
    own = model_chroma(m, L, zhang)
    assert torch.allclose(own, 0.5 * model_chroma(m, L, zhang, 0.6, 1.0), atol=1e-5)
    assert not torch.allclose(own, 0.5 * model_chroma(m, L, zhang, 0.6, 1.0, 0.0), atol=1e-3)
    assert torch.allclose(model_chroma(m, L, zhang, 0.38, 1.0, 0.0), base, atol=1e-5)


def test_the_rebalance_correction_takes_the_class_weights_back_out():
    """A model trained with the rebalanced loss learns w * p (normalised); correction 1
    decodes p itself, 0 decodes as trained, and between them the share of log w removed."""
    from colorization.inference import decode_chroma
    from colorization.shipped import DEFAULT_MODEL, resolve_model

    table = ColorTable.load(resolve_model(DEFAULT_MODEL) / "classes.parquet")  # real weights
    assert table.weights.max() / table.weights.min() > 10

    class Head(torch.nn.Module):
        output_kind = "classes"

    rng = np.random.default_rng(0)
    p = torch.tensor(rng.dirichlet(np.full(table.num_classes, 0.3), size=(2, 3, 4)))
    p = p.permute(0, 3, 1, 2).float()  # (N, Q, H, W) posteriors
    w = torch.tensor(table.weights, dtype=torch.float32).view(1, -1, 1, 1)
    trained = {"logits": torch.log(p * w)}  # what the rebalanced loss teaches, up to a constant
    plain = table.decode(torch.log(p), "annealed", 0.5)
    as_trained = table.decode(torch.log(p * w), "annealed", 0.5)
    assert torch.allclose(decode_chroma(Head(), trained, table, 0.5, 1.0, 1.0), plain, atol=1e-3)
    assert torch.allclose(decode_chroma(Head(), trained, table, 0.5, 1.0), as_trained, atol=1e-4)
    half = table.decode(torch.log(p * w.sqrt()), "annealed", 0.5)
    assert torch.allclose(decode_chroma(Head(), trained, table, 0.5, 1.0, 0.5), half, atol=1e-3)
    assert (plain - as_trained).abs().max() > 1.0  # the weights do move the colours


@pytest.mark.parametrize("shape", [(480, 640, 256, 256), (128, 128, 480, 640), (5, 7, 256, 256)])
def test_numpy_resize_is_torchs_bilinear(shape):
    import torch.nn.functional as F

    from colorization.pixels import resize

    h, w, oh, ow = shape
    x = (np.random.default_rng(1).random((2, h, w)) * 100).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], (oh, ow), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize(x, (oh, ow)), ref[0].numpy(), rtol=0, atol=1e-3)


def test_archive_tasks_module_does_not_import_torch():
    """The archive job's decode and finish tasks unpickle pipeline.run_stage in their Ray
    workers: without torch those workers are 250-450 MB smaller."""
    code = "import sys, pipeline.run_stage, colorization.pixels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ["classes", "uv"])
def test_numpy_finish_gives_the_torch_recombination(kind, photos):
    """The archive job's finish (numpy, :func:`colorization.pixels.finish_np`) and the tensor
    path of validation (:func:`recombine`) give the same pixels, within one 8-bit level."""
    from colorization.pixels import finish_np

    L, ab = rgb_to_model_input(photos)
    chroma = ab if kind == "classes" else color.rgb_to_yuv_t(photos)[:, 1:]
    for i in range(len(photos)):
        got = np.asarray(finish_np(L[i, 0].numpy(), chroma[i].numpy(), kind)).astype(int)
        ref = recombine(L[i : i + 1], chroma[i : i + 1], kind)[0].permute(1, 2, 0).numpy()
        assert np.abs(got - color.to_uint8(ref).astype(int)).max() <= 1


def test_the_numpy_end_of_inference_imports_neither_torch_nor_inference():
    """colorization.inference imports colorization.pixels, never the other way round, and
    the numpy end needs no torch for any kind of model."""
    code = (
        "import sys, colorization.pixels; "
        "print('torch' in sys.modules, 'colorization.inference' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
