#!/usr/bin/env bash
# The GPU proof, as one prepared run on a lent GPU machine (H100/H200):
#   1. engine throughput against the training step's ceiling (bench/gpu_throughput.py; CASES, default b0);
#   2. the b0-search study on the carried HAM sample for STUDY_SECONDS with one trial on the card (--workers 1);
#   3. the same study, fresh, for the same time with --workers auto (several trials packed on the card);
#   4. trials per hour, GPU busy share (nvidia-smi, every 0.5 s) and fixed seconds per trial side by side
#      (bench/study_throughput.py).
# The image caches of the searched sizes are built first, so neither study pays for them.
# Prepare here first: sh ../shared/tools/device-prep   (fills the git-ignored .device/: wheels + HAM images)
# Outputs go to $OUT (the device tool brings them back) or /tmp/gpu-proof.
set -u
OUT=${OUT:-/tmp/gpu-proof}
SECONDS_EACH=${STUDY_SECONDS:-120}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
DATA=.device/data/ham10000-224
STORE=/tmp/proof-storage
URL="journal:$STORE/proof.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
[ "${CASES:-b0}" = none ] || python3 bench/gpu_throughput.py --data-dir $DATA --cache-dir storage/cache \
  --cases ${CASES:-b0} 2>&1 | grep -v "caching images\|^INFO" | tee "$OUT/throughput.txt"
python3 -c "
from melanoma_search.data.prepare import prepare_data
data = prepare_data(root='$DATA', n_folds=5)
for size in (192, 224, 256):
    data.cached_images(size=size, cache_dir='storage/cache', workers=16)
" 2>&1 | grep -v "caching images"

study() {  # name, extra flags...
  local name=$1; shift
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$OUT/util-$name.csv" &
  local smi=$!
  timeout $((SECONDS_EACH + 150)) python3 -m melanoma_search.run --study b0-search --data-dir $DATA \
    --study-name "$name" --storage "$URL" --storage-dir "$STORE" --timeout "$SECONDS_EACH" \
    --set model.pretrained=false "$@" > "$OUT/study-$name.txt" 2>&1
  echo "$name: exit code $?" | tee -a "$OUT/study-$name.txt"
  kill "$smi"
  grep -i "packing:\|started (pid\|out of memory\|error\|Traceback" "$OUT/study-$name.txt" | head -20
}
study one-per-card
study packed --workers auto
python3 bench/study_throughput.py --storage "$URL" --study "one-per-card:$OUT/util-one-per-card.csv" \
  "packed:$OUT/util-packed.csv" 2>&1 | tee "$OUT/summary.txt"
