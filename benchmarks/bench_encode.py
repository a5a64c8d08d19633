"""ab -> colour-class encoding: the project's table gathers vs Zhang et al.'s nearest-neighbour
search (scikit-learn, ``../shared/bench/nnencode_anchor.py``), on one core.

One run does three things on the same pixels (ab drawn around Zhang's 313 centres plus N(0, 4)
noise, generated exactly as the anchor does for the same ``--pixels`` and ``--seed``):

1. runs the anchor as a subprocess with this interpreter and parses its JSON line
   (soft 10-NN and hard 1-NN Mpixel/s), ``--anchor-runs`` times, median;
2. times :meth:`ColorTable.encode_hard`, :meth:`ColorTable.encode_soft` (k=10, sigma 5) and
   :meth:`ColorTable.encode_rgb` (on real 8-bit pixels of coco-tiny photos), tables warmed first
   (their one-time build is reported separately as setup time);
3. checks agreement with scikit-learn's exact encoding on every pixel.

Prints JSON lines, then a human summary with the ratios::

    .venv/bin/python benchmarks/bench_encode.py [--pixels 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _host import host_load  # noqa: E402  (benchmarks/ is on sys.path when run)
from PIL import Image

from colorization.abgrid import cache_dir
from colorization.tables import ColorTable, TableParams, load_zhang_313

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ANCHOR = SHARED / "bench" / "nnencode_anchor.py"
CENTRES = SHARED / "reference" / "zhang2016_pts_in_hull.npy"
IMAGES = SHARED / "data" / "coco-tiny" / "train2017"
SOFT_SIGMA = 5.0  # the anchor's (and Zhang et al.'s) Gaussian width, ab units
GUIDE = {"numpy_gather_mpix_s": 170.0, "sklearn_soft_mpix_s": 0.5}  # the guide figures
SOFT_RATIO_REQUIRED = 100.0
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def emit(step: str, **fields) -> dict:
    row = {"bench": "encode", "step": step, **fields}
    print(json.dumps(row), flush=True)
    return row


def anchor_pixels(centres_path: Path, pixels: int, seed: int) -> np.ndarray:
    """``(pixels, 2)`` float64 ab, the same array the anchor draws for this seed."""
    centres = np.load(centres_path).astype(np.float64)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, len(centres), pixels)] + rng.normal(0, 4, (pixels, 2))


def run_anchor(pixels: int, seed: int, runs: int) -> dict:
    """The anchor's figures (median of ``runs`` subprocess runs), with the raw runs."""
    cmd = [sys.executable, str(ANCHOR), "--pixels", str(pixels), "--seed", str(seed)]
    cmd += ["--centres", str(CENTRES)]
    env = {**os.environ, **ONE_THREAD}
    rows = []
    for _ in range(runs):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    keys = ("soft_10nn_mpix_s", "hard_1nn_mpix_s")
    return {k: statistics.median(r[k] for r in rows) for k in keys} | {
        "runs": [{k: r[k] for k in keys} for r in rows]
    }


def real_rgb_pixels(folder: Path, pixels: int) -> tuple[np.ndarray, int]:
    """``(pixels, 3)`` uint8 sRGB from the photos of ``folder`` (sorted), and how many were read."""
    chunks, have, n_images = [], 0, 0
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB")).reshape(-1, 3)
        chunks.append(arr)
        have += len(arr)
        n_images += 1
        if have >= pixels:
            break
    rgb = np.ascontiguousarray(np.concatenate(chunks)[:pixels])
    if len(rgb) < pixels:
        raise SystemExit(f"only {len(rgb)} pixels in {folder}, asked for {pixels}")
    return rgb, n_images


def mpix_per_s(fn, arg, n: int, repeat: int) -> tuple[float, list[float]]:
    """Median Mpixel/s of ``fn(arg)`` over ``repeat`` runs (after one untimed call)."""
    fn(arg)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(arg)
        rates.append(n / 1e6 / (time.perf_counter() - t))
    return statistics.median(rates), [round(r, 2) for r in rates]


