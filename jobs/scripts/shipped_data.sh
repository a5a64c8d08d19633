#!/usr/bin/env bash
# The shipped model's data: the training and validation splits of splits.sh prepared at
# SIZE px (default 160) with their masks and teacher targets, and the colour table of the
# training split (coco-tiny val2017 is the untouched test set).
# Usage: bash jobs/scripts/shipped_data.sh [OUT] (default data/split); STEP=tables|train|val
# runs one step. Needs the project installed (colorize on PATH, e.g. .venv/bin).
set -euo pipefail
# shellcheck source=jobs/scripts/splits.sh
source "$(dirname "$0")/splits.sh"
OUT=${1:-data/split}
SIZE=${SIZE:-160}
MASKS=(
  --masks "coco-panoptic:$S/coco128-train=$S/coco128-train-masks"
  --masks "camvid:$S/camvid/train=$S/camvid/trainannot"
  --masks "camvid:$S/camvid/val=$S/camvid/valannot"
  --masks "camvid:$S/camvid/test=$S/camvid/testannot"
)
step() { [[ -z "${STEP:-}" || "${STEP:-}" == "$1" ]]; }
if step tables; then colorize tables build "${TRAIN[@]}" --out "$OUT/tables" --no-progress; fi
if step train; then colorize prepare "${TRAIN[@]}" "${MASKS[@]}" --out "$OUT/train" --size "$SIZE"; fi
if step val; then colorize prepare "${VAL[@]}" --out "$OUT/val" --size "$SIZE"; fi
