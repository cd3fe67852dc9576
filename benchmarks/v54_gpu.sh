#!/bin/bash
# v54 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v54_gpu.sh    the obstacle channel's rollouts through the JAX face: the whole slab in
#                                 one launch (rollout: masks as jit arguments) against the ZouHe cells
#                                 from per-device lists (rollout_split: masks known at trace time)
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$(pwd) PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v54
timeout 500 python3 benchmarks/bench_sharded_rollout.py --config D3Q19/BGK/FP32FP32/obstacle --ways rollout_split,rollout_dw,rollout_split_dw \
  --size 192 --steps 100 --repeats 3 --out "$OUT/bench_obstacle" 2>&1 | grep "^|\|^\[\|Gradients\|rror"