def setup_table(cold: bool) -> tuple[ColorTable, dict]:
    """Build the 313-class table and its lookup tables, timing each one-time step."""
    if cold:  # a fresh cache: the 2**24 LUT is computed, not read from disk
        fresh = tempfile.mkdtemp(prefix="bench-encode-cache-")
        atexit.register(shutil.rmtree, fresh, ignore_errors=True)
        os.environ["COLORIZATION_CACHE"] = fresh
    params = TableParams()  # load_zhang_313's defaults: the fine grid of the LUT
    lut_on_disk = any(
        cache_dir().glob(f"rgb_cell_lut_*_e{params.soft_step:g}_m{params.ab_max:g}.npy")
    )
    t0 = time.perf_counter()
    table = load_zhang_313(CENTRES)
    t1 = time.perf_counter()
    table.soft_table  # noqa: B018 - builds the fine soft/hard tables
    table.fine_to_class  # noqa: B018
    t2 = time.perf_counter()
    table.rgb_to_class_lut()
    t3 = time.perf_counter()
    return table, {
        "build_table_s": round(t1 - t0, 4),
        "soft_hard_tables_s": round(t2 - t1, 3),
        "rgb_lut_s": round(t3 - t2, 3),
        "rgb_cell_lut_from": "disk cache" if lut_on_disk else "computed",
        "cache_dir": str(cache_dir()),
    }


