#!/bin/bash
# v43 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v43_gpu.sh
# XLB's loop on a wp.Tape (bench_tape.py, 192^3, 50 steps), periodic and lid-driven cavity: the
# input saved by forward_save against the residuals kept by forward_residuals, in one process each.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v43
for config in D3Q19/BGK/FP32FP32 D3Q19/BGK/FP32FP32/cavity; do
  timeout 280 python3 benchmarks/bench_tape.py --size 192 --steps 50 --config $config --out "$OUT" 2>&1 \
    | grep "ratio\|bitwise\|difference\|residual_count\|config"
done
