#!/bin/bash
# v53 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v53_gpu.sh        1. the rollouts through the JAX face (rows rollout, rollout_overlap)
#                                     2. the face rollout's profile, plain and overlapped
#                                     3. state-sized copies in the optimised GPU program at 64^3, overlapped
#   (the first run of this script had the Warp calls without graphs; a second run of 1. set
#    jax_face.CALL_GRAPHS = WARP, a knob since replaced by sharded_rollout(graphs=...);
#    bash benchmarks/v53_gpu.sh final: 1. and 2. on the final code, graphs on by default,
#    with the rollout_calls row: the same without graphs)
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$(pwd) PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v53
timeout 260 python3 benchmarks/bench_sharded_rollout.py --size 192 --steps 100 --repeats 3 --out "$OUT/bench" 2>&1 \
  | grep "^|\|^\[\|Rollout\|rror"
for flag in "" --overlap; do
  timeout 120 python3 benchmarks/profile_face_rollout.py --size 192 --steps 100 $flag --out "$OUT/profile${flag}" 2>&1 \
    | grep "^\[\|^|\|^#\|rror"
done
[ "${1:-}" = final ] && exit
timeout 90 python3 benchmarks/hlo_copies.py --size 64 --steps 8 --overlap 2>&1 | grep -v "^Warp\|^ *\"\|^$" | tail -12
