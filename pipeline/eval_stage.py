"""Evaluation: the thesis' table, one row per model, beside the grey baseline.

``evaluate(cfg)``: list the originals (folder, glob, ``s3://`` prefix or COCO json), skip the
grey ones, bring each to 256x256 (:mod:`colorization.evaluation`), colorize its grey version
with every model through the one inference path (:func:`colorize_images`), score it, and
write to ``cfg.out``:
- ``per_image.parquet``: one row per (image, model) with PSNR, SSIM, colourfulness, Zhang et
  al.'s AuC (raw and rebalanced, of that image alone) and the judge's verdict (its top-1
  class, whether that agrees with its top-1 on the original, whether it is the image's label),
  plus the rows of the grey baseline and of the originals (colourfulness and the judge only),
  and one row per skipped or unreadable input;
- ``summary.json`` / ``summary.md``: the table (means per model, colourfulness gap to the
  originals', AuC pooled over every pixel of the set, the judge's agreement and top-1
  accuracy, seconds per image), which judge was used and what each figure means;
- ``report.html``: self-contained (images inline): the table, before / after / original
  thumbnails, the metric distributions and the ab histograms of outputs vs originals;
- ``eval_config.yaml``: the configuration of the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from colorization.evaluation import (
    AB_EDGES,
    EVAL_SIZE,
    ab_histogram,
    ab_prior,
    auc_counts,
    grey_version,
    make_truth,
    rebalancing_weights,
    score,
)
from colorization.imageio import DecodeError, decode_image
from colorization.imagenet import DEFAULT_JUDGE, Judge, label_of
from colorization.inference import colorize_images_at, input_size, settings
from colorization.metrics import AUC_MAX_ERROR, auc_of_counts, colorfulness
from colorization.shipped import DEFAULT_MODEL, load, resolve_model
from pipeline.config import save_config
from pipeline.sources import StorageOptions, list_sources, read_bytes

GREY = "grey (ab=0)"
ORIGINALS = "originals"
METRICS = ("psnr", "ssim", "colorfulness")
AUCS = ("auc_raw", "auc_rebalanced")
JUDGED = ("label", "judge_top1", "judge_agrees", "judge_correct")
#: what each figure of the summary means (written into summary.json, .md and the report)
DEFINITIONS = {
    "auc_raw": (
        "AuC of Zhang et al. (ECCV 2016): the share of pixels whose ab (CIE Lab) lies within "
        f"a Euclidean distance t of the original's, for t = 0..{AUC_MAX_ERROR}; the area under "
        "that curve normalised to [0, 1] (1 = every pixel's ab exact); every pixel of the set "
        "pooled, each weighing the same"
    ),
    "auc_rebalanced": (
        "the same curve with each pixel weighted by 1 / the prior of its original's ab bin "
        "(10-unit bins; the prior of this set's own originals, so it does not depend on the "
        "models): rare colours count as much as common ones"
    ),
    "judge_agreement": (
        "% of images whose judge top-1 class on the output is the judge's top-1 on the "
        "original (the originals agree with themselves: 100)"
    ),
    "judge_top1_accuracy": (
        "% of the labelled images (an ImageNet wnid in the file or folder name) whose judge "
        "top-1 class on the output is the label"
    ),
}


@dataclass
class EvalConfig:
    sources: list[str]
    out: str
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    temperature: float | None = None  # None: each model's own setting
    saturation: float | None = None  # None: each model's own setting
    rebalance_correction: float | None = None  # None: each model's own setting
    size: int | None = None  # the models' input side; None: each model's own setting
    batch_size: int = 8
    limit: int | None = None
    thumbnails: int = 16  # images shown in the report
    images_dir: str | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)
    judge: str = DEFAULT_JUDGE  # ImageNet classifier of the semantic test; "none": no judge
    #: a settings sweep: every model at each of these temperatures x saturations x rebalance
    #: corrections (one row each, one forward pass per image for all); empty: the single
    #: setting above
    temperatures: list[float] = field(default_factory=list)
    saturations: list[float] = field(default_factory=list)
    rebalance_corrections: list[float] = field(default_factory=list)


def sweep_settings(cfg: EvalConfig, model) -> list[tuple[float, float, float]]:
    """The (temperature, saturation, rebalance correction) settings a model is evaluated at."""
    t, s, c = settings(model, cfg.temperature, cfg.saturation, cfg.rebalance_correction)
    return [
        (tt, ss, cc)
        for cc in (cfg.rebalance_corrections or [c])
        for tt in (cfg.temperatures or [t])
        for ss in (cfg.saturations or [s])
    ]


def _setting_label(name: str, setting: tuple[float, float, float], sweep: bool) -> str:
    """A sweep row's label: the model's, with the setting when several are evaluated (the
    rebalance correction only where it is not 0)."""
    if not sweep:
        return name
    t, s, c = setting
    return f"{name} T={t:g} s={s:g}" + (f" c={c:g}" if c else "")


def _model_label(spec: str, path: Path, taken: set[str]) -> str:
    """A short, unique row label: ``name=path`` gives ``name``; else the spec's last part."""
    label = spec.split("=", 1)[0] if "=" in spec else Path(spec.rstrip("/")).name or str(path)
    while label in taken:
        label += "'"
    return label


