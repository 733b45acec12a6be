#!/usr/bin/env bash
# One-command device check (make device-check): on a CUDA machine, in under 8 minutes,
#   1. the CUDA-marked tests and the fused kernels' tests, compiled for this GPU (the objective's
#      auto/greedy/lazy and the TOPS rule; loops; no host sync); the sm_90 cross-compile test is
#      left to CI (this GPU compiles every kernel itself),
#   2. the GPU selection benchmark (fused kernels, PyTorch loops, the core; launch counts)
#      -> benchmarks/results/adapters_cuda.{json,md},
#   3. the LLaVA-NeXT-7B prefill benchmark (random bf16 weights) at 2880 -> 320 tokens
#      -> benchmarks/results/prefill_gpu.{json,md} (the paper's rule) and
#         benchmarks/results/prefill_objective/prefill_gpu.{json,md} (certified objective, fused kernel).
# Each step has its own time limit; the log goes to benchmarks/results/device_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=benchmarks/results
LOG=$OUT/device_check.log
mkdir -p "$OUT/prefill_objective"
export PYTHONPATH="$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}"
export HYPOTHESIS_PROFILE=ci TRITON_DEFAULT_FP_FUSION=0

if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "device_check: no CUDA device visible to torch; nothing to check" | tee "$LOG"
  exit 2
fi
status=0
step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}
: > "$LOG"
$PY -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee -a "$LOG"
$PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tee -a "$LOG"
# Limits add up to 470 s (under 8 minutes with the start-up lines).
step 150 "CUDA tests" $PY -m pytest -q tests/test_cuda.py tests/test_triton_kernels.py -k "not compile_for_an_h100"
step 120 "selection benchmark" $PY benchmarks/gpu_adapters.py --device cuda --cases targets --repeats 10
step 110 "prefill, paper's rule" $PY benchmarks/prefill_gpu.py --budgets 320 --warmup 1 --reps 5
step 90 "prefill, certified objective" $PY benchmarks/prefill_gpu.py --budgets 320 --warmup 1 --reps 5 \
  --objective objective --out "$OUT/prefill_objective"
echo "device_check: total $SECONDS s, status $status (results in $OUT)" | tee -a "$LOG"
exit $status
