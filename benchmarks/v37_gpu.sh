#!/bin/bash
# v37 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v37_gpu.sh
# 1. the cavity's bench rows from v36's tree and from this one, in one session; 2. this tree's
#    cavity rollout (T = 1000, 20 GB) and tape step. v36's tree, made here before the GPU calls:
#    mkdir -p ab_v37/base && git archive e820f9f adjointgen templates generated pyproject.toml \
#        benchmarks/bench_step.py | tar -x -C ab_v37/base
# (v37's results came from 786051f, the paired adjoints, since reverted: NOTES v37.)
set -u
export PYTHONPATH=/tmp/site:/tmp/stub
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
config=D3Q19/BGK/FP32FP32/cavity
for tree in ab_v37/base .; do
  name=$([ "$tree" = . ] && echo v37 || echo v36)
  XDG_CACHE_HOME=/tmp/cache_$name timeout 200 python3 "$tree/benchmarks/bench_step.py" --size 192 --skip tape,jax \
    --config $config --out "$OUT/bench_$name" 2>&1 | grep "cavity" | grep "xlb_forward\|ag_adjoint\|adjoint_fresh\|pairs\|gather"
done
export PYTHONPATH=/tmp/site:$PWD:/tmp/stub XDG_CACHE_HOME=/tmp/cache_v37
timeout 200 python3 benchmarks/bench_step.py --rollout --size 192 --steps 1000 --memory 20GB --config $config \
  --out "$OUT/rollout" 2>&1 | grep "^| D3Q\|plan"
timeout 150 python3 benchmarks/bench_tape.py --size 192 --steps 50 --config $config --out "$OUT" 2>&1 | grep "ratio_tape_step\|bitwise"
