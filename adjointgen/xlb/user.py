"""Users' own XLB-style operators: collision models and boundary conditions.

A user writes an operator the way XLB writes its own (a subclass of XLB's ``Collision`` or
``BoundaryCondition`` whose ``_construct_warp`` returns a ``@wp.func`` functional, plus a
``jax_implementation`` for verification) and registers it with :func:`register` (a class
decorator). The generator then treats it like XLB's operators: it reads the functional's source,
transforms and differentiates it. Registered collisions become collision names of
configurations (``D2Q9/TRT/FP32FP32``) and can be built into steppers; registered boundary
conditions are accepted by :func:`adjointgen.differentiable`. :func:`register_mix` names a function
that builds a list of boundary conditions for a grid, so that configurations can use it
(``D2Q9/BGK/FP64FP64/lid``). ``adjointgen build/check/verify --source my_ops.py`` imports such a
file first.

Guarantees: a class is registered under its own name, once; a name that is already a built-in
collision, or a class that is not an XLB collision or boundary condition, is refused with a
message; :func:`load_source` imports a file by path (after the Warp compatibility shims) and
fails clearly when it is missing or registers nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from adjointgen.errors import ConfigurationError

COLLISIONS: dict[str, type] = {}
BOUNDARY_CONDITIONS: dict[str, type] = {}
MIXES: dict = {}  # boundary mix name -> function(grid, dim) returning XLB boundary conditions


def register(cls: type) -> type:
    """Class decorator: make an XLB-style collision or boundary condition known to adjointgen."""
    from adjointgen.xlb import compat

    compat.apply()
    from xlb.operator.boundary_condition.boundary_condition import BoundaryCondition
    from xlb.operator.collision.collision import Collision

    from adjointgen.config import BUILTIN_COLLISIONS

    name = cls.__name__
    if not isinstance(cls, type) or not hasattr(cls, "_construct_warp"):
        raise ConfigurationError(f"adjointgen.register: {cls!r} is not an XLB operator class with a _construct_warp method")
    if issubclass(cls, Collision):
        if name in BUILTIN_COLLISIONS or name.startswith("Forced"):
            raise ConfigurationError(f"adjointgen.register: {name!r} is the name of a built-in collision; rename the class")
        registry = COLLISIONS
    elif issubclass(cls, BoundaryCondition):
        registry = BOUNDARY_CONDITIONS
    else:
        raise ConfigurationError(
            f"adjointgen.register: {name} is neither an xlb Collision nor an xlb BoundaryCondition subclass")
    known = registry.get(name)
    if known is not None and known is not cls and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ConfigurationError(f"adjointgen.register: another class named {name} is already registered ({known.__module__})")
    registry[name] = cls
    return cls


def load_design_operators() -> None:
    """Register the design operators shipped with adjointgen (:mod:`adjointgen.xlb.design`,
    e.g. ``PorousBGK``); imported on first need, since it imports XLB."""
    import adjointgen.xlb.design  # noqa: F401  (registers on import)


def register_mix(name: str):
    """Decorator: ``@adjointgen.register_mix("lid")`` on ``def lid(grid, dim) -> [conditions]``
    makes ``.../lid`` a boundary mix of configurations (for build, verify and make_stepper)."""
    from adjointgen.config import BUILTIN_BOUNDARIES

    if not name.isidentifier() or name != name.lower() or name in BUILTIN_BOUNDARIES:
        raise ConfigurationError(f"adjointgen.register_mix: {name!r} must be a new lower-case identifier")

    def decorator(function):
        MIXES[name] = function
        return function

    return decorator


def load_source(path: str | Path) -> list[str]:
    """Import the Python file ``path`` so that its :func:`register` calls run; returns the names
    it registered."""
    from adjointgen.xlb import compat

    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"--source {path}: no such file")
    compat.apply()
    before = set(COLLISIONS) | set(BOUNDARY_CONDITIONS) | set(MIXES)
    name = f"adjointgen_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    added = sorted((set(COLLISIONS) | set(BOUNDARY_CONDITIONS) | set(MIXES)) - before)
    mine = [v for v in (*COLLISIONS.values(), *BOUNDARY_CONDITIONS.values(), *MIXES.values()) if v.__module__ == name]
    if not mine:
        raise ConfigurationError(f"--source {path}: the file registers no operator; decorate your classes with @adjointgen.register")
    return added
