"""Listing and reading inputs: local folders and globs, ``s3://`` prefixes, COCO annotation
files and manifests (parquet or CSV with a column of URIs).

Every stage lists its inputs as :class:`Item` records and reads bytes with :func:`read_bytes`,
so local paths and object storage behave the same. Object storage goes through boto3 with
the standard AWS variables and profiles; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points it
at any S3-compatible store. Transient errors are retried with exponential backoff by botocore.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jp2", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage (None: boto3's own resolution of env vars and profiles)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    max_attempts: int = 8

    def resolved_endpoint(self) -> str | None:
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )


@dataclass(frozen=True)
class Item:
    """One input: where it is, its key relative to the source root, optional annotations."""

    uri: str
    key: str
    image_id: int | None = None
    annotations: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    labels: tuple[int, ...] = ()


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


@functools.lru_cache(maxsize=8)
def s3_client(storage: StorageOptions = StorageOptions()):
    """A boto3 S3 client (cached per process and options)."""
    session = boto3.session.Session(profile_name=storage.profile, region_name=storage.region)
    cfg = Config(
        retries={"max_attempts": storage.max_attempts, "mode": "adaptive"},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client("s3", endpoint_url=storage.resolved_endpoint(), config=cfg)


def read_bytes(uri: str, storage: StorageOptions = StorageOptions()) -> bytes:
    """The bytes of a local file or an S3 object."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return s3_client(storage).get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(uri, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes, storage: StorageOptions = StorageOptions()) -> None:
    """Write a local file or an S3 object whole: readers never see a half-written output (a
    local file is written beside its destination, then renamed; an S3 PUT is atomic)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client(storage).put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:200]}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def arrow_filesystem(uri: str, storage: StorageOptions = StorageOptions()):
    """``(pyarrow filesystem, path)`` of a folder or ``s3://bucket/prefix``, for pyarrow and
    Ray Data readers and writers. The endpoint is passed explicitly: pyarrow does not read
    ``AWS_ENDPOINT_URL`` everywhere. Credentials: AWS's standard chain (variables, the
    ``AWS_PROFILE`` profile, instance roles)."""
    from pyarrow import fs

    if not is_s3(uri):
        return fs.LocalFileSystem(), str(Path(uri).resolve())
    kwargs: dict[str, Any] = {"region": storage.region} if storage.region else {}
    endpoint = storage.resolved_endpoint()
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return fs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")


def seekable(uri: str, storage: StorageOptions = StorageOptions()):
    """A local path as it is; an S3 object as a callable that opens it as a seekable file read
    by byte ranges (pyarrow's ``S3FileSystem``), so that a reader takes only the parts it
    needs of a large object (a segment of a film)."""
    if not is_s3(uri):
        return uri
    fs, path = arrow_filesystem(uri, storage)
    return lambda: fs.open_input_file(path)


def fetch_file(uri: str, path: str | Path, storage: StorageOptions = StorageOptions()) -> Path:
    """A local file or an S3 object as a local file: a local path is returned as it is, an
    object is downloaded to ``path`` (streamed, never whole in memory)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, key = split_s3(uri)
    s3_client(storage).download_file(bucket, key, str(path))
    return Path(path)


def delete_prefix(uri: str, storage: StorageOptions = StorageOptions()) -> None:
    """Every file under a local folder or every object under an S3 prefix, removed."""
    if not is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    bucket, prefix = split_s3(uri)
    client = s3_client(storage)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def write_file(path: str | Path, uri: str, storage: StorageOptions = StorageOptions()) -> None:
    """Copy a local file to a local path or an S3 object whole, streamed (a large file never
    sits in memory; S3 gets a multipart upload, complete or absent)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client(storage).upload_file(str(path), bucket, key)
        return
    dest = Path(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name[:200]}.{os.getpid()}.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest)


def join_uri(root: str, key: str) -> str:
    """``root`` (folder or ``s3://bucket/prefix``) joined with a relative key; refuses keys
    that would land outside ``root`` (absolute, ``..``, empty)."""
    parts = key.replace("\\", "/").split("/")
    if not key.strip("/") or key.startswith("/") or ".." in parts or ":" in parts[0]:
        raise ValueError(f"key {key!r} would write outside the destination")
    return f"{root.rstrip('/')}/{key}"


def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in Path(rel).parts)


def _list_s3(uri: str, storage: StorageOptions) -> Iterator[Item]:
    bucket, prefix = split_s3(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    pages = s3_client(storage).get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = key[len(prefix) :]
            if key.endswith("/") or not _visible(rel):
                continue
            yield Item(f"s3://{bucket}/{key}", rel)


def _list_folder(root: Path) -> Iterator[Item]:
    """In key order, folder by folder: a folder's visible entries sorted as their keys sort (a
    subfolder as ``name/``), so a subfolder's files come where their keys fall among the files
    beside it. Symbolic links to folders are not followed (as ``os.walk``)."""

    def walk(folder: str, rel: str) -> Iterator[Item]:
        with os.scandir(folder) as it:
            entries = sorted(
                (e.name + "/" if e.is_dir() else e.name, e)
                for e in it
                if not e.name.startswith(".")
            )
        for name, e in entries:
            if not name.endswith("/"):
                yield Item(e.path, rel + name)
            elif not e.is_symlink():
                yield from walk(e.path, rel + name)

    yield from walk(str(root), "")


def _list_glob(pattern: str) -> Iterator[Item]:
    base = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0])
    for p in sorted(glob.glob(pattern, recursive=True)):
        if os.path.isfile(p):
            yield Item(p, Path(os.path.relpath(p, base or ".")).as_posix())


def coco_images_dir(ann_path: Path, first_file: str) -> Path:
    """Where the images of ``.../annotations/instances_<split>.json`` are: the first of
    ``.../<split>``, ``annotations/<split>``, ``annotations/`` that holds ``first_file``."""
    split = ann_path.stem.split("_", 1)[-1]
    cands = (ann_path.parent.parent / split, ann_path.parent / split, ann_path.parent)
    for cand in cands:
        if (cand / first_file).is_file():
            return cand
    raise FileNotFoundError(
        f"images of {ann_path} not found (looked for {first_file} in "
        f"{', '.join(str(c) for c in cands)}); pass the folder with --images-dir"
    )


def _list_coco(ann_path: Path, images_dir: Path | None) -> Iterator[Item]:
    with open(ann_path) as f:
        coco = json.load(f)
    if not coco["images"]:
        return
    images_dir = images_dir or coco_images_dir(ann_path, coco["images"][0]["file_name"])
    anns: dict[int, list[dict]] = {}
    for ann in coco.get("annotations", []):
        anns.setdefault(ann["image_id"], []).append(
            {
                "category_id": ann["category_id"],
                "segmentation": ann["segmentation"],
                "iscrowd": ann.get("iscrowd", 0),
                "area": ann.get("area", 0),
            }
        )
    for img in sorted(coco["images"], key=lambda r: r["file_name"]):
        image_anns = anns.get(img["id"], [])
        labels = tuple(sorted({a["category_id"] for a in image_anns}))
        yield Item(
            str(images_dir / img["file_name"]),
            img["file_name"],
            image_id=img["id"],
            annotations=tuple(
                dict(a, height=img["height"], width=img["width"]) for a in image_anns
            ),
            labels=labels,
        )


def coco_categories(ann_path: str | Path) -> dict[int, str]:
    """``{category_id: name}`` of a COCO annotation file."""
    with open(ann_path) as f:
        return {c["id"]: c["name"] for c in json.load(f)["categories"]}


def is_coco_annotation(src: str) -> bool:
    return src.endswith(".json") and not is_s3(src) and os.path.isfile(src)


MANIFEST_COLUMNS = ("uri", "source_uri", "url", "path", "key")


def is_manifest(src: str) -> bool:
    return src.lower().endswith((".parquet", ".csv"))


def _manifest_uris(path: str, base: str) -> Iterator[list[str]]:
    """A manifest file's URIs, a batch at a time (blank cells left out; relative paths made
    relative to ``base``)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.lower().endswith(".parquet"):
        reader = pq.ParquetFile(path)
        names = reader.schema_arrow.names
    else:
        reader = pacsv.open_csv(path)
        names = reader.schema.names
    found = [c for c in MANIFEST_COLUMNS if c in names]
    if not found and len(names) != 1:
        raise ValueError(
            f"manifest {path}: no URI column (one of {', '.join(MANIFEST_COLUMNS)}) among {names}"
        )
    column = names.index(found[0] if found else names[0])
    batches = reader.iter_batches(65_536) if hasattr(reader, "iter_batches") else reader
    for batch in batches:
        uris = []
        for u in batch.column(column).to_pylist():
            if u is None or not str(u).strip():
                continue
            u = str(u).strip()
            uris.append(u if is_s3(u) or os.path.isabs(u) else f"{base}/{u}")
        yield uris


