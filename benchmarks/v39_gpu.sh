#!/bin/bash
# v39 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v39_gpu.sh
# 1. the rollouts through the JAX face with v38's adjointgen and this tree's, in one session;
# 2. this tree's profile of the face's rollout; 3. the state-sized copies in its optimised GPU program.
# v38's tree, made here before the GPU calls (each bench script puts its own tree first on sys.path):
#   mkdir -p ab_v39/base/benchmarks && git archive 8f070d0 adjointgen templates generated pyproject.toml | tar -x -C ab_v39/base
#   cp benchmarks/bench_{sharded_rollout,scaling,step}.py ab_v39/base/benchmarks/
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub
for tree in ab_v39/base .; do
  name=$([ "$tree" = . ] && echo v39 || echo v38)
  XDG_CACHE_HOME=/tmp/cache_$name timeout 200 python3 "$tree/benchmarks/bench_sharded_rollout.py" --size 192 --steps 100 \
    --repeats 3 --out "$OUT/$name" 2>&1 | grep "^|\|^\[\|Rollout"
done
XDG_CACHE_HOME=/tmp/cache_v39 timeout 150 python3 benchmarks/profile_face_rollout.py --size 192 --steps 100 --out "$OUT/profile" \
  2>&1 | grep "^\[\|^|"
XDG_CACHE_HOME=/tmp/cache_v39 timeout 100 python3 benchmarks/hlo_copies.py --size 64 --steps 8 --segment 4 2>&1 | grep -v "^Warp\|^  \"\|Module"
