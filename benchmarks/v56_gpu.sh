#!/bin/bash
# v56 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v56_gpu.sh ab_parts|base|new
# `ab_parts`: same-process A/B (module_ab.py, random output adjoints) of D3Q27 KBC, the clears of
# the accumulating adjoints in a loop (B) against HEAD's unrolled clears (A, 98c5d28); then
# bench_split_parts.py of the obstacle channel (whole grid, lists per ZouHe id, grid parts) in
# this tree. `base`/`new`: `adjointgen bench` of the obstacle channel in 98c5d28's tree and in this
# one (registers and spills of every kernel by the driver). Made here before the GPU calls:
#   python benchmarks/make_ab_modules.py --base 98c5d28 --config D3Q27/KBC/FP32FP32 --out ab_v56
#   mkdir -p ab_v56/base && git archive 98c5d28 adjointgen templates generated pyproject.toml | tar -x -C ab_v56/base
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
if [ "$1" = ab_parts ]; then
  export PYTHONPATH=/tmp/site:/tmp/stub:$PWD XDG_CACHE_HOME=/tmp/cache_v56
  timeout 200 python3 benchmarks/module_ab.py --config D3Q27/KBC/FP32FP32 --a ab_v56/d3q27_kbc_fp32fp32_a.py \
    --b ab_v56/d3q27_kbc_fp32fp32_b.py --rounds 5 --out "$OUT/ab_kbc" 2>&1 | grep "B/A\|\"config"
  timeout 360 python3 benchmarks/bench_split_parts.py --config D3Q19/BGK/FP32FP32/obstacle --size 192 \
    --out "$OUT/split_parts_obstacle" 2>&1 | tail -8
  exit 0
fi
tree=$([ "$1" = base ] && echo ab_v56/base || echo .)
name=$([ "$1" = base ] && echo v55 || echo v56)
cd "$tree"
XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 560 python3 -m adjointgen bench \
  --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$OUT/bench_obstacle_$name" 2>&1 | tail -70
