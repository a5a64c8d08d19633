"""Stage 2a: training data decoded, resized and stored once as parquet shards (Ray Data).

list sources -> Ray Data tasks (read, decode, shorter side to ``size``, centre crop; masks
-> a segmentation map in the one label space of :mod:`colorization.segmentation`; labels)
-> an actor pool running the category teacher (ImageNet probabilities of each stored square)
-> parquet shards + ``dataset.json`` in OUT, a folder or an ``s3://`` prefix (the format:
:mod:`pipeline.prepared`). Every input gets a row with its status; training reads the ``ok``
rows with Ray Data instead of decoding JPEGs every epoch. A ``warning`` is a mask that could
not be used: the photo is kept without it.

Masks: COCO json sources draw their instances; ``FORMAT:IMAGES=MASKS`` entries
(:class:`MaskSource`) pair every image below IMAGES with the file of the same relative path
and stem below MASKS. An image without a mask file has no ``seg`` (counted per source); a mask
that cannot be read or does not match its photo's size gives a ``warning`` row without
``seg`` (counted and listed in ``dataset.json``), never an error: the photo is still good.
A paired mask is drawn on the photo's stored pixels, so it is turned by the photo's EXIF
orientation; COCO json photos and their masks both stay in the stored orientation.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from PIL import Image

from colorization.coco import COCO_CATEGORY_IDS
from colorization.grey import is_grey_photo
from colorization.imageio import (
    DEFAULT_MAX_PIXELS,
    decode_image,
    exif_orientation,
    orient,
    to_rgb_array,
)
from colorization.segmentation import (
    MASK_FORMATS,
    SEG_IGNORE,
    SEG_SPACE,
    coco_instance_seg,
    decode_mask,
    map_mask,
)
from pipeline import prepared
from pipeline.sources import (
    IMAGE_EXTENSIONS,
    Item,
    StorageOptions,
    arrow_filesystem,
    coco_names,
    is_coco_annotation,
    is_s3,
    list_items,
    read_bytes,
)

#: rows per teacher forward pass
TEACHER_BATCH = 32
#: CPUs Ray reserves per teacher actor: fractional, so that on a small machine the actors
#: never hold every CPU and the decoding tasks always get one
TEACHER_ACTOR_CPUS = 0.5


@dataclass
class PrepareConfig:
    sources: list[str]
    out: str
    size: int = 144  # stored square side; training crops are at most this
    images_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    storage: StorageOptions = field(default_factory=StorageOptions)
    rows_per_file: int = 256
    #: ``FORMAT:IMAGES_DIR=MASKS_DIR`` entries, FORMAT one of ``coco-panoptic``, ``camvid``
    masks: list[str] = field(default_factory=list)
    #: EfficientNet-Lite variant of the category teacher (``lite0``, ``lite2``); None: none
    teacher: str | None = "lite0"
    #: teacher actors; 0: one per two CPUs of the cluster
    teacher_actors: int = 0


@dataclass(frozen=True)
class MaskSource:
    """One ``FORMAT:IMAGES=MASKS`` entry: the label images of the photos below ``images``
    (paths must not contain ``=``)."""

    fmt: str
    images: str
    masks: str

    @classmethod
    def parse(cls, spec: str) -> MaskSource:
        fmt, _, rest = spec.partition(":")
        images, eq, masks = rest.partition("=")
        if fmt not in MASK_FORMATS or not eq or not images or not masks:
            raise ValueError(
                f"mask source {spec!r}: expected FORMAT:IMAGES_DIR=MASKS_DIR with FORMAT one of "
                f"{', '.join(MASK_FORMATS)}"
            )
        return cls(fmt, images, masks)

    @property
    def name(self) -> str:
        return f"{self.fmt}:{self.images}"


def _root(uri: str) -> str:
    """A folder or prefix in one spelling (absolute local path, no trailing slash)."""
    return uri.rstrip("/") if is_s3(uri) else os.path.abspath(uri)


def _is_image(key: str) -> bool:  # a masks folder may hold a classes.yaml, a README ...
    return Path(key).suffix.lower() in IMAGE_EXTENSIONS


def _stem(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in Path(key).name else key


def pair_masks(
    items: list[Item], sources: list[MaskSource], storage: StorageOptions
) -> tuple[dict[str, tuple[MaskSource, str]], dict[str, dict[str, int]]]:
    """``{item uri: (source, mask uri)}`` for every item below a source's images folder with a
    mask file of the same relative stem, and per source the counts ``images`` (items below
    it), ``paired``, ``no_mask_file`` and ``unmatched_masks`` (mask files without an image;
    only image files count as masks).
    An item below several sources takes the one with the deepest images folder."""
    order = sorted(sources, key=lambda m: -len(_root(m.images)))
    masks = {
        m: {_stem(it.key): it.uri for it in list_items(m.masks, storage) if _is_image(it.key)}
        for m in order
    }
    pairs: dict[str, tuple[MaskSource, str]] = {}
    counts = {m.name: dict(images=0, paired=0, no_mask_file=0, unmatched_masks=0) for m in order}
    used: dict[MaskSource, set[str]] = {m: set() for m in order}
    for it in items:
        uri = _root(it.uri)
        for m in order:
            root = _root(m.images)
            if not uri.startswith(root + "/"):
                continue
            counts[m.name]["images"] += 1
            stem = _stem(uri[len(root) + 1 :])
            if stem in masks[m]:
                pairs[it.uri] = (m, masks[m][stem])
                used[m].add(stem)
                counts[m.name]["paired"] += 1
            else:
                counts[m.name]["no_mask_file"] += 1
            break
    for m in order:
        if not counts[m.name]["images"]:
            raise ValueError(f"mask source {m.fmt}:{m.images}={m.masks}: no listed input below it")
        counts[m.name]["unmatched_masks"] = len(set(masks[m]) - used[m])
    return pairs, counts


def label_vocabulary(items: list[Item], coco_names: dict[int, str]) -> list[str]:
    """Image-level labels: the 80 COCO categories first (in their canonical order), then every
    ImageNet-1k wnid found among the files (:func:`wnid_of`), sorted (= class-index order)."""
    vocab = [f"coco:{coco_names.get(cid, cid)}" for cid in COCO_CATEGORY_IDS]
    wnids = sorted({w for it in items if (w := wnid_of(it.key))})
    return vocab + wnids


def wnid_of(key: str) -> str | None:
    """The ImageNet-1k wnid a file is labelled with, by the evaluation's own rule
    (:func:`colorization.imagenet.label_of`: a ``<wnid>_`` file name, else a ``<wnid>/``
    folder above it, as Imagenette's ``n01440764/ILSVRC2012_val_00000293.JPEG``)."""
    from colorization.imagenet import label_of, wnids  # imports torch: the decode tasks need not

    index = label_of(key)
    return None if index is None else wnids()[index]


def _square(im: Image.Image, size: int, resample: int) -> Image.Image:
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def prepare_item(row: dict[str, Any], size: int, max_pixels: int, storage: StorageOptions):
    """One input -> one output row (status ok / skipped / error; never raises)."""
    out = {"key": row["key"], "uri": row["uri"], "status": "ok", "error": "", "warning": ""}
    out.update(rgb=b"", seg=b"", labels=list(row["labels"]), has_seg=False)
    out.update(seg_source=row["seg_source"], teacher=b"")
    try:
        im = decode_image(read_bytes(row["uri"], storage), max_pixels, exif_transpose=False)
        # COCO json masks use the stored orientation; other photos (and masks drawn on their
        # stored pixels) are shown EXIF-rotated
        orientation = 1 if row["image_id"] >= 0 else exif_orientation(im)
        if is_grey_photo(im):  # the whole photo, as the tables stage and the evaluation judge
            out.update(status="skipped", error="grey image")
            return out
        photo = orient(Image.fromarray(to_rgb_array(im)), orientation)
        rgb = np.asarray(_square(photo, size, Image.BICUBIC))
        out["rgb"] = rgb.tobytes()
    except Exception as e:  # noqa: BLE001 - every input gets a row
        out.update(status="error", error=f"{type(e).__name__}: {e}", rgb=b"")
        return out
    try:
        seg = seg_map(row, im.size, storage)
    except Exception as e:  # noqa: BLE001 - a bad mask costs the mask, not the photo
        out["warning"] = f"mask {row['mask_uri']}: {type(e).__name__}: {e}"
        return out
    if seg is not None:
        square = _square(orient(Image.fromarray(seg), orientation), size, Image.NEAREST)
        out.update(seg=np.asarray(square).tobytes(), has_seg=True)
    return out


def seg_map(row: dict[str, Any], wh: tuple[int, int], storage: StorageOptions) -> np.ndarray | None:
    """The input's label map at the photo's stored size (uint8 ``(H, W)``, class ids or
    SEG_IGNORE), or None when it has none. Raises when its mask file is unusable."""
    w, h = wh
    if row["image_id"] >= 0:
        anns = json.loads(row["annotations"])
        return coco_instance_seg(anns, h, w) if anns else None
    if not row["mask_uri"]:
        return None
    values = decode_mask(read_bytes(row["mask_uri"], storage))
    if values.shape != (h, w):
        raise ValueError(f"mask is {values.shape[1]}x{values.shape[0]}, its photo {w}x{h}")
    return map_mask(values, row["mask_format"])


def teacher_info(variant: str | None) -> dict[str, Any] | None:
    """What ``dataset.json`` records of the teacher (None: no teacher)."""
    if variant is None:
        return None
    from colorization.models.efficientnet import SPECS

    if variant not in SPECS:
        raise ValueError(f"unknown teacher {variant!r}; known: {', '.join(SPECS)}")
    return {"model": f"efficientnet-{variant}", "input": SPECS[variant].resolution}


def teacher_probabilities(model: Any, rgb: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` squares -> float32 ``(N, 1000)`` softmax probabilities of the
    frozen classifier, each square resized to ``resolution`` (bicubic, antialiased)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, (resolution, resolution), mode="bicubic", antialias=True)
    with torch.no_grad():
        return torch.softmax(model(x.clamp(0.0, 1.0)).float(), dim=1).numpy()


class Teacher:
    """The teacher stage (Ray Data actor): the classifier loaded once per actor, frozen, one
    torch thread; Arrow in, Arrow out, only the ``teacher`` column replaced (``ok`` rows)."""

    def __init__(self, variant: str, size: int):
        import torch

        from colorization.models.efficientnet import SPECS, imagenet_classifier

        torch.set_num_threads(1)  # a dedicated worker process: the setting dies with it
        self.model = imagenet_classifier(variant).eval().requires_grad_(False)
        self.resolution, self.size = SPECS[variant].resolution, size

    def __call__(self, batch: pa.Table) -> pa.Table:
        status = batch.column("status").to_pylist()
        ok = [i for i, st in enumerate(status) if st == "ok"]
        teacher = [b""] * len(status)
        if ok:
            rgb = batch.column("rgb").to_pylist()
            s = self.size
            squares = np.stack([np.frombuffer(rgb[i], np.uint8).reshape(s, s, 3) for i in ok])
            probs = teacher_probabilities(self.model, squares, self.resolution)
            for i, p in zip(ok, probs.astype(np.float16), strict=True):
                teacher[i] = p.tobytes()
        index = batch.schema.get_field_index("teacher")
        return batch.set_column(index, "teacher", pa.array(teacher, pa.binary()))


def _item_rows(
    listed: list[tuple[str, Item]], vocab: list[str], pairs: dict[str, tuple[MaskSource, str]]
) -> list[dict[str, Any]]:
    index = {name: i for i, name in enumerate(vocab)}
    contiguous = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
    rows = []
    for src, it in listed:
        labels = [contiguous[c] for c in it.labels if c in contiguous]
        if wnid := wnid_of(it.key):
            labels.append(index[wnid])
        mask, mask_uri = pairs.get(it.uri, (None, ""))
        coco = it.image_id is not None
        rows.append(
            {
                "uri": it.uri,
                "key": it.key,
                "image_id": -1 if it.image_id is None else it.image_id,
                "labels": labels,
                "annotations": json.dumps(list(it.annotations)),
                "mask_uri": mask_uri,
                "mask_format": mask.fmt if mask else "",
                "seg_source": f"coco-instances:{src}" if coco else mask.name if mask else "",
            }
        )
    return rows


def _seg_sources(
    sources: list[str], listed: list[tuple[str, Item]], counts: dict, rows: list[dict]
) -> dict[str, dict[str, Any]]:
    """Per mask source: its format, inputs, rows with a mask, masks that could not be used."""
    out: dict[str, dict[str, Any]] = {}
    for src in sources:
        if is_coco_annotation(src):
            n = sum(s == src for s, _ in listed)
            out[f"coco-instances:{src}"] = {"format": "coco-instances", "images": n}
    for name, c in counts.items():
        out[name] = {"format": name.split(":", 1)[0], **c}
    for name, entry in out.items():
        mine = [r for r in rows if r["seg_source"] == name]
        entry["with_mask"] = sum(r["has_seg"] for r in mine)
        entry["mask_warnings"] = sum(bool(r["warning"]) for r in mine)
    return out


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Run the stage; returns the summary (also in ``out/dataset.json``)."""
    import ray
    from ray.data import ActorPoolStrategy

    from pipeline.cluster import require_ray

    require_ray("prepare")
    t0 = time.perf_counter()
    teacher = teacher_info(cfg.teacher)
    mask_sources = [MaskSource.parse(spec) for spec in cfg.masks]
    listed = [
        (src, it) for src in cfg.sources for it in list_items(src, cfg.storage, cfg.images_dir)
    ]
    if not listed:
        raise FileNotFoundError(f"no files found in {cfg.sources}")
    items = [it for _, it in listed]
    vocab = label_vocabulary(items, coco_names(cfg.sources))
    pairs, mask_counts = pair_masks(items, mask_sources, cfg.storage)

    def fn(batch: dict[str, np.ndarray]) -> dict[str, list]:
        cols = list(batch.values())
        rows = [dict(zip(batch.keys(), vals, strict=True)) for vals in zip(*cols, strict=True)]
        outs = [prepare_item(r, cfg.size, cfg.max_pixels, cfg.storage) for r in rows]
        return {k: [o[k] for o in outs] for k in outs[0]}

    prepared.clear(cfg.out, cfg.storage)
    filesystem, path = arrow_filesystem(cfg.out, cfg.storage)
    filesystem.create_dir(path, recursive=True)
    n_blocks = max(1, min(len(items) // 16, 200))
    ds = ray.data.from_items(_item_rows(listed, vocab, pairs), override_num_blocks=n_blocks)
    # one CPU per task, half a CPU per actor: different resources, so Ray Data never fuses
    # decoding into the teacher actors (it would run serially there)
    ds = ds.map_batches(fn, batch_size=16, batch_format="numpy", num_cpus=1)
    if cfg.teacher is not None:
        n_actors = cfg.teacher_actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        ds = ds.map_batches(
            Teacher,
            fn_constructor_kwargs={"variant": cfg.teacher, "size": cfg.size},
            compute=ActorPoolStrategy(size=n_actors),
            num_cpus=TEACHER_ACTOR_CPUS,
            batch_size=TEACHER_BATCH,
            batch_format="pyarrow",
        )
    ds.write_parquet(
        path, filesystem=filesystem, min_rows_per_file=cfg.rows_per_file, row_group_size=32
    )
    columns = ["key", "status", "error", "warning", "has_seg", "seg_source"]
    written = pads.dataset(path, filesystem=filesystem, format="parquet")
    status = written.to_table(columns=columns).to_pylist()
    counts = {s: sum(r["status"] == s for r in status) for s in ("ok", "skipped", "error")}
    warnings = [{"key": r["key"], "warning": r["warning"]} for r in status if r["warning"]]
    summary = {
        "format": prepared.FORMAT,
        "size": cfg.size,
        "n_listed": len(items),
        **{f"n_{k}": v for k, v in counts.items()},
        "n_seg": sum(r["has_seg"] for r in status),
        "n_mask_warnings": len(warnings),
        "labels": vocab,
        "teacher": teacher,
        "segmentation": {"space": SEG_SPACE, "ignore": SEG_IGNORE},
        "seg_sources": _seg_sources(cfg.sources, listed, mask_counts, status),
        "failures": [
            {k: r[k] for k in ("key", "status", "error")} for r in status if r["status"] == "error"
        ],
        "mask_warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 2),
        "config": asdict(cfg),
    }
    prepared.write_dataset_info(cfg.out, summary, cfg.storage)
    return summary
