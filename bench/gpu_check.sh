#!/usr/bin/env bash
# The GPU check, prepared to run once, unattended, on one H100 in at most
# 8 minutes: bench/bench_gpu.py's three parts, each under its own time limit.
#   1. training steps of Stage I and BASE_UB in fp32, bf16-mixed, bf16-mixed + channels_last
#   2. a 30-step bf16-mixed fit on a synthetic full-size cache with 4, 8 and 12 loader workers
#   3. one validation pass in 32-true and bf16-mixed: distinct scores, the writer's time
# Results: bench/results/gpu.json, gpu_loader.json, gpu_validation.json and gpu_check.log,
# copied to $OUT as well when it is set (the device tool brings $OUT back).
#
#   bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --dry-run  # anywhere: every part on the CPU at a tiny size
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=offline
dry=()
scale=1  # the time limits are the GPU's; a dry run on a (shared) CPU gets ten times as long
[[ ${1:-} == --dry-run ]] && dry=(--dry-run) && scale=10
log=bench/results/gpu_check.log
mkdir -p bench/results

if [[ ${#dry[@]} -eq 0 ]]; then
  if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $python (torch.cuda.is_available() is False);" \
         "nothing run. Run this on a GPU machine, or with --dry-run to check the script." >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$log"
fi

started=$SECONDS
status=0
part() {  # part NAME SECONDS ARGS...: one part of bench_gpu.py, stopped after SECONDS
  local name=$1 limit=$(($2 * scale))
  shift 2
  echo "== $name (limit ${limit} s, at $((SECONDS - started)) s)" | tee -a "$log"
  if ! timeout --kill-after=10 "$limit" "$python" bench/bench_gpu.py --parts "$name" "$@" \
      "${dry[@]}" 2>&1 | grep --line-buffered -v -e "Warning" -e "warnings.warn" | tee -a "$log"; then
    echo "== $name failed or ran out of time" | tee -a "$log"
    status=1
  fi
}
part steps 210 --stages stage1 upper_bound
part loader 180 --workers 4 8 12 --fit-steps 30
part validation 75 --workers 8
echo "== done in $((SECONDS - started)) s" | tee -a "$log"

if [[ -n ${OUT:-} ]]; then
  cp bench/results/gpu*.json "$log" "$OUT"/ 2>/dev/null || true
fi
exit $status
