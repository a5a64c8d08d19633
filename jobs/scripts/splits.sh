#!/usr/bin/env bash
# The shipped model's training and validation splits of ../shared/data, sourced by
# shipped_data.sh and ablation.sh (coco-tiny val2017, the test set, is in neither):
#   validation: bsds500/val (100), the 28 coco128-train photos without masks, and the
#               imagenette photos whose file name ends in 17 or 77 (194, about 19 a class)
#   training:   everything else: coco-tiny train2017 (instance masks), coco128-train's 100
#               photos with panoptic masks, bsds500 train + test, imagenet-samples, the rest
#               of imagenette, camvid train + val + test (segmentation labels)
S=${SHARED_DATA:-../shared/data}
TRAIN=(
  "$S/coco-tiny/annotations/instances_train2017.json"
  "$S/coco128-train/0000000000??.jpg" "$S/coco128-train/000000000[1-4]??.jpg"
  "$S/coco128-train/0000000005[0-3]?.jpg"
  "$S/bsds500/train" "$S/bsds500/test" "$S/imagenet-samples"
  "$S/imagenette/*/*[1-689].JPEG" "$S/imagenette/*/*[02-689]7.JPEG"
  "$S/camvid/train" "$S/camvid/val" "$S/camvid/test"
)
VAL=(
  "$S/bsds500/val"
  "$S/coco128-train/00000000054?.jpg" "$S/coco128-train/0000000005[5-9]?.jpg"
  "$S/coco128-train/0000000006??.jpg"
  "$S/imagenette/*/*[17]7.JPEG"
)
