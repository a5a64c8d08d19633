"""Job entrypoint of the evaluation (``colorize eval``), for ``ray job submit``:

    ray job submit --working-dir . -- \
        python -m jobs.eval --config jobs/configs/eval_coco_val.yaml [key=value ...]

The config is a :class:`pipeline.eval_stage.EvalConfig` in YAML; ``key=value`` overrides any
field (``limit=500``, ``models=[seg-lite0,mine=/data/models/mine]``). The evaluation runs in
the job's driver process (no Ray tasks): ``sources`` may be ``s3://`` prefixes, ``models`` and
``out`` are local paths of the node the driver runs on. Prints the summary as JSON (the report
is ``out/report.html``); exit status 0 when it was written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.entry import parse_args
from pipeline.config import load_config


def main(argv: list[str] | None = None) -> int:
    config, overrides, _ = parse_args(argv)
    from pipeline.eval_stage import EvalConfig, evaluate

    cfg = load_config(EvalConfig, config, overrides)
    summary = evaluate(cfg)
    report = str(Path(cfg.out) / "report.html")
    print(json.dumps(dict(summary, report=report), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
