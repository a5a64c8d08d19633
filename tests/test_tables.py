"""Colour-class tables: gamut, lookup tables, prior and weights, encodings, file format."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from colorization.abgrid import AbGrid, code_to_rgb
from colorization.color import rgb_to_lab
from colorization.tables import (
    ColorTable,
    TableFormatError,
    TableParams,
    load_zhang_313,
)
from tests.shared_paths import SHARED_REFERENCE

ZHANG = SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"


@pytest.fixture(scope="module")
def zhang() -> ColorTable:
    if not ZHANG.exists():
        pytest.skip("../shared/reference is missing")
    return load_zhang_313(ZHANG)


@pytest.fixture(scope="module")
def all_rgb_table() -> ColorTable:
    """A table built from all 2^24 8-bit sRGB colours, each counted once."""
    grid = AbGrid()
    return ColorTable.from_histogram(np.bincount(grid.rgb_cell_lut(), minlength=grid.n_cells))


def test_grid_geometry():
    g = AbGrid(10)
    assert (g.half, g.side) == (11, 23)
    c = g.centres()
    assert np.array_equal(g.cell_of(c), np.arange(g.n_cells))
    assert g.cell_of(np.array([4.9, -5.1])) == g.cell_of(np.array([0.0, -10.0]))
    fine = AbGrid(1, centred=False)
    assert fine.side == 220 and np.allclose(fine.centres()[0], [-109.5, -109.5])
    ab = torch.randn(2, 2, 5, 7) * 40
    assert np.array_equal(fine.cell_of_t(ab).numpy(), fine.cell_of(ab.permute(0, 2, 3, 1).numpy()))


def test_rgb_cell_lut_matches_direct_conversion():
    g = AbGrid()
    codes = np.random.default_rng(3).integers(0, 1 << 24, 20000).astype(np.uint32)
    direct = g.cell_of(rgb_to_lab(code_to_rgb(codes))[:, 1:])
    assert np.array_equal(g.rgb_cell_lut()[codes], direct)


def test_zhang_313_loads_and_every_srgb_table_falls_inside(zhang, all_rgb_table):
    assert zhang.num_classes == 313
    assert np.allclose(zhang.prior, 1 / 313)
    assert all_rgb_table.num_classes == 261  # the fact measured in ../shared/reference
    grid = zhang.grid
    inside = np.isin(grid.cell_of(all_rgb_table.centres), grid.cell_of(zhang.centres))
    assert inside.all()


def test_prior_smoothing_and_weights(all_rgb_table):
    t = all_rgb_table
    assert t.prior.sum() == pytest.approx(1) and t.prior_smoothed.sum() == pytest.approx(1)
    assert (t.prior * t.weights).sum() == pytest.approx(1, abs=1e-12)
    q = t.num_classes
    unnorm = 1 / (0.5 * t.prior_smoothed + 0.5 / q)
    assert np.allclose(t.weights / t.weights[0], unnorm / unnorm[0])
    # rarer (smoothed) classes weigh more
    assert np.corrcoef(t.prior_smoothed, t.weights)[0, 1] < -0.5


def test_gamut_thresholds_and_nearest_lookup():
    g = AbGrid()
    hist = np.zeros(g.n_cells, np.int64)
    cells = g.cell_of(np.array([[0, 0], [10, 0], [0, 30], [50, 50]]))
    hist[cells] = [1000, 500, 20, 3]
    t = ColorTable.from_histogram(hist, TableParams(min_count=10))
    assert t.num_classes == 3 and t.provenance["n_pixels_outside_gamut"] == 3
    assert set(map(tuple, t.centres.tolist())) == {(0, 0), (10, 0), (0, 30)}
    # (50, 50) is outside the gamut: its nearest class is (0, 30) (53.9 away; (10, 0) is 64)
    assert tuple(t.centres[t.cell_to_class[g.cell_of(np.array([50, 50]))]]) == (0, 30)
    t2 = ColorTable.from_histogram(hist, TableParams(min_mass=0.4))
    assert t2.num_classes == 1
    with pytest.raises(ValueError, match="empty"):
        ColorTable.from_histogram(np.zeros(g.n_cells, np.int64))


def test_hard_encoding_equals_nearest_neighbour(zhang):
    rng = np.random.default_rng(0)
    ab = zhang.centres[rng.integers(0, 313, 50000)] + rng.normal(0, 4, (50000, 2))
    _, nn = NearestNeighbors(n_neighbors=1).fit(zhang.centres).kneighbors(ab)
    enc = zhang.encode_hard(ab)
    assert (enc == nn[:, 0]).mean() > 0.999
    d_enc = np.linalg.norm(ab - zhang.centres[enc], axis=1)
    d_nn = np.linalg.norm(ab - zhang.centres[nn[:, 0]], axis=1)
    # a point takes the class of its fine cell's centre, at most half a diagonal away, so the
    # class found is at most a diagonal (sqrt(2) * step) farther than the nearest one
    assert (d_enc - d_nn).max() <= np.sqrt(2) * zhang.fine_grid.step
    ab_img = torch.from_numpy(ab.reshape(250, 200, 2)).permute(2, 0, 1)[None]
    assert np.array_equal(zhang.encode_hard_t(ab_img)[0].numpy(), enc.reshape(250, 200))


def test_rgb_encoding_is_the_nearest_class_of_the_exact_ab(zhang):
    rgb = np.random.default_rng(1).integers(0, 256, (40000, 3), dtype=np.uint8)
    ab = rgb_to_lab(rgb)[:, 1:]
    _, nn = NearestNeighbors(n_neighbors=1).fit(zhang.centres).kneighbors(ab)
    assert (zhang.encode_rgb(rgb) == nn[:, 0]).mean() > 0.999
    assert zhang.rgb_to_class_lut().shape == (1 << 24,)


def test_soft_encoding_matches_zhang(zhang):
    rng = np.random.default_rng(2)
    ab = zhang.centres[rng.integers(0, 313, 5000)] + rng.normal(0, 4, (5000, 2))
    d, nn = NearestNeighbors(n_neighbors=10).fit(zhang.centres).kneighbors(ab)
    w_ref = np.exp(-(d**2) / (2 * 5**2))
    w_ref /= w_ref.sum(1, keepdims=True)
    idx, w = zhang.encode_soft(ab)
    assert idx.shape == (5000, 10) and np.allclose(w.sum(1), 1, atol=1e-5)
    assert (idx[:, 0] == nn[:, 0]).mean() > 0.99
    dense_ref = np.zeros((5000, 313))
    np.put_along_axis(dense_ref, nn, w_ref, 1)
    dense = np.zeros((5000, 313))
    np.put_along_axis(dense, idx, w, 1)
    assert np.abs(dense - dense_ref).sum(1).mean() < 0.1  # total variation per pixel
    # the torch form gives the same dense targets
    ab_t = torch.from_numpy(ab.reshape(50, 100, 2)).permute(2, 0, 1)[None]
    dense_t = zhang.encode_soft_t(ab_t.float())[0].permute(1, 2, 0).reshape(5000, 313)
    assert np.allclose(dense_t.numpy(), dense, atol=1e-6)


def test_decoding(zhang):
    q = zhang.num_classes
    logits = torch.full((1, q, 2, 2), -30.0)
    logits[:, 7] = 30.0
    for mode in ("annealed", "mean", "mode"):
        ab = zhang.decode(logits, mode=mode)
        assert torch.allclose(ab[0, :, 0, 0], torch.tensor(zhang.centres[7]).float(), atol=1e-3)
    # two classes with probabilities .6/.4: mean interpolates, annealing moves to the mode
    probs = torch.zeros(1, q, 1, 1)
    probs[0, 0], probs[0, 1] = 0.6, 0.4
    c = torch.tensor(zhang.centres[:2]).float()
    mean = zhang.decode(probs, "mean", logits=False)[0, :, 0, 0]
    assert torch.allclose(mean, 0.6 * c[0] + 0.4 * c[1], atol=1e-4)
    w = torch.tensor([0.6, 0.4]) ** (1 / 0.38)
    w /= w.sum()
    ann = zhang.decode(probs, "annealed", temperature=0.38, logits=False)[0, :, 0, 0]
    assert torch.allclose(ann, w[0] * c[0] + w[1] * c[1], atol=1e-4)
    assert torch.allclose(zhang.decode(probs, "mode", logits=False)[0, :, 0, 0], c[0])
    with pytest.raises(ValueError):
        zhang.decode(probs, "median")


def test_parquet_round_trip(tmp_path, all_rgb_table):
    path = all_rgb_table.save(tmp_path / "classes.parquet")
    back = ColorTable.load(path)
    assert back.fingerprint == all_rgb_table.fingerprint
    assert np.array_equal(back.centres, all_rgb_table.centres)
    assert np.array_equal(back.weights, all_rgb_table.weights)
    raw = pq.read_table(path)  # any parquet reader sees plain columns
    assert raw.column_names == ["id", "a", "b", "count", "prior", "prior_smoothed", "weight"]
    meta = json.loads(raw.schema.metadata[b"colorization.table"])
    assert meta["num_classes"] == 261 and meta["params"]["grid"] == 10


def _rewrite(path, table: pa.Table, meta: dict | None = None):
    if meta is not None:
        table = table.replace_schema_metadata({b"colorization.table": json.dumps(meta)})
    pq.write_table(table, path)


def test_bad_files_are_explained(tmp_path, all_rgb_table):
    good = all_rgb_table.save(tmp_path / "good.parquet")
    raw = pq.read_table(good)
    meta = json.loads(raw.schema.metadata[b"colorization.table"])

    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(TableFormatError, match="not a readable parquet"):
        ColorTable.load(tmp_path / "text.parquet")

    (tmp_path / "trunc.parquet").write_bytes(good.read_bytes()[:500])
    with pytest.raises(TableFormatError, match="not a readable parquet"):
        ColorTable.load(tmp_path / "trunc.parquet")

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    with pytest.raises(TableFormatError, match="not a table written by this project"):
        ColorTable.load(tmp_path / "foreign.parquet")

    _rewrite(tmp_path / "nocol.parquet", raw.drop(["weight"]), meta)
    with pytest.raises(TableFormatError, match="missing columns"):
        ColorTable.load(tmp_path / "nocol.parquet")

    w = raw.column("weight").to_numpy().copy()
    w[3] *= 1.01
    tampered = raw.set_column(6, pa.field("weight", pa.float64(), False), pa.array(w))
    _rewrite(tmp_path / "tampered.parquet", tampered, meta)
    with pytest.raises(TableFormatError, match="fingerprint"):
        ColorTable.load(tmp_path / "tampered.parquet")

    _rewrite(tmp_path / "version.parquet", raw, dict(meta, version=99))
    with pytest.raises(TableFormatError, match="version 99"):
        ColorTable.load(tmp_path / "version.parquet")

    a = raw.column("a").to_numpy().copy()
    a[0] += 3
    off = raw.set_column(1, pa.field("a", pa.float64(), False), pa.array(a))
    _rewrite(tmp_path / "offgrid.parquet", off, meta)
    with pytest.raises(TableFormatError, match="grid"):
        ColorTable.load(tmp_path / "offgrid.parquet")


def test_from_centres_validates():
    with pytest.raises(ValueError, match="grid"):
        ColorTable.from_centres(np.array([[3.0, 0.0]]))
    with pytest.raises(ValueError, match="repeat"):
        ColorTable.from_centres(np.array([[0.0, 0.0], [0.0, 0.0]]))


def test_histogram_kernel_equals_numpy_twin():
    from colorization.kernels import histogram_pixels

    g = AbGrid()
    lut = g.rgb_cell_lut()
    px = np.random.default_rng(5).integers(0, 1 << 32, 100_000, dtype=np.uint64).astype(np.uint32)
    expected = np.bincount(np.take(lut, px & np.uint32(0xFFFFFF)), minlength=g.n_cells)
    assert np.array_equal(histogram_pixels(px, lut, g.n_cells), expected)


def test_soft_encoding_kernel_equals_numpy_twin(zhang):
    ab = np.random.default_rng(6).uniform(-130, 130, (20_000, 2))
    idx, w = zhang.soft_table
    cell = zhang.fine_grid.cell_of(ab)
    got_i, got_w = zhang.encode_soft(ab)
    assert np.array_equal(got_i, idx[cell]) and np.array_equal(got_w, w[cell])
    out = (np.empty((20_000, 10), np.uint16), np.empty((20_000, 10), np.float32))
    again = zhang.encode_soft(ab, out=out)
    assert again[0] is not None and np.array_equal(out[0], idx[cell])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("temperature", [0.38, 1.0])
def test_compiled_annealed_mean_equals_softmax_einsum(layout, temperature, zhang_313_path):
    """The CPU kernel behind ``decode`` against the plain torch formula, for both layouts."""
    table = load_zhang_313(zhang_313_path)
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, table.num_classes, 17, 23, generator=g) * 4
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    centres = torch.tensor(table.centres, dtype=torch.float32)
    ref = torch.einsum("nqhw,qc->nchw", torch.softmax(logits / temperature, dim=1), centres)
    with torch.inference_mode():
        got = table.decode(logits, "annealed", temperature)
    assert got.shape == (3, 2, 17, 23)
    assert torch.allclose(got, ref, atol=2e-3)
    # with gradients wanted, the torch formula runs (and gives the same values)
    grad = table.decode(logits.clone().requires_grad_(True), "annealed", temperature)
    assert grad.requires_grad and torch.allclose(grad.detach(), ref, atol=1e-4)
