#!/bin/bash
# v56b on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
# the obstacle channel's rollouts through the JAX face, one device: `rollout` (masks jit arguments:
# the grid parts since v56) and `rollout_split` (lists made at trace time).
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$(pwd) PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v56
timeout 560 python3 benchmarks/bench_sharded_rollout.py --config D3Q19/BGK/FP32FP32/obstacle --ways rollout_split,face \
  --size 192 --steps 100 --repeats 3 --out "$OUT/bench_obstacle" 2>&1 | grep "^|\|^\[\|Gradients\|rror"
