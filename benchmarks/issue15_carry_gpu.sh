#!/usr/bin/env bash
# v23's GPU measurements (benchmarks/NOTES.md), one command on the device machine (repo root):
#   bash benchmarks/issue15_carry_gpu.sh     (results in $OUT, or ./v23-results without it)
# 1. adjointgen bench, D3Q19 FP32 192^3 obstacle (ZouHe channel with a solid block): the
#    accumulating adjoint and adjoint_fresh with the carry, registers and spills of every kernel;
# 2. adjointgen bench --rollout, T = 1000 within 20 GB: the obstacle, then the cavity.
# Each case is its own process (a time limit keeps what finished); exit status 1 if any failed.
set -uo pipefail
export PYTHONUNBUFFERED=1
out="${OUT:-v23-results}"
mkdir -p "$out"
status=0
python -m adjointgen bench --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$out/bench_obstacle" \
    2>&1 | tee "$out/bench_obstacle.log" || status=1
for case in obstacle cavity; do
    python -m adjointgen bench --rollout --config "D3Q19/BGK/FP32FP32/$case" --memory 20GB --out "$out/rollout_$case" \
        2>&1 | tee "$out/rollout_$case.log" || status=1
done
exit $status
