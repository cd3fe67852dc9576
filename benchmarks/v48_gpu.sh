#!/bin/bash
# v48 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v48_gpu.sh
# adjoint_gather over a list of the cells with slots: `adjointgen bench` of the lid-driven cavity
# with v47's tree (made here: mkdir -p ab_v48/base && git archive <v47 commit> adjointgen templates
# generated pyproject.toml | tar -x -C ab_v48/base) and with this one, one after the other, and of
# the obstacle channel with this one.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
for tree in ab_v48/base .; do
  name=$([ "$tree" = . ] && echo v48 || echo v47)
  (cd "$tree" && XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 100 python3 -m adjointgen bench \
    --config D3Q19/BGK/FP32FP32/cavity --skip tape,jax --out "$OUT/bench_cavity_$name" 2>&1 | grep "^| D.*adjoint\|xlb_forward")
done
XDG_CACHE_HOME=/tmp/cache_v48 PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 100 python3 -m adjointgen bench \
  --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$OUT/bench_obstacle_v48" 2>&1 | grep "^| D.*adjoint\|xlb_forward"
