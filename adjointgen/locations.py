"""Where the templates and the generated modules are, in a source checkout and when installed.

The repository keeps ``templates/`` and ``generated/`` beside ``adjointgen/``; a wheel carries
them inside the package (``adjointgen/templates``, ``adjointgen/generated``, mapped by
pyproject's ``package-dir``). Code that needs either asks here, so a source tree on ``PYTHONPATH``
(the build hook, the device machine, an editable install) and an installed wheel behave the same,
with no package faked in ``sys.modules``.
"""

from __future__ import annotations

from pathlib import Path

from adjointgen.errors import AdjointgenError

PACKAGE_DIR = Path(__file__).resolve().parent


def _folder(name: str) -> Path:
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):  # installed, then source checkout
        if (candidate / "__init__.py").is_file():
            return candidate
    raise AdjointgenError(f"adjointgen's {name}/ folder is missing (looked in {PACKAGE_DIR} and {PACKAGE_DIR.parent}); "
                          "reinstall the package (pip install adjointgen) or run from a complete checkout")


def templates_dir() -> Path:
    """The folder of the Jinja templates the emitter renders."""
    return _folder("templates")


def generated_dir() -> Path:
    """The folder of the shipped generated modules (``adjointgen build`` writes there by default)."""
    return _folder("generated")
