#!/bin/bash
# v38 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v38_gpu.sh
# The rollouts through the JAX face (bench_sharded_rollout.py, this tree's script) with the
# adjointgen of v37's tree (main before v38) and of this one, in one session. v37's tree, made
# here before the GPU calls:
#   mkdir -p ab_v38/base && git archive 216c6b1 adjointgen templates generated pyproject.toml | tar -x -C ab_v38/base
#   mkdir -p ab_v38/base/benchmarks && cp benchmarks/bench_{sharded_rollout,scaling,step}.py ab_v38/base/benchmarks/
# (each script puts its own tree first on sys.path)
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
for tree in ab_v38/base .; do
  name=$([ "$tree" = . ] && echo v38 || echo v37)
  PYTHONPATH=/tmp/site:/tmp/stub XDG_CACHE_HOME=/tmp/cache_$name timeout 280 \
    python3 "$tree/benchmarks/bench_sharded_rollout.py" --size 192 --steps 100 --repeats 3 --out "$OUT/$name" 2>&1 | grep -v "^Warp\|^  "
done
