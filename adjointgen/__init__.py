"""adjointgen: explicit adjoint Warp kernels for XLB lattice Boltzmann steppers."""

__version__ = "0.1.0"

# XLB 0.3.1 imports names that current Warp moved or removed; re-bind the missing ones so that a
# script's `import adjointgen; import xlb` works (adjointgen/xlb/compat.py; never overrides a name)
from adjointgen.xlb import compat as _compat  # noqa: E402

_compat.apply_on_import()


def differentiable(stepper, boundary_parameters: bool = False, fields: dict | None = None):
    """Wrap an XLB Warp stepper into a step with the same signature whose gradient flows
    through ``wp.Tape`` via generated adjoint kernels; ``boundary_parameters=True`` also gives
    gradients with respect to prescribed boundary values; ``fields={"porosity": gamma}`` passes
    the design fields the stepper's operators read (Warp arrays ``(1, nx, ny, nz)``; with
    ``requires_grad`` the tape fills their ``.grad``). See :mod:`adjointgen.runtime.step`."""
    from adjointgen.runtime.step import differentiable as _differentiable

    return _differentiable(stepper, boundary_parameters, fields)


def field(name: str, dtype=None, components: int = 1, default: float = 0.0, low: float = 0.0, high: float = 1.0):
    """Inside an XLB-style operator's ``_construct_warp``: a ``@wp.func`` that reads this cell's
    value of the design field ``name``, without arguments for one component, with the component's
    index for several (e.g. ``components=q``, one per lattice link); ``default`` is what it reads
    where Warp compiles the operator itself (see :mod:`adjointgen.xlb.fields`)."""
    import warp as wp

    from adjointgen.xlb.fields import field as _field

    return _field(name, dtype or wp.float32, components, default, low, high)


def checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, omega, steps: int, snapshots: int | None = None,
                         start_timestep: int = 0, progress: bool | None = None, memory=None, scalar_gradients: bool = True):
    """``steps`` steps of a :func:`differentiable` step from ``(f_0, f_1)``, differentiable in
    memory bounded by ``snapshots`` stored states or by ``memory`` (``"20GB"``, bytes, ``"auto"``)
    (binomial checkpointing; with ``scalar_gradients=False``, no gradient of omega or of a lifted
    parameter, segments that keep the state-only adjoint's residuals where the module has them).
    See :mod:`adjointgen.runtime.rollout`."""
    from adjointgen.runtime.rollout import checkpointed_rollout as _rollout

    return _rollout(step, f_0, f_1, bc_mask, missing_mask, omega, steps, snapshots, start_timestep, progress, memory,
                    scalar_gradients)


def plan_rollout(step, f_0, bc_mask, steps: int, memory="auto", scalar_gradients: bool = True):
    """The plan a rollout with ``memory=`` would follow (stored states, bytes, forward steps),
    before running it. See :mod:`adjointgen.runtime.plan`."""
    from adjointgen.runtime.plan import plan_rollout as _plan

    return _plan(step, f_0, bc_mask, steps, memory, scalar_gradients)


def quiet(enabled: bool = True) -> None:
    """Silence Warp's module-load lines and banner, JAX's backend-fallback warnings and XLB's backend
    prints (``quiet(False)`` restores them); warnings and errors still show. Process-wide settings of
    Warp and JAX, so importing adjointgen leaves them alone. See :mod:`adjointgen.verbosity`."""
    from adjointgen.verbosity import quiet as _quiet

    _quiet(enabled)


def register(cls):
    """Class decorator: make a user's XLB-style collision or boundary condition known to the
    generator (see :mod:`adjointgen.xlb.user`)."""
    from adjointgen.xlb.user import register as _register

    return _register(cls)


def register_mix(name: str):
    """Decorator naming a function ``(grid, dim) -> [boundary conditions]`` as a boundary mix of
    configurations (see :mod:`adjointgen.xlb.user`)."""
    from adjointgen.xlb.user import register_mix as _register_mix

    return _register_mix(name)


__all__ = ["__version__", "differentiable", "field", "checkpointed_rollout", "plan_rollout", "quiet", "register", "register_mix"]