def _uri_path(uri: str) -> str:
    return split_s3(uri)[1] if is_s3(uri) else os.path.normpath(uri)


def _list_manifest(src: str, storage: StorageOptions) -> Iterator[Item]:
    """A parquet or CSV file with a column of URIs (``uri``, ``source_uri``, ``url``, ``path``
    or its only column); relative paths are relative to the manifest's folder. Keys are the
    URIs' paths below their longest common folder. In the manifest's order, read twice batch
    by batch (the common folder first): memory does not grow with the manifest (one on S3 is
    downloaded to a temporary file first)."""
    import tempfile

    base = src.rsplit("/", 1)[0] if "/" in src else "."
    with tempfile.TemporaryDirectory(prefix="manifest-") as tmp:
        path = src
        if is_s3(src):
            bucket, key = split_s3(src)
            path = os.path.join(tmp, os.path.basename(key))
            s3_client(storage).download_file(bucket, key, path)
        elif not os.path.isfile(src):
            raise FileNotFoundError(f"source not found: {src}")
        prefix = None
        for uris in _manifest_uris(path, base):
            if uris:
                paths = [_uri_path(u) for u in uris]
                prefix = os.path.commonprefix(paths if prefix is None else [prefix, *paths])
        common = os.path.dirname(prefix or "")
        for uris in _manifest_uris(path, base):
            for uri in uris:
                p = _uri_path(uri)
                yield Item(uri, p[len(common) :].lstrip("/") if common else p.lstrip("/"))


