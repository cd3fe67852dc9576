"""Module files for ``module_ab.py``: each configuration from an earlier commit (A) and this tree (B).

For an A/B of a compiler change in one process on the GPU.

The earlier commit's generator runs from a temporary ``git worktree`` (its own ``adjointgen``
package on ``PYTHONPATH``, in a subprocess), so nothing of this tree leaks into A; both files keep
their headers (body hash, manifest), which ``module_ab.py`` checks when it loads them. Run it
here, before the GPU calls: the files travel with the working tree (not ignored by git).

    python benchmarks/make_ab_modules.py --base cf4153a --config D3Q27/KBC/FP32FP32 --out ab_v35
    # then, on the device machine:
    python benchmarks/module_ab.py --config D3Q27/KBC/FP32FP32 --a ab_v35/d3q27_kbc_fp32fp32_a.py \
        --b ab_v35/d3q27_kbc_fp32fp32_b.py --cotangent random --out $OUT
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# run by the interpreter with one tree's adjointgen first on sys.path; writes the module text
_GENERATE = """
import sys
import adjointgen
from adjointgen.compiler.pipeline import generate
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper
config = Configuration.parse(sys.argv[1])
shape = (5, 4, 4) if config.dim == 3 else (5, 4)
open(sys.argv[2], "w").write(generate(make_stepper(config, "warp", shape), config))
"""


def generate_with(tree: Path, label: str, out: Path) -> None:
    """Generate ``label`` with the ``adjointgen`` package of ``tree`` into ``out``."""
    subprocess.run([sys.executable, "-c", _GENERATE, label, str(out)], check=True, cwd=tree,
                   env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit whose generator makes the A files")
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # the generators run with their own trees as working folder
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            for label in args.config:
                name = label.lower().replace("/", "_")
                generate_with(base, label, out / f"{name}_a.py")
                generate_with(ROOT, label, out / f"{name}_b.py")
                print(f"{label}: {out / f'{name}_a.py'} ({args.base}), {out / f'{name}_b.py'} (this tree)")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
