"""Let XLB 0.3.1 import and run on current Warp (>= 1.13).

XLB 0.3.1 was written against Warp 1.10. Three names it uses at import time are gone from
current Warp:

- ``warp.utils.ScopedTimer`` moved to ``warp.ScopedTimer``;
- ``wp.vec(length, dtype)`` and ``wp.mat(shape, dtype)``, the type constructors, were removed in
  favour of ``warp.types.vector`` and ``warp.types.matrix``. XLB also calls ``wp.vec(x, length=1)``
  *inside* a Warp function (ZouHe's constant profile), where current Warp's builtin is
  ``wp.vector``: the ``wp.vec`` shim is that builtin for Warp's code generator and the old type
  constructor when called from Python.

:func:`apply` re-binds those names (only where they are missing, never over a name Warp has) and
must run before the first ``import xlb``. ``import adjointgen`` runs it (:func:`apply_on_import`),
so a script that starts ``import adjointgen; import xlb`` works; it never changes behaviour that
current Warp still has. Where ``import xlb`` already failed in this process (a notebook whose
first cell imported xlb), importing adjointgen re-binds the names, imports xlb again and says so;
if that still fails, it says what to do.
"""

from __future__ import annotations

import sys

__all__ = ["apply", "apply_on_import", "applied_shims", "key_stepper_kernel"]

_applied: list[str] = []


def _vector_shim():
    """``wp.vector``'s builtin, answering Python-scope calls ``(length, dtype=...)`` with a type."""
    import copy

    import warp.types
    from warp._src import context

    builtin = context.builtin_functions["vector"]

    class VecShim(type(builtin)):
        def __call__(self, *args, length=None, dtype=None, **kwargs):
            if len(args) == 1 and isinstance(args[0], int) and length is None:
                args, length = (), args[0]
            if not args and length is not None:
                return warp.types.vector(length=length, dtype=dtype if dtype is not None else warp.types.float32)
            options = {k: v for k, v in (("length", length), ("dtype", dtype)) if v is not None}
            return super().__call__(*args, **options, **kwargs)

    shim = copy.copy(builtin)
    shim.__class__ = VecShim
    return shim


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
        wp.vec = _vector_shim()
        _applied.append("wp.vec")
    if not hasattr(wp, "mat"):
        wp.mat = _matrix_type
        _applied.append("wp.mat")
    xlb_module = sys.modules.get("xlb")
    if xlb_module is not None and not hasattr(xlb_module, "init"):
        raise RuntimeError(
            "xlb is half-imported in this process (its import failed before adjointgen re-bound the Warp names "
            f"XLB 0.3.1 needs); {RESTART}"
        )
    return list(_applied)


RESTART = "restart Python and put `import adjointgen` before `import xlb` (adjointgen.xlb.compat)"


def _failed_xlb_import() -> bool:
    """Whether ``import xlb`` was tried in this process and failed: Python drops ``xlb`` itself
    from ``sys.modules`` but keeps the submodules that finished loading."""
    return "xlb" not in sys.modules and any(name.startswith("xlb.") for name in list(sys.modules))


def apply_on_import() -> list[str]:
    """What ``import adjointgen`` runs: :func:`apply`, then, if an earlier ``import xlb`` failed,
    import it again now that the names are there (with a warning saying so), or raise an
    ImportError saying what to do. Without Warp installed it does nothing."""
    import importlib
    import warnings

    try:
        import warp  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "warp":
            raise
        return []
    retry = _failed_xlb_import()
    shims = apply()
    if not retry:
        return shims
    try:
        importlib.import_module("xlb")
    except ImportError as exc:
        raise ImportError(f"an earlier `import xlb` failed on Warp {warp.config.version}, and importing it again after "
                          f"adjointgen re-bound {', '.join(shims) or 'nothing'} failed too ({exc}); {RESTART}") from exc
    warnings.warn(f"an earlier `import xlb` failed on Warp {warp.config.version} (XLB 0.3.1 needs {', '.join(shims)}); "
                  "adjointgen re-bound those names and xlb imports now. Import adjointgen before xlb to avoid the error.",
                  RuntimeWarning, stacklevel=3)
    return shims


def applied_shims() -> list[str]:
    """The names :func:`apply` has re-bound in this process."""
    return list(_applied)


def key_stepper_kernel(stepper) -> str:
    """Make Warp's kernel cache tell XLB stepper kernels with different boundary conditions apart.

    XLB selects each boundary condition's functional inside its stepper kernel with
    ``wp.static(self.boundary_conditions[i]...)``; Warp's module hash does not see which functional
    that picks. Two steppers whose conditions carry the same ids (XLB numbers them from 1 in each
    process) but differ in kind, e.g. a ZouHe pressure outlet and a DoNothing outlet, hash alike,
    and the second silently runs the kernel compiled (and cached on disk) for the first: seen as
    a forward error of 1.65 on a D2Q9 channel, and mistaken for a JAX/Warp disagreement before.
    This stores a description of the conditions among the kernel's options, which Warp hashes by
    value. Returns the description.
    """
    conditions = []
    for bc in stepper.boundary_conditions:
        kind = getattr(bc, "bc_type", None)
        conditions.append(f"{bc.id}:{type(bc).__name__}" + (f"({kind})" if kind else ""))
    description = ",".join(conditions) or "none"
    stepper.warp_kernel.options["xlb_boundary_conditions"] = description
    # the same holds for a collision operator swapped in after construction (users' operators)
    collision = getattr(stepper, "collision", None)
    functional = getattr(getattr(collision, "warp_functional", None), "func", None)
    if functional is not None:
        import hashlib
        import inspect

        source = hashlib.sha256(inspect.getsource(functional).encode()).hexdigest()[:16]
        stepper.warp_kernel.options["xlb_collision"] = f"{type(collision).__name__}:{source}"
    return description
