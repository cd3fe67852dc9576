"""Run ``adjointgen bench`` from a source tree, as on the device machine (no pip install there).

The timing itself lives in :mod:`adjointgen.tools.bench` (rows: copy, XLB's Warp forward, adjointgen's
forward/adjoint/forward+adjoint, Warp's tape at its best, XLB-JAX forward and jax.grad). Earlier
versions of this script timed the generated kernels alone; their results (v1-v5) are in
``results/`` and ``NOTES.md``. Usage: ``python benchmarks/bench_step.py --size 192 --out $OUT``
(any ``adjointgen bench`` option).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_tree_packages():
    """Put this tree on sys.path (the device machine has no pip install; adjointgen finds its
    templates/ and generated/ beside the package) and stub XLB's plotting imports when absent."""
    sys.path.insert(0, str(ROOT))
    if "pyvista" not in sys.modules:  # XLB imports pyvista at import time; not needed here
        try:
            importlib.import_module("pyvista")
        except ModuleNotFoundError:
            sys.modules["pyvista"] = types.ModuleType("pyvista")
    for name in ("matplotlib", "matplotlib.pylab", "matplotlib.cm"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            stub = types.ModuleType(name)
            stub.cm = stub
            stub.pylab = stub
            sys.modules[name] = stub


def main(argv=None):
    """``adjointgen bench`` from this source tree (the device machine has no pip install)."""
    _source_tree_packages()
    from adjointgen.tools.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
