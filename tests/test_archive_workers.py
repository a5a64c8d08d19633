"""The archive job's workers on one batch each, without Ray: decode -> model -> finish give the
pixels of the one inference path, a failed input stays a row through every stage, and the
modules the tasks' workers unpickle do not import torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.archive_workers import Colorizer, _Decode, _Finish
from pipeline.manifest import ROW_SCHEMA, output_key
from pipeline.run_stage import RunConfig, _model_facts
from tests.archive_fixtures import write_grey_copies
from tests.conftest import require
from tests.shared_paths import SHARED_DATA

pytestmark = pytest.mark.timeout(120)

COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"


def as_arrow(columns: dict[str, list]) -> pa.Table:
    """The decode stage's output as the model stage receives it (Ray Data stores the ``size``
    x ``size`` L as a tensor column)."""
    from ray.data.extensions import ArrowTensorArray

    small = ArrowTensorArray.from_numpy(np.stack(columns["small"]))
    rest = {k: pa.array(v) for k, v in columns.items() if k != "small"}
    return pa.table({**rest, "small": small})


def as_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """The model stage's output as the finish stage receives it (``batch_format="numpy"``)."""
    out = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
    out["chroma"] = table.column("chroma").combine_chunks().to_numpy()
    return out


def test_each_worker_runs_on_one_batch_without_ray(tmp_path):
    from colorization.inference import colorize_images
    from colorization.shipped import load

    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=3)
    names = sorted(p.name for p in (src / "grey").iterdir())
    (src / "grey" / "broken.jpg").write_bytes(b"")
    names.insert(1, "broken.jpg")  # a failed input between good ones
    cfg = RunConfig(src=str(src / "grey"), dst=str(tmp_path / "out"), format="png")
    uris = [str(src / "grey" / n) for n in names]
    outs = [f"{cfg.dst}/{output_key(n, 'png')}" for n in names]
    batch = {"source_uri": np.array(uris, object), "output_uri": np.array(outs, object)}

    decoded = _Decode(cfg)(batch)
    assert decoded["status"] == ["ok", "error", "ok", "ok"]
    assert "empty" in decoded["error"][1].lower()
    colored = Colorizer(cfg)(as_arrow(decoded))
    assert colored.column("status").to_pylist() == decoded["status"]
    assert colored.column("chroma").type.shape[0] == 2
    rows = _Finish(cfg, *_model_facts(cfg.model))(as_numpy(colored))

    assert rows.schema == ROW_SCHEMA
    got = rows.to_pylist()
    assert [r["status"] for r in got] == ["ok", "error", "ok", "ok"]
    assert got[1]["output_uri"] == "" and got[0]["output_uri"] == outs[0]
    assert all(r["seconds"] > 0 for r in got)
    model, table, _ = load(cfg.model)
    good = [n for n in names if n != "broken.jpg"]
    want = colorize_images(model, table, [Image.open(src / "grey" / n) for n in good])
    for name, expected in zip(good, want, strict=True):
        image = np.asarray(Image.open(tmp_path / "out" / output_key(name, "png")), np.int16)
        assert np.abs(image - np.asarray(expected, np.int16)).max() <= 1, name


def test_task_modules_do_not_import_torch():
    """The decode and finish tasks unpickle these modules in their Ray workers: without torch
    those workers are 250-450 MB smaller (only the model actors import it)."""
    code = (
        "import sys, pipeline.archive_workers, pipeline.manifest, pipeline.run_stage; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
