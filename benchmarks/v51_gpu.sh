#!/bin/bash
# v51 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v51_gpu.sh base|new
# Flags for every tested id (the non-listed ones constant False in the listed part): `base`/`new`,
# `adjointgen bench` of the obstacle channel in v50's tree (873ef2e) and in this one. Made here before the GPU calls:
#   mkdir -p ab_v51/base && git archive 873ef2e adjointgen templates generated pyproject.toml | tar -x -C ab_v51/base
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
tree=$([ "$1" = base ] && echo ab_v51/base || echo .)
name=$([ "$1" = base ] && echo v50 || echo v51)
cd "$tree"
XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 500 python3 -m adjointgen bench \
  --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$OUT/bench_obstacle_$name" 2>&1 | grep "^| D\|xlb_forward"
