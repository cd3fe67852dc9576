"""Design models: XLB-style operators whose behaviour a per-cell design field sets.

:class:`PorousBGK` is a gray (porous) lattice Boltzmann collision for topology optimization: a
field ``porosity`` gamma in [0, 1] per cell, 0 fluid, 1 solid, intermediate values porous.
:class:`BouzidiBounceBackBC` is an interpolated bounce-back wall for shape optimization: a field
``wall_distance`` with one value q in (0, 1] per lattice link (see its docstring).

The model is the partial bounce-back of Walsh, Burwinkle & Saar (2009, Computers & Geosciences
35): after the BGK collision, a fraction gamma of each population is replaced by the opposite
population of the same cell before streaming,

    f_out_i = (1 - gamma) (f_i - omega (f_i - feq_i)) + gamma f_opp(i).

Why this one rather than the partially saturated method of Noble & Torczynski (1998): it needs
only what XLB hands a collision (the cell's populations), it is linear in gamma (so the design
gradient is as well-conditioned as the state gradient, and d f_out / d gamma is simply the
difference of the bounced and the collided population), it conserves mass exactly for every
gamma, and it is plain BGK at gamma = 0 and full-way bounce-back at gamma = 1 (the wall of XLB's
FullwayBounceBackBC). Its known drawback: the effective permeability of a gray cell depends on
the relaxation time (Noble-Torczynski's weighting removes most of that); for a topology
optimization at a fixed viscosity this does not matter.

Both backends: the Warp functional reads the field with :func:`adjointgen.field` (in generated
kernels; XLB's own Warp stepper has no per-cell inputs and reads 0, plain BGK); the JAX
implementation reads the value bound by :func:`bound_fields` (a JAX array, possibly traced by
``jax.vjp``) and :func:`jax_step` runs XLB's JAX stepper with it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from adjointgen.xlb import compat

compat.apply()

import warp as wp  # noqa: E402
from xlb.compute_backend import ComputeBackend  # noqa: E402
from xlb.operator import Operator  # noqa: E402
from xlb.operator.boundary_condition.boundary_condition import BoundaryCondition, ImplementationStep  # noqa: E402
from xlb.operator.collision.collision import Collision  # noqa: E402

from adjointgen.errors import ConfigurationError  # noqa: E402
from adjointgen.xlb.fields import field  # noqa: E402
from adjointgen.xlb.user import register  # noqa: E402

POROSITY = "porosity"
WALL_DISTANCE = "wall_distance"


@register
class PorousBGK(Collision):
    """BGK with partial bounce-back (Walsh, Burwinkle & Saar 2009) weighted by the per-cell design
    field ``porosity`` (0 fluid, 1 solid); see the module docstring for the model and the choice."""

    fields = (POROSITY,)

    @Operator.register_backend(ComputeBackend.JAX)
    def jax_implementation(self, f, feq, rho, u, omega):
        # not jitted on purpose: the field may be a value traced by jax.vjp (see bound_fields)
        gamma = _bound(self, POROSITY)
        opp = np.asarray(self.velocity_set._opp_indices)
        collided = f - self.compute_dtype(omega) * (f - feq)
        return (1.0 - gamma) * collided + gamma * f[opp, ...]

    def _construct_warp(self):
        _opp = self.velocity_set.opp_indices
        _one = self.compute_dtype(1.0)
        porosity = field(POROSITY, self.compute_dtype)

        @wp.func
        def functional(f: Any, feq: Any, rho: Any, u: Any, omega: Any):
            gamma = porosity()
            fout = f - self.compute_dtype(omega) * (f - feq)
            for l in range(self.velocity_set.q):
                fout[l] = (_one - gamma) * fout[l] + gamma * f[_opp[l]]
            return fout

        return functional, None


@register
class BouzidiBounceBackBC(BoundaryCondition):
    """Interpolated bounce-back (Bouzidi, Firdaouss & Lallemand 2001, Physics of Fluids 13), linear
    form, for walls between lattice nodes. Placed like XLB's ``HalfwayBounceBackBC`` (``indices``:
    the solid cells of a body, or boundary cells of the domain), it fills each missing population
    ``f_l`` of a fluid cell ``x`` from the link's wall distance ``q``: the fraction of the link
    from ``x`` towards its solid neighbour ``x - c_l`` at which the wall lies, the design field
    ``wall_distance`` of shape ``(q, nx, ny[, nz])``, read at ``[l, x]``. With ``o`` the opposite
    direction and ``*`` post-collision values (``f_pre`` in XLB's functional):

        q <  1/2:  f_l(x) = 2q f*_o(x) + (1 - 2q) f*_o(x + c_l)
        q >= 1/2:  f_l(x) = f*_o(x) / (2q) + (2q - 1) / (2q) f*_l(x)

    ``f*_o(x + c_l)`` is what the pull step has just streamed into ``f_o(x)`` (``f_post``), so
    the wall needs no read beyond its own cell. Where ``x + c_l`` is itself solid (a gap one cell
    wide) the link falls back to halfway bounce-back. ``q = 1/2`` is halfway bounce-back exactly,
    and the field's default, so XLB's own Warp stepper (which has no per-cell inputs) runs this
    wall as ``HalfwayBounceBackBC``. The two branches meet at q = 1/2, so the step is continuous
    in every link's q, and moving a wall changes the flow continuously as long as no cell
    changes sides (fluid to solid or back: a change of masks, where the flow jumps); the
    gradients are with respect to every link's q (zero on links that are not missing).

    The far branch divides by ``2q`` only where ``q >= 1/2`` (elsewhere by 2), so a distance of 0
    on a link that is not missing (a field left unset there) gives neither an infinity nor a NaN
    gradient."""

    fields = (WALL_DISTANCE,)

    def __init__(self, velocity_set=None, precision_policy=None, compute_backend=None, indices=None, mesh_vertices=None):
        super().__init__(ImplementationStep.STREAMING, velocity_set, precision_policy, compute_backend, indices, mesh_vertices)
        self.needs_padding = True  # as XLB's halfway wall: the body's cells mark their fluid neighbours

    @Operator.register_backend(ComputeBackend.JAX)
    def jax_implementation(self, f_pre, f_post, bc_mask, missing_mask):
        # not jitted on purpose: the field may be a value traced by jax.vjp (see bound_fields)
        import jax.numpy as jnp

        q = _bound(self, WALL_DISTANCE)
        opp = np.asarray(self.velocity_set._opp_indices)
        missing = jnp.logical_and(missing_mask, bc_mask == self.id)
        toward, behind, away = f_pre[opp], f_post[opp], f_pre
        far_q = jnp.where(q >= 0.5, q, 1.0)
        near = jnp.where(missing_mask[opp], toward, 2.0 * q * toward + (1.0 - 2.0 * q) * behind)
        far = (toward + (2.0 * far_q - 1.0) * away) / (2.0 * far_q)
        return jnp.where(missing, jnp.where(q < 0.5, near, far), f_post)

    def _construct_warp(self):
        _opp = self.velocity_set.opp_indices
        _half, _one, _two = self.compute_dtype(0.5), self.compute_dtype(1.0), self.compute_dtype(2.0)
        wall_distance = field(WALL_DISTANCE, self.compute_dtype, components=self.velocity_set.q, default=0.5,
                              low=0.0, high=1.0)

        @wp.func
        def functional(index: Any, timestep: Any, missing_mask: Any, f_0: Any, f_1: Any, f_pre: Any, f_post: Any):
            _f = f_post
            for l in range(self.velocity_set.q):
                if missing_mask[l] == wp.uint8(1):
                    q = wall_distance(l)
                    toward = f_pre[_opp[l]]
                    far_q = _one
                    if q >= _half:
                        far_q = q
                    value = (toward + (_two * far_q - _one) * f_pre[l]) / (_two * far_q)
                    if q < _half:
                        value = toward
                        if missing_mask[_opp[l]] == wp.uint8(0):
                            value = _two * q * toward + (_one - _two * q) * f_post[_opp[l]]
                    _f[l] = value
            return _f

        return functional, None


def _bound(operator, name: str):
    values = getattr(operator, "_bound_fields", None) or {}
    if name not in values:
        raise ConfigurationError(
            f"{type(operator).__name__}'s JAX implementation reads the field {name!r}: run it inside "
            f"adjointgen.xlb.design.bound_fields(collision, {name}=...) or through adjointgen.xlb.design.jax_step")
    return values[name]


@contextlib.contextmanager
def bound_fields(operator, **values):
    """Within the block, ``operator``'s JAX implementation reads these field values (JAX arrays in
    XLB's JAX layout, ``(1, nx, ny[, nz])``; traced values are fine, nothing is cached)."""
    missing = set(getattr(operator, "fields", ())) - set(values)
    if missing:
        raise ConfigurationError(f"{type(operator).__name__} needs the field(s) {', '.join(sorted(missing))}")
    previous = getattr(operator, "_bound_fields", None)
    operator._bound_fields = dict(values)
    try:
        yield operator
    finally:
        operator._bound_fields = previous


def jax_step(stepper, f_0, f_1, bc_mask, missing_mask, omega, timestep, fields: dict):
    """One step of XLB's JAX ``stepper`` whose collision or boundary conditions read design
    ``fields`` ({name: JAX array, ``(components, nx, ny[, nz])``}); returns XLB's ``(f_0, f_1)``. It runs the stepper's pull step without
    XLB's ``jax.jit`` (whose cache, keyed on the stepper object, would keep the first field
    values it saw), so the fields can be traced (``jax.vjp``) and changed between calls."""
    pull = type(stepper).jax_implementation_pull
    readers = [op for op in (stepper.collision, *stepper.boundary_conditions) if getattr(op, "fields", ())]
    with contextlib.ExitStack() as stack:
        for operator in readers:
            stack.enter_context(bound_fields(operator, **{name: fields[name] for name in operator.fields}))
        return pull.__wrapped__(stepper, f_0, f_1, bc_mask, missing_mask, omega, timestep)
