#!/bin/bash
# The issue-16 table on the final code of this session (after v51), on the device machine (after
# the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v52_gpu.sh "D3Q19/BGK/FP32FP32 D3Q19/BGK/FP32FP32/cavity ..." name
# `adjointgen bench` of the listed configurations in one process (ratios to XLB's forward there).
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v52
configs=()
for c in $1; do configs+=(--config "$c"); done
timeout 540 python3 -m adjointgen bench "${configs[@]}" --skip tape,jax --out "$OUT/bench_$2" 2>&1 | grep "^| D"