def exact_knn(ab: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's neighbours of every pixel (distances, indices), as the anchor computes."""
    from sklearn.neighbors import NearestNeighbors

    centres = np.load(CENTRES).astype(np.float64)
    nn = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(centres)
    return nn.kneighbors(ab)


def agreement(table: ColorTable, ab: np.ndarray, chunk: int = 200_000) -> dict:
    """Table encoding vs scikit-learn's exact encoding on every pixel."""
    k = table.params.soft_k
    t = time.perf_counter()
    dist, nn_idx = exact_knn(ab, k)
    sk_soft_s = time.perf_counter() - t
    w_exact = np.exp(-(dist**2) / (2 * SOFT_SIGMA**2))
    w_exact /= w_exact.sum(1, keepdims=True)

    hard = table.encode_hard(ab)
    differ = hard != nn_idx[:, 0]
    margin = dist[:, 1] - dist[:, 0]  # how far from a tie the exact 1-NN is, ab units
    outside = np.abs(ab).max(1) > table.params.ab_max

    same_set = np.zeros(len(ab), bool)
    max_diff, sum_diff, n_common, max_l1, sum_l1 = 0.0, 0.0, 0, 0.0, 0.0
    for s in range(0, len(ab), chunk):
        sl = slice(s, s + chunk)
        idx_t, w_t = table.encode_soft(ab[sl])
        eq = idx_t[:, :, None] == nn_idx[sl][:, None, :]  # (n, k_table, k_exact)
        same_set[sl] = eq.any(2).all(1)
        diff = np.abs(w_t[:, :, None].astype(np.float64) - w_exact[sl][:, None, :])[eq]
        max_diff = max(max_diff, float(diff.max(initial=0.0)))
        sum_diff += float(diff.sum())
        n_common += diff.size
        # L1 distance of the two soft targets as Q-vectors (mass on uncommon classes counts)
        common_t = (w_t * eq.any(2)).sum(1)
        common_e = (w_exact[sl] * eq.any(1)).sum(1)
        l1 = (1 - common_t) + (1 - common_e)
        l1 += (np.abs(w_t[:, :, None] - w_exact[sl][:, None, :]) * eq).sum((1, 2))
        max_l1, sum_l1 = max(max_l1, float(l1.max())), sum_l1 + float(l1.sum())
    return {
        "hard_agree_fraction": round(float(1 - differ.mean()), 6),
        "hard_disagree_pixels": int(differ.sum()),
        "hard_disagree_max_tie_margin_ab": round(float(margin[differ].max(initial=0.0)), 4),
        "hard_disagree_outside_ab_max": int((differ & outside).sum()),
        "soft_same_neighbour_set_fraction": round(float(same_set.mean()), 6),
        "soft_weight_max_abs_diff_common": round(max_diff, 5),
        "soft_weight_mean_abs_diff_common": round(sum_diff / max(n_common, 1), 6),
        "soft_target_l1_max": round(max_l1, 5),
        "soft_target_l1_mean": round(sum_l1 / len(ab), 6),
        "sklearn_inprocess_soft_mpix_s": round(len(ab) / 1e6 / sk_soft_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pixels", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0, help="as the anchor's --seed")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per table encoder")
    ap.add_argument("--anchor-runs", type=int, default=3, help="anchor subprocess runs")
    ap.add_argument("--images", type=Path, default=IMAGES, help="photos for encode_rgb")
    ap.add_argument("--cold", action="store_true", help="build the 2**24 LUT in a fresh cache")
    args = ap.parse_args()
    torch.set_num_threads(1)  # numpy's gathers are single-threaded already

    host = [emit("host_before", **host_load())]
    anchor = emit(
        "anchor",
        pixels=args.pixels,
        seed=args.seed,
        **run_anchor(args.pixels, args.seed, args.anchor_runs),
    )
    table, setup = setup_table(args.cold)
    emit("setup", classes=table.num_classes, **setup)

    ab = anchor_pixels(CENTRES, args.pixels, args.seed)
    rgb, n_images = real_rgb_pixels(args.images, args.pixels)
    hard, hard_runs = mpix_per_s(table.encode_hard, ab, args.pixels, args.repeat)
    soft, soft_runs = mpix_per_s(table.encode_soft, ab, args.pixels, args.repeat)
    bufs = (np.empty((len(ab), 10), np.uint16), np.empty((len(ab), 10), np.float32))
    soft_buf, soft_buf_runs = mpix_per_s(
        lambda x: table.encode_soft(x, out=bufs), ab, args.pixels, args.repeat
    )  # a data loader's reusable batch buffers: no page faults on fresh output arrays
    rgbv, rgb_runs = mpix_per_s(table.encode_rgb, rgb, args.pixels, args.repeat)
    emit(
        "table",
        pixels=args.pixels,
        hard_mpix_s=round(hard, 2),
        soft_mpix_s=round(soft, 2),
        soft_reused_buffers_mpix_s=round(soft_buf, 2),
        rgb_mpix_s=round(rgbv, 2),
        rgb_images=n_images,
        runs={"hard": hard_runs, "soft": soft_runs, "soft_buf": soft_buf_runs, "rgb": rgb_runs},
    )
    agree = emit("agreement", **agreement(table, ab))
    hard_ratio = hard / anchor["hard_1nn_mpix_s"]
    soft_ratio = soft / anchor["soft_10nn_mpix_s"]
    emit(
        "ratios",
        hard_table_over_hard_1nn=round(hard_ratio, 1),
        soft_table_over_soft_10nn=round(soft_ratio, 1),
        soft_buffers_over_soft_10nn=round(soft_buf / anchor["soft_10nn_mpix_s"], 1),
        hard_table_over_soft_10nn=round(hard / anchor["soft_10nn_mpix_s"], 1),
        rgb_table_over_hard_1nn=round(rgbv / anchor["hard_1nn_mpix_s"], 1),
        soft_required=SOFT_RATIO_REQUIRED,
        soft_meets_requirement=bool(soft_ratio >= SOFT_RATIO_REQUIRED),
        hard_agree_ok=bool(agree["hard_agree_fraction"] > 0.995),
    )

    host.append(emit("host_after", **host_load()))
    verdict = "meets" if soft_ratio >= SOFT_RATIO_REQUIRED else "FAILS"
    print(
        f"\nencode, {args.pixels:,} pixels, one core (median of {args.repeat} runs; anchor "
        f"median of {args.anchor_runs})\n"
        f"  hard  table {hard:8.1f} Mpix/s   sklearn 1-NN  {anchor['hard_1nn_mpix_s']:6.3f}"
        f"   ratio {hard_ratio:7.1f}x\n"
        f"  soft  table {soft:8.1f} Mpix/s   sklearn 10-NN {anchor['soft_10nn_mpix_s']:6.3f}"
        f"   ratio {soft_ratio:7.1f}x  ({verdict} the >= {SOFT_RATIO_REQUIRED:.0f}x requirement)\n"
        f"  soft  into reused buffers {soft_buf:8.1f} Mpix/s"
        f"   ratio {soft_buf / anchor['soft_10nn_mpix_s']:7.1f}x\n"
        f"  rgb   table {rgbv:8.1f} Mpix/s   (real pixels of {n_images} coco-tiny photos)\n"
        f"  issue guide: numpy gather ~{GUIDE['numpy_gather_mpix_s']:.0f} Mpix/s, sklearn soft "
        f"~{GUIDE['sklearn_soft_mpix_s']} Mpix/s\n"
        f"  setup: soft+hard tables {setup['soft_hard_tables_s']} s, rgb LUT "
        f"{setup['rgb_lut_s']} s ({setup['rgb_cell_lut_from']})\n"
        f"  agreement: hard {agree['hard_agree_fraction']:.4%} "
        f"(disagreements within {agree['hard_disagree_max_tie_margin_ab']} ab of a tie); "
        f"soft same neighbours {agree['soft_same_neighbour_set_fraction']:.4%}, weight max abs "
        f"diff {agree['soft_weight_max_abs_diff_common']}, target L1 mean "
        f"{agree['soft_target_l1_mean']} max {agree['soft_target_l1_max']}\n"
        f"  host: other processes busy on {host[0]['others_cpus_busy']} / "
        f"{host[1]['others_cpus_busy']} CPUs before / after (loadavg "
        f"{host[0]['loadavg_1min']} / {host[1]['loadavg_1min']}); rerun if not near 0"
    )


if __name__ == "__main__":
    main()
