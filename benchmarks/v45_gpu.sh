#!/bin/bash
# v45 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v45_gpu.sh
# 1. adjointgen bench --rollout, T = 1000, 192^3 periodic within 60 GB and 20 GB: the binomial rows
#    with snapshots written by forward_save (v45), beside the segment rows;
# 2. profile_rollout.py (Warp's activity timing by kernel) of the obstacle channel within 20 GB
#    and of periodic within 60 GB: where the time over the floor goes.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v45
bench() {  # config memory name
  timeout 200 python3 -m adjointgen bench --rollout --config "$1" --memory "$2" --out "$OUT/$3" 2>&1 | grep "plan\|^|"
}
profile() {  # config memory
  timeout 170 python3 benchmarks/profile_rollout.py --config "$1" --memory "$2" --out "$OUT/profile" 2>&1 | grep "^\[\|^## "
}
bench D3Q19/BGK/FP32FP32 60GB rollout_periodic_60GB
profile D3Q19/BGK/FP32FP32/obstacle 20GB
bench D3Q19/BGK/FP32FP32 20GB rollout_periodic_20GB
profile D3Q19/BGK/FP32FP32 60GB
