#!/bin/bash
# v42 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v42_gpu.sh face     1. the rollouts through the JAX face with v41's tree and this one;
#                                       2. this tree's profile of the face's rollout
#   bash benchmarks/v42_gpu.sh warp     3. adjointgen bench --rollout, obstacle channel, T = 1000 in 20 GB,
#                                          v41's tree and this one
# v41's tree, made here before the GPU calls (each bench script puts its own tree first on sys.path):
#   mkdir -p ab_v42/base/benchmarks && git archive b642afa adjointgen templates generated pyproject.toml | tar -x -C ab_v42/base
#   cp benchmarks/bench_{sharded_rollout,scaling,step}.py ab_v42/base/benchmarks/
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub PYTHONUNBUFFERED=1
root=$(pwd)
if [ "$1" = face ]; then
  for tree in ab_v42/base .; do
    name=$([ "$tree" = . ] && echo v42 || echo v41)
    XDG_CACHE_HOME=/tmp/cache_$name timeout 200 python3 "$tree/benchmarks/bench_sharded_rollout.py" --size 192 --steps 100 \
      --repeats 3 --out "$OUT/$name" 2>&1 | grep "^|\|^\[\|Rollout"
  done
  XDG_CACHE_HOME=/tmp/cache_v42 timeout 150 python3 benchmarks/profile_face_rollout.py --size 192 --steps 100 --out "$OUT/profile" \
    2>&1 | grep "^\[\|^|"
else
  for tree in ab_v42/base .; do
    name=$([ "$tree" = . ] && echo v42 || echo v41)
    (cd "$tree" && XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):$PYTHONPATH timeout 270 python3 -m adjointgen bench --rollout \
      --config D3Q19/BGK/FP32FP32/obstacle --memory 20GB --out "$OUT/rollout_obstacle_$name" 2>&1 | grep "^|\|^\[\|Rollout")
  done
fi
