"""Job entrypoint of the training stage (``colorize train``), for ``ray job submit``:

    ray job submit --working-dir . -- \
        python -m jobs.train --config jobs/configs/train_seg_1x8gpu.yaml [key=value ...]

The config is a :class:`pipeline.train_stage.TrainConfig` in YAML; ``key=value`` overrides any
field (``num_workers=16``, ``model.base_width=32``). ``data``, ``val_data``, ``tables`` and
``storage_path`` (the checkpoints) are each a folder or an ``s3://`` prefix: the workers read
their shares of the data with Ray Data and the driver sends them the table, so no node needs a
shared volume. Submitting the same config again (same ``storage_path`` and ``name``) resumes
the run. Exit status 0 when training finished.
"""

from __future__ import annotations

import json
import sys

from jobs.entry import parse_args
from pipeline.cluster import connect
from pipeline.config import load_config


def main(argv: list[str] | None = None) -> int:
    config, overrides, _ = parse_args(argv)
    from pipeline.train_stage import TrainConfig, train

    cfg = load_config(TrainConfig, config, overrides)
    connect()
    result = train(cfg)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
