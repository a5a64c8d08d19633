"""A prepared training dataset (``colorize prepare`` writes it, ``colorize train`` reads it).

Where: a folder or an ``s3://`` prefix (any S3-compatible store), holding parquet shards
``*.parquet`` and ``dataset.json`` (what was prepared, how, and the counts). The only reader
is Ray Data (:func:`read_prepared`): the training stage hands the dataset to Ray Train, whose
workers each iterate their share, so no node needs a shared file system.

Columns of a shard: ``key``, ``uri``, ``status`` (ok / skipped / error), ``error``,
``warning``, ``rgb`` (uint8 ``(S, S, 3)`` bytes), ``seg`` (uint8 ``(S, S)`` bytes, class ids of
:mod:`colorization.segmentation` or SEG_IGNORE; empty without a mask), ``has_seg``,
``seg_source``, ``labels`` (image-level label ids), ``teacher`` (float16 ``(1000,)`` bytes,
the teacher's ImageNet probabilities; empty when not computed). Training reads the ``ok``
rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.sources import StorageOptions, arrow_filesystem, join_uri, read_bytes, write_bytes

FORMAT = "colorization.prepared/1"
INFO = "dataset.json"
#: the columns training reads
TRAINING_COLUMNS = ["key", "rgb", "seg", "labels", "teacher"]


@dataclass
class Sample:
    rgb: np.ndarray  # (S, S, 3) uint8
    seg: np.ndarray | None  # (S, S) uint8: class ids 0..132 or SEG_IGNORE; None: no mask
    labels: list[int]
    key: str
    teacher: np.ndarray | None = None  # (1000,) float32 ImageNet probabilities; None: none


def read_dataset_info(uri: str, storage: StorageOptions = StorageOptions()) -> dict[str, Any]:
    """``dataset.json`` of a prepared dataset (folder or ``s3://`` prefix)."""
    try:
        return json.loads(read_bytes(join_uri(uri, INFO), storage))
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"{uri}: no {INFO}; run `colorize prepare` first") from e
    except Exception as e:  # botocore's NoSuchKey and friends
        if "NoSuchKey" in type(e).__name__ or "404" in str(e):
            raise FileNotFoundError(f"{uri}: no {INFO}; run `colorize prepare` first") from e
        raise


def write_dataset_info(uri: str, info: dict[str, Any], storage: StorageOptions) -> None:
    write_bytes(join_uri(uri, INFO), json.dumps(info, indent=2, default=str).encode(), storage)


def clear(uri: str, storage: StorageOptions) -> None:
    """Remove a previous preparation's shards and ``dataset.json`` (nothing else)."""
    from pyarrow import fs as pafs

    filesystem, path = arrow_filesystem(uri, storage)
    selector = pafs.FileSelector(path, allow_not_found=True)
    for info in filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File and (
            info.base_name.endswith(".parquet") or info.base_name == INFO
        ):
            filesystem.delete_file(info.path)


def read_prepared(
    uri: str,
    storage: StorageOptions = StorageOptions(),
    *,
    columns: list[str] | None = None,
    shuffle_seed: int | None = None,
    ok_only: bool = True,
):
    """The prepared dataset as a Ray Data ``Dataset`` (streamed; nothing is read until it is
    iterated). ``shuffle_seed``: the shards' order is shuffled, differently at every
    execution (every epoch) and the same for the same seed; None keeps the stored order.
    ``ok_only``: only the rows that were prepared (status ``ok``)."""
    import ray.data
    from ray.data import FileShuffleConfig
    from ray.data.expressions import col

    filesystem, path = arrow_filesystem(uri, storage)
    shuffle = None
    if shuffle_seed is not None:
        shuffle = FileShuffleConfig(seed=shuffle_seed, reseed_after_execution=True)
    ds = ray.data.read_parquet(path, filesystem=filesystem, shuffle=shuffle)
    columns = list(columns or TRAINING_COLUMNS)
    if not ok_only:
        return ds.select_columns(columns)
    # the filter is pushed down into the parquet scan
    return (
        ds.select_columns([*columns, "status"])
        .filter(expr=col("status") == "ok")
        .drop_columns(["status"])
    )


def samples_of(batch: dict[str, np.ndarray], size: int) -> list[Sample]:
    """A numpy batch of :func:`read_prepared` rows -> samples (arrays decoded)."""
    out = []
    for i, key in enumerate(batch["key"]):
        rgb = np.frombuffer(batch["rgb"][i], np.uint8).reshape(size, size, 3)
        s = batch["seg"][i]
        seg = np.frombuffer(s, np.uint8).reshape(size, size) if s is not None and len(s) else None
        t = batch["teacher"][i] if "teacher" in batch else None
        teacher = (
            np.frombuffer(t, np.float16).astype(np.float32) if t is not None and len(t) else None
        )
        labels = batch["labels"][i] if "labels" in batch else None
        labels = [] if labels is None else [int(x) for x in labels]
        out.append(Sample(rgb, seg, labels, str(key), teacher))
    return out
