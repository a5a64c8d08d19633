"""Job entrypoint of the training stage (``colorize train``), for ``ray job submit``:

    ray job submit --working-dir . -- \
        python -m jobs.train --config jobs/configs/train_seg_1x8gpu.yaml [key=value ...]

The config is a :class:`pipeline.train_stage.TrainConfig` in YAML; ``key=value`` overrides any
field (``num_workers=16``, ``model.base_width=32``). ``storage_path`` may be ``s3://`` (the
checkpoints); ``data``, ``val_data`` and ``tables`` are local paths every Ray Train worker must
see (on a multi-node cluster: a shared volume). Submitting the same config again (same
``storage_path`` and ``name``) resumes the run. Exit status 0 when training finished.
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
