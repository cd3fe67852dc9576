#!/bin/bash
# Same-process A/B of every module pair in a folder made by make_ab_modules.py, with the output
# adjoints random and zero (after the two staging calls of ../shared/gpu/README.md):
#   bash benchmarks/ab_gpu.sh ab_v35
set -u
folder=${1:?a folder of <config>_a.py / <config>_b.py pairs}
for a in "$folder"/*_a.py; do
  b=${a%_a.py}_b.py
  label=$(python3 -c "import sys; from adjointgen.config import Configuration; print(Configuration.parse(sys.argv[1]).label)" \
          "$(basename "${a%_a.py}")")
  for cotangent in random zero; do
    timeout 250 python3 benchmarks/module_ab.py --config "$label" --a "$a" --b "$b" --cotangent "$cotangent" --rounds 5 \
      --out "$OUT" 2>&1 | grep -v "^Module" | grep "B/A\|\"cotangent\|\"config"
  done
done
