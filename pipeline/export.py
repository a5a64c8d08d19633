"""Exporting a trained checkpoint as a model to ship, with its model card.

``export_model(src, dest)`` writes the inference version of a checkpoint
(:func:`colorization.checkpoint.save_inference_checkpoint`: weights, colour table, meta; not the
optimizer state, not the training-only category head) and ``MODEL_CARD.md`` beside it: the
architecture, the data it was trained on, steps and wall time (from the run's
``progress.jsonl``), the command that trained it, and the evaluation table when an evaluation
directory is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from colorization.checkpoint import read_header, read_meta, save_inference_checkpoint
from colorization.shipped import (
    DEFAULT_REBALANCE_CORRECTION,
    DEFAULT_SATURATION,
    DEFAULT_SIZE,
    DEFAULT_TEMPERATURE,
    resolve_model,
)

MAX_SHIPPED_BYTES = 25 * 1024 * 1024


def _wall_seconds(run_dir: Path, step: int) -> float | None:
    """Training wall time up to ``step``, summed over the run's (re)starts."""
    progress = run_dir / "progress.jsonl"
    if not progress.exists():
        return None
    total, start, last = 0.0, None, None
    for line in progress.read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "start":
            if start is not None and last is not None:
                total += last - start
            start, last = e["time"], e["time"]
        elif "time" in e and e.get("step", 0) <= step:
            last = e["time"]
    if start is not None and last is not None:
        total += last - start
    return total


def _shown(path: str | None) -> str | None:
    """A path as the reader should see it: relative to the working directory when inside it."""
    if path and os.path.isabs(path) and path.startswith(os.getcwd() + os.sep):
        return os.path.relpath(path)
    return path


def _data_lines(config: dict[str, Any]) -> list[str]:
    info_path = Path(config.get("data", "")) / "dataset.json"
    if not info_path.exists():
        return [f"- prepared data: `{config.get('data')}`"]
    info = json.loads(info_path.read_text())
    sources = info.get("config", {}).get("sources", [])
    return [
        f"- {info['n_ok']} training photos ({info['n_skipped']} grey ones skipped), stored at "
        f"{info['size']}x{info['size']}, from:",
        *[f"  - `{s}`" for s in sources],
        f"- validation during training: `{_shown(config.get('val_data'))}` (held out)",
    ]


def model_card(
    model_dir: Path,
    run_dir: Path,
    eval_dir: Path | None = None,
    command: str | None = None,
    inference: dict[str, float] | None = None,
    notes: str | None = None,
) -> str:
    """The card of the model in ``model_dir``, trained in ``run_dir`` (its progress log)."""
    header, meta = read_header(model_dir), read_meta(model_dir)
    name = model_dir.name
    inf = inference or {}
    side = inf.get("size", DEFAULT_SIZE)
    config = meta.get("config", {})
    step = meta.get("step")
    wall = _wall_seconds(run_dir, step) if step is not None else None
    workers, batch = config.get("num_workers", 1), config.get("batch_size")
    lines = [
        f"# Model card: `{name}`",
        "",
        "## Model",
        f"- variant `{header['model']}`, constructor arguments `{header['model_config']}`",
        f"- colour-class table fingerprint `{header.get('tables_fingerprint', '')[:16]}`",
        f"- input: L of the grey image at {side}x{side} (any size and mode is brought there by "
        "`colorize_images`; `--size` overrides it); output: ab classes decoded by the annealed "
        "mean, upsampled and joined with the input's own L at its own size",
        f"- inference settings: temperature {inf.get('temperature', DEFAULT_TEMPERATURE)}, "
        f"saturation {inf.get('saturation', DEFAULT_SATURATION)} (a factor on the predicted "
        "ab; `--temperature` and `--saturation` override them), rebalance correction "
        f"{inf.get('rebalance_correction', DEFAULT_REBALANCE_CORRECTION)} (the share of the "
        "training's class rebalancing taken back before the annealed mean)",
        "",
        "## Training",
        *_data_lines(config),
        f"- {step} steps x {batch} images x {workers} workers = "
        f"{(step or 0) * (batch or 0) * workers} crops of {config.get('crop')}x{config.get('crop')}",
        f"- lr {config.get('lr')} (AdamW, warm-up {config.get('warmup_steps')} steps, cosine), "
        f"losses: {config.get('loss')}",
        f"- wall time: {wall / 60:.1f} min" if wall is not None else "- wall time: unknown",
        f"- trained with: `{command}`" if command else "",
    ]
    if eval_dir is not None:
        from pipeline.eval_stage import summary_markdown

        summary = json.loads((Path(eval_dir) / "summary.json").read_text())
        lines += [
            "",
            "## Evaluation",
            f"Sources: {', '.join(summary['sources'])}. {summary['protocol']}.",
            "",
            summary_markdown(summary),
        ]
    if notes:
        lines += ["", "## Notes", notes.strip()]
    return "\n".join(line for line in lines if line is not None) + "\n"


def export_model(
    src: str | Path,
    dest: str | Path,
    eval_dir: str | Path | None = None,
    command: str | None = None,
    inference: dict[str, float] | None = None,
    notes: str | None = None,
) -> Path:
    """Write a checkpoint's inference version to ``dest`` with a generated ``MODEL_CARD.md``."""
    side = (inference or {}).get("size")
    if side is not None and (side <= 0 or side % 16):
        raise ValueError(f"the input side must be a positive multiple of 16, got {side}")
    src = resolve_model(src)
    dest = save_inference_checkpoint(src, dest)
    meta = read_meta(dest)
    # no local paths of the training machine
    run_dir = Path(meta.get("config", {}).pop("_run_dir", src.parent))
    if inference:
        meta["inference"] = dict(inference)  # the model's own settings
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    card = model_card(
        dest, run_dir, Path(eval_dir) if eval_dir else None, command, inference, notes
    )
    (dest / "MODEL_CARD.md").write_text(card)
    size = sum(p.stat().st_size for p in dest.iterdir())
    if size > MAX_SHIPPED_BYTES:
        raise ValueError(f"{dest}: {size / 2**20:.1f} MB is over the 25 MB a shipped model may use")
    return dest
