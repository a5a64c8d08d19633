#!/usr/bin/env bash
# The ablation of the shipped recipe (jobs/configs/train_shipped.yaml), every run at the same
# small budget (STEPS steps x 16 crops of CROP px; defaults 300 and 64 on 2 CPU cores), then
# one evaluation of all of them on the validation split (never the test set), each at the
# same inference settings (T 0.38, saturation 1):
#   full        seg, pretrained Lite0 encoder, category teacher, segmentation
#   scratch     the same with the encoder trained from random weights
#   no-teacher  without the category loss (no category head)
#   no-seg      without the segmentation loss (no segmentation branch)
#   no-rebalance  class weights uniform (tables with lambda 1) instead of Zhang's lambda 0.5
#   cls-afm, pixel-attn, colornet   the other variants, pretrained encoder and teacher
# Usage: bash jobs/scripts/ablation.sh [RUNS_DIR] (default runs/ablation); needs the data of
# jobs/scripts/shipped_data.sh and colorize on PATH.
set -euo pipefail
RUNS=${1:-runs/ablation}
STEPS=${STEPS:-300}
CROP=${CROP:-64}
# shellcheck source=jobs/scripts/splits.sh
source "$(dirname "$0")/splits.sh"
common=(steps="$STEPS" crop="$CROP" warmup_steps=30 checkpoint_every="$STEPS" log_every=25
        val_images=32 storage_path="$RUNS")
train() { colorize train --config jobs/configs/train_shipped.yaml "${common[@]}" "$@"; }
train name=full
train name=scratch model.encoder=scratch
train name=no-teacher loss.category=0
train name=no-seg loss.segmentation=0
TABLES_FLAT=${TABLES_FLAT:-data/split/tables-lambda1}
[[ -f "$TABLES_FLAT/classes.parquet" ]] || \
  colorize tables build "${TRAIN[@]}" --lambda 1 --out "$TABLES_FLAT" --no-progress
train name=no-rebalance tables="$TABLES_FLAT"
train name=cls-afm model.name=cls-afm 'model.kwargs={}'
train name=pixel-attn model.name=pixel-attn
train name=colornet model.name=colornet 'model.kwargs={}'
models=""
for r in full scratch no-teacher no-seg no-rebalance cls-afm pixel-attn colornet; do models+="$r=$RUNS/$r,"; done
colorize eval "${VAL[@]}" --models "${models%,}" --temperature 0.38 --saturation 1 \
  --out "$RUNS/eval-val"
