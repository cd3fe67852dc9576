#!/bin/bash
# v46 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v46_gpu.sh [again]
# The accumulating adjoints' gradient reads moved after the reverse sweep: same-process A/B
# (module_ab.py, random output adjoints) of KBC, periodic FP32 and FP64 against 6f5de19's
# generator; the obstacle channel (in-place arrays: not module_ab's) by `adjointgen bench` in
# 6f5de19's tree and in this one, one after the other. Made here before the GPU calls:
#   python benchmarks/make_ab_modules.py --base 6f5de19 --config <each> --out ab_v46
#   mkdir -p ab_v46/base && git archive 6f5de19 adjointgen templates generated pyproject.toml | tar -x -C ab_v46/base
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache_v46
for a in ab_v46/*_a.py; do
  label=$(python3 -c "import sys; from adjointgen.config import Configuration; print(Configuration.parse(sys.argv[1]).label)" \
          "$(basename "${a%_a.py}")")
  timeout 150 python3 benchmarks/module_ab.py --config "$label" --a "$a" --b "${a%_a.py}_b.py" --rounds 5 --out "$OUT/ab" \
    2>&1 | grep "B/A\|\"config"
done
if [ "${1:-}" = again ]; then  # the second call: the A/B above had failed (module_ab.py lacked omega_in), plus
  # the obstacle channel's rollout (issue 15's last row) and KBC's bench rows with this tree
  timeout 200 python3 -m adjointgen bench --rollout --config D3Q19/BGK/FP32FP32/obstacle --memory 20GB \
    --out "$OUT/rollout_obstacle_20GB" 2>&1 | grep "plan\|^|"
  timeout 120 python3 -m adjointgen bench --config D3Q27/KBC/FP32FP32 --skip tape,jax --out "$OUT/bench_kbc" 2>&1 | grep "^|"
  exit 0
fi
for tree in ab_v46/base .; do
  name=$([ "$tree" = . ] && echo v46 || echo v45)
  (cd "$tree" && XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 150 python3 -m adjointgen bench \
    --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$OUT/bench_obstacle_$name" 2>&1 | grep "^|")
done