def _load_truths(cfg: EvalConfig, rows: list[dict]) -> tuple[list[str], list, list]:
    """(keys, truths, ImageNet labels or None) of the usable originals; skipped and broken
    inputs become rows."""
    items = list_sources(cfg.sources, cfg.storage, cfg.images_dir)
    keys, truths, labels = [], [], []
    for it in items:
        if cfg.limit is not None and len(truths) >= cfg.limit:
            break
        try:
            im = decode_image(read_bytes(it.uri, cfg.storage))
        except (DecodeError, OSError) as e:
            rows.append({"image": it.key, "model": "", "status": "error", "error": str(e)})
            continue
        truth = make_truth(im)
        if truth is None:
            rows.append({"image": it.key, "model": "", "status": "skipped", "error": "grey"})
            continue
        keys.append(it.key)
        truths.append(truth)
        label = label_of(it.key)
        labels.append(label_of(it.uri) if label is None else label)
    if not truths:
        raise FileNotFoundError(f"no colour originals to evaluate in {cfg.sources}")
    return keys, truths, labels


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation and write its files; returns the summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "eval_config.yaml")
    for spec in cfg.models:  # a wrong model name fails before any image is read
        resolve_model(spec.split("=", 1)[-1])
    judge = None if cfg.judge.lower() == "none" else Judge(cfg.judge)
    rows: list[dict] = []
    keys, truths, labels = _load_truths(cfg, rows)
    originals = [t.rgb for t in truths]
    outputs: dict[str, list[np.ndarray]] = {GREY: [grey_version(t) for t in originals]}
    seconds: dict[str, float] = {GREY: 0.0}
    sources: dict[str, str] = {GREY: "", ORIGINALS: ""}
    taken = {GREY, ORIGINALS}
    used: dict[str, dict[str, float]] = {}
    greys = [Image.fromarray(g) for g in outputs[GREY]]  # the models' input, made once
    for spec in cfg.models:
        model, table, path = load(spec.split("=", 1)[-1])
        name = _model_label(spec, path, taken)
        at = sweep_settings(cfg, model)
        t0 = time.perf_counter()
        side = input_size(model, cfg.size)
        colored = colorize_images_at(model, table, greys, at, side, cfg.batch_size)
        classes = model.output_kind == "classes"  # the temperature is for class models only
        for (t, s, c), images in zip(at, colored, strict=True):
            label = _setting_label(name, (t, s, c), len(at) > 1)
            taken.add(label)
            sources[label] = str(path)
            used[label] = {
                "temperature": t if classes else None,
                "saturation": s,
                "rebalance_correction": c if classes else None,
                "size": side,
            }
            seconds[label] = (time.perf_counter() - t0) / len(at)
            outputs[label] = [np.asarray(im) for im in images]
    t0 = time.perf_counter()
    verdicts = _judge(judge, originals, outputs, labels)
    judged = None if judge is None else {**judge.info(), "seconds": time.perf_counter() - t0}
    aucs = _score(rows, keys, originals, outputs, verdicts)
    pq.write_table(pa.Table.from_pylist(_complete(rows)), out / "per_image.parquet")
    summary = _summary(rows, seconds, sources, used, len(keys), cfg, aucs, judged)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    write_report(out / "report.html", summary, keys, originals, outputs, rows, cfg.thumbnails)
    return summary


