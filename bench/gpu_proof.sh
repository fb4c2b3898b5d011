#!/usr/bin/env bash
# The GPU proof, as one prepared run on a lent GPU machine (H100/H200): engine throughput against the ceiling, then a
# real b0-search study of about 5 minutes on the carried HAM sample, with the GPU's busy share sampled by nvidia-smi.
# Prepare here first: sh ../shared/tools/device-prep   (fills the git-ignored .device/: wheels + HAM images)
# Outputs go to $OUT (the device tool brings them back) or /tmp/gpu-proof.
set -u
OUT=${OUT:-/tmp/gpu-proof}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 bench/gpu_throughput.py --data-dir .device/data/ham10000-224 --cache-dir /tmp/cache 2>&1 \
  | grep -v "caching images\|^INFO" | tee "$OUT/throughput.txt"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$OUT/util.csv" &
smi=$!
timeout "${STUDY_LIMIT:-420}" python3 -m melanoma_search.run --study b0-search --data-dir .device/data/ham10000-224 \
  --timeout "${STUDY_SECONDS:-300}" --set model.pretrained=false --storage-dir /tmp/storage > "$OUT/study.txt" 2>&1
echo "study exit code $?" | tee -a "$OUT/study.txt"
kill "$smi"
grep -v "caching images\|^INFO\| epoch " "$OUT/study.txt" | tail -40
python3 - "$OUT/util.csv" <<'PY'
import sys
values = [float(v) for v in open(sys.argv[1]).read().split() if v.strip().replace(".", "").isdigit()]
busy = sum(values) / max(len(values), 1)
print(f"GPU utilization over the study: mean {busy:.1f}% of {len(values)} samples (every 0.5 s)")
PY
