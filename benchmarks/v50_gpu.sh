#!/bin/bash
# v50 on the device machine (after the two staging calls of ../shared/gpu/README.md), results in $OUT:
#   bash benchmarks/v50_gpu.sh ab|base|new
# The per-cell parameter adjoints stored right after their last update: `ab`, same-process A/B
# (module_ab.py, random output adjoints) of periodic D3Q19 FP32 and D3Q27 KBC against v49's
# generator (6895c4f); `base`/`new`: `adjointgen bench` of the obstacle channel (in-place arrays:
# not module_ab's) in v49's tree and in this one. Made here before the GPU calls:
#   python benchmarks/make_ab_modules.py --base 6895c4f --config <each> --out ab_v50
#   mkdir -p ab_v50/base && git archive 6895c4f adjointgen templates generated pyproject.toml | tar -x -C ab_v50/base
set -u
mkdir -p /tmp/stub/pyvista && touch /tmp/stub/pyvista/__init__.py
export PYTHONUNBUFFERED=1
if [ "$1" = ab ]; then
  export PYTHONPATH=/tmp/site:/tmp/stub:$PWD XDG_CACHE_HOME=/tmp/cache_v50
  for a in ab_v50/*_a.py; do
    label=$(python3 -c "import sys; from adjointgen.config import Configuration; print(Configuration.parse(sys.argv[1]).label)" \
            "$(basename "${a%_a.py}")")
    timeout 200 python3 benchmarks/module_ab.py --config "$label" --a "$a" --b "${a%_a.py}_b.py" --rounds 5 --out "$OUT/ab" \
      2>&1 | grep "B/A\|\"config"
  done
  exit 0
fi
tree=$([ "$1" = base ] && echo ab_v50/base || echo .)
name=$([ "$1" = base ] && echo v49 || echo v50)
cd "$tree"
XDG_CACHE_HOME=/tmp/cache_$name PYTHONPATH=$(pwd):/tmp/site:/tmp/stub timeout 500 python3 -m adjointgen bench \
  --config D3Q19/BGK/FP32FP32/obstacle --skip tape,jax --out "$OUT/bench_obstacle_$name" 2>&1 | grep "^| D\|xlb_forward"
