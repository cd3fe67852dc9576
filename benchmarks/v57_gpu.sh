#!/bin/bash
# v57 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
# bench_split_parts.py of the D3Q19 FP32 extrapolation channel in 98c5d28's tree (ab_v56/base, with
# this tree's bench_split_parts.py and bench_step.py copied in; its "grid" column is the whole grid
# there, which has no grid parts) and in this one, one process each.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
for tree in ab_v56/base .; do
  name=$([ "$tree" = . ] && echo v57 || echo v55)
  (cd "$tree" && XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 290 python3 \
    benchmarks/bench_split_parts.py --config D3Q19/BGK/FP32FP32/extrapolation --size 192 \
    --out "$OUT/split_parts_extrapolation_$name" 2>&1 | tail -7)
done
