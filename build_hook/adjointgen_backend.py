"""PEP 517 build backend: setuptools, with ``adjointgen build`` run first for wheels and sdists.

So a wheel or sdist always carries modules generated from the templates and the installed XLB
of the build environment, never a stale ``generated/``. The generator's own dependencies are
requested for those builds only (``get_requires_for_build_wheel``/``_sdist``), so an ordinary
build needs nothing but the package index. Editable installs (``pip install -e .``) use the tree
as it is: ``adjointgen check`` and the pre-commit hook keep it current there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every hook not overridden below)

ROOT = Path(__file__).resolve().parents[1]
# What ``adjointgen build`` imports; the package's own dependency list without the runtime-only ones.
GENERATOR_REQUIRES = ["warp-lang>=1.19", "libcst>=1.0", "jinja2>=3.1", "sympy>=1.12", "jax>=0.10",
                      "numpy>=1.26", "scipy>=1.10", "xlb==0.3.1"]


def _generate() -> None:
    if os.environ.get("ADJOINTGEN_SKIP_GENERATE") == "1":
        print("adjointgen build hook: skipped (ADJOINTGEN_SKIP_GENERATE=1)", file=sys.stderr)
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "adjointgen", "build", "--out", str(ROOT / "generated")]
    print(f"adjointgen build hook: {' '.join(command[1:])}", file=sys.stderr)
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"adjointgen build failed (exit {result.returncode}); the package was not built")


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + GENERATOR_REQUIRES


def get_requires_for_build_sdist(config_settings=None):
    return _setuptools.get_requires_for_build_sdist(config_settings) + GENERATOR_REQUIRES


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _generate()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    _generate()
    return _setuptools.build_sdist(sdist_directory, config_settings)
