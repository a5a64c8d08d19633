"""Listing and reading inputs (pipeline/sources.py): folders, globs, COCO files, S3 prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.sources import (
    Item,
    StorageOptions,
    coco_categories,
    coco_images_dir,
    is_coco_annotation,
    list_items,
    read_bytes,
    split_s3,
)

pytestmark = pytest.mark.timeout(60)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with nested, hidden and non-image files."""
    for rel in (
        "b.jpg",
        "a.png",
        "notes.txt",
        "sub/c.jpg",
        "sub/deeper/d.jpg",
        ".hidden.jpg",
        ".git/objects/e.jpg",
        "sub/.DS_Store",
        "sub/.cache/f.jpg",
    ):
        _touch(tmp_path / rel, rel.encode())
    return tmp_path


# --- local ----------------------------------------------------------------------------------
def test_folder_lists_visible_files_sorted_by_key(tree: Path):
    items = list_items(str(tree))
    keys = [it.key for it in items]
    # every visible file, images or not (a non-image becomes an error row downstream)
    assert keys == ["a.png", "b.jpg", "notes.txt", "sub/c.jpg", "sub/deeper/d.jpg"]
    assert all(Path(it.uri) == tree / it.key for it in items)
    assert all(it.image_id is None and it.annotations == () and it.labels == () for it in items)


def test_single_file_is_its_own_source(tree: Path):
    assert list_items(str(tree / "sub" / "c.jpg")) == [Item(str(tree / "sub" / "c.jpg"), "c.jpg")]


def test_glob_lists_matching_files(tree: Path):
    items = list_items(str(tree / "**" / "*.jpg"))
    names = sorted(Path(it.uri).name for it in items)
    assert names == ["b.jpg", "c.jpg", "d.jpg"]  # '*' does not match hidden names
    assert [it.key for it in items] == sorted(it.key for it in items)


def test_glob_keys_are_relative_to_the_pattern_folder(coco_tiny: Path):
    items = list_items(str(coco_tiny / "train2017" / "0000000081*.jpg"))
    assert [it.key for it in items] == ["000000008193.jpg"]


def test_glob_star_keys_are_relative_to_the_pattern_folder(coco_tiny: Path):
    items = list_items(str(coco_tiny / "train2017" / "*.jpg"))
    assert len(items) == 80
    assert items[0].key == "000000008193.jpg"


def test_glob_without_matches_is_empty(tmp_path: Path):
    assert list_items(str(tmp_path / "*.jpg")) == []


def test_missing_source_is_an_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="source not found"):
        list_items(str(tmp_path / "no-such-folder"))


def test_read_bytes_local(tree: Path):
    assert read_bytes(str(tree / "sub" / "c.jpg")) == b"sub/c.jpg"
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tree / "absent.jpg"))


# --- COCO annotation files ------------------------------------------------------------------
def test_coco_annotation_source(coco_tiny: Path):
    ann = coco_tiny / "annotations" / "instances_train2017.json"
    assert is_coco_annotation(str(ann))
    assert coco_images_dir(ann, "000000008193.jpg") == coco_tiny / "train2017"
    coco = json.loads(ann.read_text())
    items = list_items(str(ann))
    assert len(items) == 80 == len(coco["images"])
    assert [it.key for it in items] == sorted(p.name for p in (coco_tiny / "train2017").iterdir())
    assert all(Path(it.uri).is_file() for it in items)

    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for it in items:
        anns = by_image.get(it.image_id, [])
        assert len(it.annotations) == len(anns)
        assert it.labels == tuple(sorted({a["category_id"] for a in anns}))
        for a in it.annotations:
            assert (a["height"], a["width"]) == sizes[it.image_id]
            assert {"category_id", "segmentation", "iscrowd"} <= a.keys()
    # one image per category in coco-tiny: every category is somebody's label
    assert {c for it in items for c in it.labels} == {c["id"] for c in coco["categories"]}
    assert len(coco_categories(ann)) == 80


@pytest.fixture
def lone_annotation(coco_tiny: Path, tmp_path: Path) -> Path:
    """A copy of coco-tiny's train annotations in a folder without its images."""
    ann = tmp_path / "instances_train2017.json"
    ann.write_bytes((coco_tiny / "annotations" / "instances_train2017.json").read_bytes())
    return ann


def test_coco_with_explicit_images_dir(lone_annotation: Path, coco_tiny: Path):
    items = list_items(str(lone_annotation), images_dir=str(coco_tiny / "train2017"))
    assert len(items) == 80 and all(Path(it.uri).is_file() for it in items)


def test_coco_without_its_images_is_an_error(lone_annotation: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        list_items(str(lone_annotation))


# --- S3 -------------------------------------------------------------------------------------
def test_split_s3():
    assert split_s3("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="no bucket"):
        split_s3("s3:///key")


@pytest.mark.s3
def test_s3_prefix_lists_keys_relative_to_the_prefix(s3_bucket):
    for key in (
        "photos/2017/b.jpg",
        "photos/2017/a.jpg",
        "photos/2017/sub/c.png",
        "photos/2017/sub/",  # a "folder" marker, not a file
        "photos/2017/.hidden.jpg",
        "photos/2017/.meta/x.jpg",
        "photos/2017-old/z.jpg",  # a sibling prefix, not inside photos/2017/
        "elsewhere/y.jpg",
    ):
        s3_bucket.put(key, key.encode())
    storage = StorageOptions(endpoint_url=s3_bucket.endpoint)
    want = ["a.jpg", "b.jpg", "sub/c.png"]
    for prefix in ("photos/2017", "photos/2017/"):
        items = list_items(s3_bucket.uri(prefix), storage)
        assert [it.key for it in items] == want
        assert [it.uri for it in items] == [s3_bucket.uri(f"photos/2017/{k}") for k in want]
    whole = [it.key for it in list_items(s3_bucket.uri(), storage)]
    assert whole == [
        "elsewhere/y.jpg",
        "photos/2017-old/z.jpg",
        "photos/2017/a.jpg",
        "photos/2017/b.jpg",
        "photos/2017/sub/c.png",
    ]


@pytest.mark.s3
def test_s3_read_bytes(s3_bucket, coco_tiny: Path):
    photo = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    uri = s3_bucket.put("in/photo.jpg", photo)
    storage = StorageOptions(endpoint_url=s3_bucket.endpoint, max_attempts=2)
    assert read_bytes(uri, storage) == photo.read_bytes()
    with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
        read_bytes(s3_bucket.uri("in/absent.jpg"), storage)


@pytest.mark.s3
def test_s3_empty_prefix_lists_nothing(s3_bucket):
    storage = StorageOptions(endpoint_url=s3_bucket.endpoint)
    assert list_items(s3_bucket.uri("nothing/here/"), storage) == []
