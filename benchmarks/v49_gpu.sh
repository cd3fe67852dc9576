#!/bin/bash
# v49 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v49_gpu.sh base|new|rollout
# The split step's listed-id flags (constant False in the rest part): `adjointgen bench` of the
# obstacle channel with v48's tree (made here: mkdir -p ab_v49/base && git archive 4630775 adjointgen
# templates generated pyproject.toml | tar -x -C ab_v49/base; `base`) and with this one (`new`), in
# one device session, one call each (cold compiles of the module's variants); `rollout`: this
# tree's `bench --rollout` of the obstacle channel within 20 GB (v45: 4.57x, 1.14 of its floor).
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
case "$1" in
  base) tree=ab_v49/base name=v48 ;;
  *) tree=. name=v49 ;;
esac
cd "$tree"
export XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub
if [ "$1" = rollout ]; then
  timeout 280 python3 -m adjointgen bench --rollout --config D3Q19/BGK/FP32FP32/obstacle --memory 20GB \
    --out "$OUT/rollout_obstacle_20GB_v49" 2>&1 | grep "plan\|^|"
else
  timeout 500 python3 -m adjointgen bench --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax \
    --out "$OUT/bench_obstacle_$name" 2>&1 | grep "^| D\|xlb_forward"
fi
