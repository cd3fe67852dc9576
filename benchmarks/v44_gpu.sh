#!/bin/bash
# v44 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v44_gpu.sh
# adjointgen bench --rollout, T = 1000, 192^3: the segment plan (scalar_gradients=False) and the
# binomial plan in one process per case: periodic within 20 GB and 60 GB, cavity within 20 GB.
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v44
run() {  # config memory name
  timeout 280 python3 -m adjointgen bench --rollout --config "$1" --memory "$2" --out "$OUT/$3" 2>&1 | grep "plan\|^|"
}
run D3Q19/BGK/FP32FP32 20GB rollout_periodic_20GB
run D3Q19/BGK/FP32FP32/cavity 20GB rollout_cavity_20GB
run D3Q19/BGK/FP32FP32 60GB rollout_periodic_60GB
