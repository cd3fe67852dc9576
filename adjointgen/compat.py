"""Let XLB 0.3.1 import and run on current Warp (>= 1.13).

XLB 0.3.1 was written against Warp 1.10. Three names it uses at import time are gone from
current Warp:

- ``warp.utils.ScopedTimer`` moved to ``warp.ScopedTimer``;
- ``wp.vec(length, dtype)`` and ``wp.mat(shape, dtype)``, the type constructors, were removed in
  favour of ``warp.types.vector`` and ``warp.types.matrix``.

:func:`apply` re-binds those names (only where they are missing) and must run before the first
``import xlb``. It is explicit on purpose: adjointgen calls it from its own entry points
(:func:`adjointgen.xlb_support.import_xlb`), and users who import XLB themselves call
``adjointgen.compat.apply()`` first. It never changes behaviour that current Warp still has.
"""

from __future__ import annotations

import sys

__all__ = ["apply", "applied_shims"]

_applied: list[str] = []


def _vector_type(length, dtype):
    import warp.types

    return warp.types.vector(length=length, dtype=dtype)


def _matrix_type(shape, dtype):
    import warp.types

    return warp.types.matrix(shape=shape, dtype=dtype)


def apply() -> list[str]:
    """Install the shims that are needed on the running Warp; return their names.

    Idempotent. Raises RuntimeError if ``xlb`` was imported before and failed half-way (a
    partially imported ``xlb`` stays broken in ``sys.modules``).
    """
    import warp as wp
    import warp.utils

    if not hasattr(warp.utils, "ScopedTimer"):
        warp.utils.ScopedTimer = wp.ScopedTimer
        _applied.append("warp.utils.ScopedTimer")
    if not hasattr(wp, "vec"):
        wp.vec = _vector_type
        _applied.append("wp.vec")
    if not hasattr(wp, "mat"):
        wp.mat = _matrix_type
        _applied.append("wp.mat")
    xlb_module = sys.modules.get("xlb")
    if xlb_module is not None and not hasattr(xlb_module, "init"):
        raise RuntimeError(
            "xlb was imported before adjointgen.compat.apply() and its import failed; "
            "call adjointgen.compat.apply() before the first `import xlb`."
        )
    return list(_applied)


def applied_shims() -> list[str]:
    """The names :func:`apply` has re-bound in this process."""
    return list(_applied)
