"""Reading a training run's ``progress.jsonl`` in tests: its records, whether a checkpoint is
committed, and whether the worker group restarted from one and went on to the end."""

from __future__ import annotations

import json
from pathlib import Path


def read_progress(run_dir: Path) -> list[dict]:
    """The run's records (``[]`` before the first is written)."""
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpointed(records: list[dict], at_least: int) -> bool:
    """A checkpoint at ``at_least`` or later is committed: every rank reported past it."""
    ckpts = [r["step"] for r in records if "val_psnr" in r and r["step"] >= at_least]
    return bool(ckpts) and any("loss_color" in r and r["step"] > ckpts[0] for r in records)


def assert_resumed(records: list[dict], at_least: int, steps: int, context: str = "") -> None:
    """The worker group was restarted from a checkpoint at ``at_least`` or later, and the step
    count continued from there to ``steps``."""
    starts = [r for r in records if r.get("event") == "start"]
    assert len(starts) >= 2, "the worker group was not restarted: " + context
    restored = starts[-1]["restored_from"]
    assert restored is not None and restored >= at_least
    after = [r["step"] for r in records[records.index(starts[-1]) :] if "loss_color" in r]
    assert after[0] > restored and after[-1] == steps  # the step count continues
