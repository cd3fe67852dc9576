#!/bin/bash
# v32's GPU run (after the two staging calls of ../shared/gpu/README.md): the porous moment-form
# experiment, then the kernel-options A/B for the D3Q19 cases (part "d3q19") or KBC (part "kbc").
set -u
part=${1:-d3q19}
if [ "$part" = d3q19 ]; then
  timeout 150 python3 benchmarks/porous_adjoint_ab.py --size 192 --out $OUT 2>&1 | grep -v "^Module"
  timeout 120 python3 benchmarks/kernel_options_ab.py --config D3Q19/BGK/FP32FP32 --variants base,bounds128,blocks8 --out $OUT 2>&1 | grep -v "^Module"
  timeout 150 python3 benchmarks/kernel_options_ab.py --config D3Q19/BGK/FP32FP32/cavity --variants base,bounds128,blocks5,blocks6,blocks5_smem --out $OUT 2>&1 | grep -v "^Module"
  timeout 130 python3 benchmarks/kernel_options_ab.py --config D3Q19/BGK/FP64FP64 --variants base,blocks5,blocks5_smem --out $OUT 2>&1 | grep -v "^Module"
else
  timeout 560 python3 benchmarks/kernel_options_ab.py --config D3Q27/KBC/FP32FP32 --kernels adjoint_fresh_state --variants base,smem,blocks3_smem,blocks4_smem --out $OUT 2>&1 | grep -v "^Module"
fi
