#!/usr/bin/env bash
# Issue 15's GPU checks and benchmarks, in one command on the device machine (from the repo root):
#   bash benchmarks/issue15_gpu.sh        (results in $OUT, or ./issue15-results without it)
# 1. CUDA graphs on/off in a rollout: bitwise-equal gradients and final states (exit 1 otherwise), times;
# 2. XLB's loop on a wp.Tape: fused pairs on/off, per-step times against XLB's forward step;
# 3. adjointgen bench --rollout: the plan for 20 GB, the gradient, its floor (D3Q19 FP32 192^3, T = 1000).
# Each runs whatever the one before it gave; the exit status is 1 if any failed. 7 files in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out="${OUT:-issue15-results}"
mkdir -p "$out"
status=0
python benchmarks/check_graphs.py --size 192 --steps 1000 --snapshots 30 --out "$out" 2>&1 | tee "$out/check_graphs.log" || status=1
python benchmarks/bench_tape.py --size 192 --steps 50 --out "$out" 2>&1 | tee "$out/bench_tape.log" || status=1
python benchmarks/bench_step.py --rollout --size 192 --steps 1000 --memory 20GB --out "$out" 2>&1 | tee "$out/bench_rollout.log" || status=1
exit $status