def iter_items(
    src: str, storage: StorageOptions = StorageOptions(), images_dir: str | None = None
) -> Iterator[Item]:
    """The inputs of one source, one at a time: an S3 prefix page by page, a manifest batch by
    batch, a folder folder by folder, so that memory does not grow with the source (a COCO
    annotation file is read whole). In key order, except a manifest: in its rows' order."""
    if is_manifest(src):
        return _list_manifest(src, storage)
    if is_s3(src):
        return _list_s3(src, storage)
    if is_coco_annotation(src):
        return _list_coco(Path(src), Path(images_dir) if images_dir else None)
    if any(ch in src for ch in "*?["):
        return _list_glob(src)
    if os.path.isdir(src):
        return _list_folder(Path(src))
    if os.path.isfile(src):
        return iter([Item(src, Path(src).name)])
    raise FileNotFoundError(f"source not found: {src}")


def list_items(
    src: str, storage: StorageOptions = StorageOptions(), images_dir: str | None = None
) -> list[Item]:
    """All inputs of one source, sorted by key. A folder lists every visible file (a file that
    is not an image becomes an error row downstream, never a silent skip)."""
    return sorted(iter_items(src, storage, images_dir), key=lambda it: it.key)


def list_sources(
    sources: list[str], storage: StorageOptions = StorageOptions(), images_dir: str | None = None
) -> list[Item]:
    """The inputs of several sources, in source order; an error if there are none at all."""
    items = [it for src in sources for it in list_items(src, storage, images_dir)]
    if not items:
        raise FileNotFoundError(f"no files found in {sources}")
    return items


def coco_names(sources: list[str]) -> dict[int, str]:
    """``{category_id: name}`` from every COCO annotation file among ``sources``."""
    names: dict[int, str] = {}
    for src in sources:
        if is_coco_annotation(src):
            names.update(coco_categories(src))
    return names
