"""Job entrypoint of the data-preparation stage (``colorize prepare``), for ``ray job submit``:

    ray job submit --working-dir . -- \
        python -m jobs.prepare --config jobs/configs/prepare_coco_s3.yaml [key=value ...]

The config is a :class:`pipeline.prepare_stage.PrepareConfig` in YAML; ``key=value`` overrides
any field (``size=288``, ``out=...``). ``sources`` may be local folders, globs, ``s3://``
prefixes or local COCO json files; ``out`` is a folder or an ``s3://`` prefix, where Ray Data's
writers on every node put the shards (no shared volume needed). Inputs that fail get an
``error`` row and are counted, not fatal (exit 0, as ``colorize prepare``).
"""

from __future__ import annotations

import json
import sys

from jobs.entry import parse_args
from pipeline.cluster import connect
from pipeline.config import load_config

SUMMARY_KEYS = (
    "size", "n_listed", "n_ok", "n_skipped", "n_error", "n_seg", "n_mask_warnings", "teacher",
    "seg_sources", "seconds",
)  # fmt: skip
SHOWN_FAILURES = 20


def main(argv: list[str] | None = None) -> int:
    config, overrides, _ = parse_args(argv)
    from pipeline.prepare_stage import PrepareConfig, prepare

    cfg = load_config(PrepareConfig, config, overrides)
    connect()
    summary = prepare(cfg)
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS if k in summary}, indent=2))
    for f in summary.get("failures", [])[:SHOWN_FAILURES]:
        print(f"failed: {f['key']}: {f['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