def _judge(
    judge: Judge | None, originals: list, outputs: dict[str, list], labels: list[int | None]
) -> dict[str, list[dict]]:
    """Per image set (the originals and every model's outputs), per image: the judge's top-1,
    whether it agrees with its top-1 on the original, whether it is the label."""
    if judge is None:
        blank = [{"label": lab} for lab in labels]
        return {k: blank for k in [ORIGINALS, *outputs]}
    ref = judge.top1(originals)[0]
    verdicts = {}
    for name, images in [(ORIGINALS, originals), *outputs.items()]:
        top = ref if name == ORIGINALS else judge.top1(images)[0]
        verdicts[name] = [
            {
                "label": lab,
                "judge_top1": int(t),
                "judge_agrees": bool(t == r),
                "judge_correct": None if lab is None else bool(t == lab),
            }
            for t, r, lab in zip(top, ref, labels, strict=True)
        ]
    return verdicts


def _score(rows, keys, originals, outputs, verdicts) -> dict[str, dict[str, float]]:
    """Append a row per (image, model) and per original to ``rows``; return each model's AuCs
    pooled over every pixel of the set (the rebalancing prior is that of ``originals``)."""
    prior = ab_prior(originals)
    weights = [rebalancing_weights(o, prior) for o in originals]
    pooled = {}
    for label, images in outputs.items():
        sums = [np.zeros(AUC_MAX_ERROR + 2), np.zeros(AUC_MAX_ERROR + 2)]
        for i, (key, truth, img) in enumerate(zip(keys, originals, images, strict=True)):
            counts = auc_counts(truth, img, weights[i])
            sums = [s + c for s, c in zip(sums, counts, strict=True)]
            row = {"image": key, "model": label, "status": "ok", "error": ""}
            row |= {a: auc_of_counts(c) for a, c in zip(AUCS, counts, strict=True)}
            rows.append(row | score(truth, img) | verdicts[label][i])
        pooled[label] = {a: auc_of_counts(c) for a, c in zip(AUCS, sums, strict=True)}
    for i, (key, truth) in enumerate(zip(keys, originals, strict=True)):
        row = {
            "image": key,
            "model": ORIGINALS,
            "status": "ok",
            "colorfulness": colorfulness(truth),
        }
        rows.append(row | verdicts[ORIGINALS][i])
    return pooled


def _complete(rows: list[dict]) -> list[dict]:
    cols = ("image", "model", "status", "error", *METRICS, *AUCS, *JUDGED)
    return [{c: r.get(c) for c in cols} for r in rows]


def _percent(flags: list) -> float | None:
    flags = [f for f in flags if f is not None]
    return 100.0 * float(np.mean(flags)) if flags else None


def _semantic(mine: list[dict]) -> dict[str, Any]:
    """The judge's figures over one row's images (None where there is no judge or label)."""
    return {
        "judge_agreement": _percent([r.get("judge_agrees") for r in mine]),
        "judge_top1_accuracy": _percent([r.get("judge_correct") for r in mine]),
        "labelled_images": sum(r.get("label") is not None for r in mine),
    }


