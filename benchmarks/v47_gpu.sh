#!/bin/bash
# v47 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v47_gpu.sh
# 1. KBC's accumulating adjoints with the outputs' gradients cleared right after their seeds:
#    same-process A/B (module_ab.py) against v46's generator (made here before the GPU calls:
#    python benchmarks/make_ab_modules.py --base <v46 commit> --config D3Q27/KBC/FP32FP32 --out ab_v47);
# 2. `adjointgen bench` (kernel rows, registers and spills) of the kernel issue's five cases with
#    this tree, one process each, for one table from one session.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v47
for cotangent in random zero; do
  timeout 150 python3 benchmarks/module_ab.py --config D3Q27/KBC/FP32FP32 --a ab_v47/d3q27_kbc_fp32fp32_a.py \
    --b ab_v47/d3q27_kbc_fp32fp32_b.py --rounds 5 --cotangent $cotangent --out "$OUT/ab" 2>&1 | grep "B/A\|\"config\|bitwise" -A0
done
for config in D3Q27/KBC/FP32FP32 D3Q19/BGK/FP32FP32 D3Q19/BGK/FP32FP32/cavity D3Q19/BGK/FP32FP32/obstacle D3Q19/BGK/FP64FP64; do
  name=$(echo "$config" | tr '/' '_')
  timeout 110 python3 -m adjointgen bench --config "$config" --skip tape,jax --out "$OUT/bench_$name" 2>&1 | grep "^| D"
done
