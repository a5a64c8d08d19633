"""Job entrypoint of the tables stage (``colorize tables build``), for ``ray job submit``:

    ray job submit --working-dir . -- \
        python -m jobs.tables --config jobs/configs/tables_coco_s3.yaml [key=value ...]

The config is a :class:`pipeline.tables_stage.TablesConfig` in YAML; ``key=value`` overrides any
field (``params.sigma=5``, ``storage.endpoint_url=...``). ``sources`` may be local folders,
globs, ``s3://`` prefixes or local COCO json files; ``out`` is a local folder (on a cluster: a
volume every node and the driver share). Unreadable inputs are listed, not fatal (exit 0, as
``colorize tables build``); no usable image at all is an error.
"""

from __future__ import annotations

import json
import sys

from jobs.entry import parse_args
from pipeline.cluster import connect
from pipeline.config import load_config

SHOWN_FAILURES = 20


def main(argv: list[str] | None = None) -> int:
    config, overrides, _ = parse_args(argv)
    from pipeline.tables_stage import TablesConfig, build_tables

    cfg = load_config(TablesConfig, config, overrides)
    connect()
    report = build_tables(cfg)
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}, indent=2))
    for f in report["failures"][:SHOWN_FAILURES]:
        print(f"failed: {f['uri']}: {f['error']}", file=sys.stderr)
    if report["n_failed"] > SHOWN_FAILURES:
        more = report["n_failed"] - SHOWN_FAILURES
        print(f"... {more} more in {cfg.out}/report.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
