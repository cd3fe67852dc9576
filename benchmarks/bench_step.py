"""Run ``adjointgen bench`` from a source tree, as on the device machine (no pip install there).

The timing itself lives in :mod:`adjointgen.bench` (rows: copy, XLB's Warp forward, adjointgen's
forward/adjoint/forward+adjoint, Warp's tape at its best, XLB-JAX forward and jax.grad). Earlier
versions of this script timed the generated kernels alone; their results (v1-v5) are in
``results/`` and ``NOTES.md``. Usage: ``python benchmarks/bench_step.py --size 192 --out $OUT``
(any ``adjointgen bench`` option).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_tree_packages():
    """Map adjointgen.templates/generated to the folders of this tree when not pip-installed."""
    sys.path.insert(0, str(ROOT))
    for name, folder in (("adjointgen.templates", "templates"), ("adjointgen.generated", "generated")):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            spec = importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                          submodule_search_locations=[str(ROOT / folder)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
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
    from adjointgen.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
