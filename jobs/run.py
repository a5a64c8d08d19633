"""Job entrypoint of the archive stage (``colorize run``), for ``ray job submit``:

    ray job submit --working-dir . -- python -m jobs.run --config jobs/configs/run_local.yaml \
        [key=value ...]

The config is a :class:`pipeline.run_stage.RunConfig` in YAML; ``key=value`` overrides any
field (``storage.endpoint_url=...``). Exit status 1 when any input failed, unless
``allow_errors=true`` is given on the command line.
"""

from __future__ import annotations

import json
import sys

from jobs.entry import parse_args
from pipeline.cluster import connect
from pipeline.config import load_config
from pipeline.run_stage import RunConfig, run


def main(argv: list[str] | None = None) -> int:
    config, overrides, flags = parse_args(argv, flags=("allow_errors",))
    cfg = load_config(RunConfig, config, overrides)
    connect(task_slots=cfg.task_slots)
    summary = run(cfg)
    print(json.dumps(summary, indent=2))
    return 1 if summary["error"] and not flags["allow_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