def _summary(rows, seconds, sources, used, n, cfg: EvalConfig, aucs, judged) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    orig_rows = [r for r in ok if r["model"] == ORIGINALS]
    orig = float(np.mean([r["colorfulness"] for r in orig_rows]))
    table = []
    for label, path in sources.items():
        if label == ORIGINALS:
            continue
        mine = [r for r in ok if r["model"] == label]
        entry = {"model": label, "images": len(mine), "source": path}
        for m in METRICS:
            entry[m] = float(np.mean([r[m] for r in mine]))
        entry["colorfulness_gap"] = entry["colorfulness"] - orig
        entry.update(aucs[label])
        entry.update(_semantic(mine))
        entry["seconds_per_image"] = seconds[label] / max(1, len(mine))
        none = {"temperature": None, "saturation": 0.0, "rebalance_correction": None, "size": None}
        entry.update(used.get(label, none))
        table.append(entry)
    semantic = _semantic(orig_rows)
    return {
        "protocol": (
            f"{EVAL_SIZE}x{EVAL_SIZE} (bicubic resize of each original), grey input = its L; "
            "PSNR over RGB (peak 255), SSIM 7x7 uniform window averaged over channels "
            "(skimage), colourfulness of Hasler-Suesstrunk in its |rg|,|yb| form; grey "
            "originals skipped: as the colorization papers evaluate"
        ),
        "sources": cfg.sources,
        "images": n,
        "skipped_grey": sum(r["status"] == "skipped" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "originals_colorfulness": orig,
        "originals_judge_agreement": semantic["judge_agreement"],
        "originals_judge_top1_accuracy": semantic["judge_top1_accuracy"],
        "labelled_images": semantic["labelled_images"],
        "judge": judged,
        "auc_pooling": "pooled over every pixel of the set (not a mean of per-image AuCs)",
        "definitions": DEFINITIONS,
        "rows": table,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def judge_line(summary: dict[str, Any]) -> str:
    """Which judge scored the semantic figures, and on how many labelled images."""
    judge = summary.get("judge")
    if not judge:
        return "No judge (semantic figures not computed)."
    n = summary.get("labelled_images", 0)
    labelled = f"top-1 vs labels on {n} labelled images" if n else "no labelled images (no top-1)"
    return f"Judge: {judge['input']}; {labelled}."


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table (what ``colorize eval`` prints); summaries written
    before the AuC and the judge existed print blanks in those columns."""
    lines = [
        f"{summary['images']} images, {EVAL_SIZE}x{EVAL_SIZE} ({summary['skipped_grey']} grey "
        f"originals skipped, {summary['errors']} unreadable)",
        "",
        "| model | T | saturation | rebal. corr. | input px | PSNR (dB) | SSIM | colourfulness | "
        "gap to originals | AuC raw | AuC rebal. | agreement % | top-1 % | s/image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        t = "" if r["temperature"] is None else f"{r['temperature']:g}"
        c = _fmt(r.get("rebalance_correction"), "g")
        lines.append(
            f"| {r['model']} | {t} | {r['saturation']:g} | {c} | {_fmt(r.get('size'), 'd')} | "
            f"{r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['colorfulness']:.2f} | {r['colorfulness_gap']:+.2f} | "
            f"{_fmt(r.get('auc_raw'), '.4f')} | {_fmt(r.get('auc_rebalanced'), '.4f')} | "
            f"{_fmt(r.get('judge_agreement'), '.1f')} | "
            f"{_fmt(r.get('judge_top1_accuracy'), '.1f')} | {r['seconds_per_image']:.3f} |"
        )
    lines.append(
        f"| {ORIGINALS} | | | | | | | {summary['originals_colorfulness']:.2f} | 0 | | | "
        f"{_fmt(summary.get('originals_judge_agreement'), '.1f')} | "
        f"{_fmt(summary.get('originals_judge_top1_accuracy'), '.1f')} | |"
    )
    if "definitions" in summary:
        lines += ["", judge_line(summary)]
        lines += [f"- {k}: {v}." for k, v in summary["definitions"].items()]
    return "\n".join(lines)


# --- the HTML report ------------------------------------------------------------------------
def _data_uri(im: Image.Image | np.ndarray, fmt: str = "JPEG") -> str:
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, fmt, quality=85) if fmt == "JPEG" else im.save(buf, fmt)
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def _plots(rows: list[dict], originals, outputs) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    labels = [m for m in outputs]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, m in zip(axes, METRICS, strict=True):
        series = {
            label: [r[m] for r in ok if r["model"] == label and np.isfinite(r.get(m) or np.nan)]
            for label in ([*labels, ORIGINALS] if m == "colorfulness" else labels)
        }
        bins = np.histogram_bin_edges(np.concatenate(list(series.values())), 25)
        for label, vals in series.items():
            ax.hist(vals, bins=bins, histtype="step", linewidth=1.5, label=label)
        ax.set_title(m)
    axes[-1].legend(fontsize=7)
    dist = _figure_uri(fig)

    panels = [(ORIGINALS, originals)] + [(k, v) for k, v in outputs.items() if k != GREY]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    extent = [AB_EDGES[0], AB_EDGES[-1], AB_EDGES[0], AB_EDGES[-1]]
    for ax, (label, images) in zip(axes[0], panels, strict=True):
        hist = sum(ab_histogram(im) for im in images)
        ax.imshow(np.log10(hist.T + 1), origin="lower", extent=extent, cmap="magma")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("a")
    axes[0][0].set_ylabel("b")
    fig.suptitle("ab histogram of output pixels (log10 count)")
    return [dist, _figure_uri(fig)]


def write_report(path, summary, keys, originals, outputs, rows, n_thumbs: int) -> Path:
    """A self-contained HTML report (images and plots inline as data URIs)."""
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in [*outputs, ORIGINALS])
    body = []
    for i in range(min(n_thumbs, len(keys))):
        cells = [outputs[k][i] for k in outputs] + [originals[i]]
        imgs = "".join(
            f'<td><img src="{_data_uri(Image.fromarray(c).resize((160, 160)))}"></td>'
            for c in cells
        )
        body.append(f"<tr><td>{esc(keys[i])}</td>{imgs}</tr>")
    table_rows = "".join(
        f"<tr><td>{esc(r['model'])}</td><td>{r['psnr']:.2f}</td><td>{r['ssim']:.4f}</td>"
        f"<td>{r['colorfulness']:.2f}</td><td>{r['colorfulness_gap']:+.2f}</td>"
        f"<td>{_fmt(r.get('auc_raw'), '.4f')}</td><td>{_fmt(r.get('auc_rebalanced'), '.4f')}</td>"
        f"<td>{_fmt(r.get('judge_agreement'), '.1f')}</td>"
        f"<td>{_fmt(r.get('judge_top1_accuracy'), '.1f')}</td>"
        f"<td>{r['seconds_per_image']:.3f}</td><td>{esc(r['source'])}</td></tr>"
        for r in summary["rows"]
    )
    orig_row = (
        f"<tr><td>{ORIGINALS}</td><td></td><td></td>"
        f"<td>{summary['originals_colorfulness']:.2f}</td><td>0</td><td></td><td></td>"
        f"<td>{_fmt(summary.get('originals_judge_agreement'), '.1f')}</td>"
        f"<td>{_fmt(summary.get('originals_judge_top1_accuracy'), '.1f')}</td>"
        "<td></td><td></td></tr>"
    )
    definitions = "".join(
        f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in summary.get("definitions", {}).items()
    )
    dist, abh = _plots(rows, originals, outputs)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Colorization evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}img{{display:block}}</style>
</head><body><h1>Colorization evaluation</h1>
<p>{esc(summary["protocol"])}.</p>
<p>{summary["images"]} images from {esc(", ".join(summary["sources"]))};
{summary["skipped_grey"]} grey originals skipped,
{summary["errors"]} unreadable.</p>
<table><tr><th>model</th><th>PSNR (dB)</th><th>SSIM</th><th>colourfulness</th>
<th>gap to originals</th><th>AuC raw</th><th>AuC rebalanced</th><th>judge agreement %</th>
<th>judge top-1 %</th><th>s/image</th><th>checkpoint</th></tr>{table_rows}{orig_row}</table>
<p>{esc(judge_line(summary))} AuC {esc(summary.get("auc_pooling", ""))}.</p>
<ul>{definitions}</ul>
<h2>Metric distributions</h2><img src="{dist}">
<h2>Colours produced</h2><img src="{abh}">
<h2>Before / after / original</h2>
<table><tr><th>image</th>{head}</tr>{"".join(body)}</table>
</body></html>"""
    Path(path).write_text(doc)
    return Path(path)


def run_eval(cfg: EvalConfig) -> str:
    """Evaluate, then return the markdown table and where the files are."""
    summary = evaluate(cfg)
    return f"{summary_markdown(summary)}\n\nreport: {Path(cfg.out) / 'report.html'}"
