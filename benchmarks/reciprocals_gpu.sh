#!/bin/bash
# v33's GPU run (after the two staging calls of ../shared/gpu/README.md), part "ab" or "bench".
# ab: the adjoint kernels before (A: divisions) and after (B: reciprocals) in one process per
# configuration, output adjoints random and zero. The module files are made here first:
#   ab_v33/{kbc,d3q19,fp64}_{a,b}.py (A: main's generator before the change, B: after it).
# bench: where the runtime's adjoint time goes (adjoint_path_diag.py) and `adjointgen bench`.
set -u
part=${1:-ab}
if [ "$part" = ab ]; then
  for pair in "D3Q27/KBC/FP32FP32 kbc" "D3Q19/BGK/FP32FP32 d3q19" "D3Q19/BGK/FP64FP64 fp64"; do
    set -- $pair
    for cotangent in zero random; do
      timeout 200 python3 benchmarks/module_ab.py --config $1 --a ab_v33/$2_a.py --b ab_v33/$2_b.py --cotangent $cotangent \
        --rounds 5 --out $OUT 2>&1 | grep -v "^Module" | grep "B/A\|bitwise\|\"cotangent\|config"
    done
  done
else
  timeout 200 python3 benchmarks/adjoint_path_diag.py --config D3Q27/KBC/FP32FP32 --config D3Q19/BGK/FP32FP32 \
    --config D3Q19/BGK/FP32FP32/cavity --config D3Q19/BGK/FP64FP64 --out $OUT 2>&1 | grep -v "^Module"
  timeout 350 python3 benchmarks/bench_step.py --size 192 --skip tape,jax --config D3Q27/KBC/FP32FP32 --config D3Q19/BGK/FP32FP32 \
    --config D3Q19/BGK/FP32FP32/cavity --config D3Q19/BGK/FP64FP64 --out $OUT 2>&1 | grep -v "^Module" | head -45
fi
