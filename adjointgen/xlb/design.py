"""Design models: XLB-style operators whose behaviour a per-cell design field sets.

:class:`PorousBGK` is a gray (porous) lattice Boltzmann collision for topology optimization: a
field ``porosity`` gamma in [0, 1] per cell, 0 fluid, 1 solid, intermediate values porous.

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
from xlb.operator.collision.collision import Collision  # noqa: E402

from adjointgen.errors import ConfigurationError  # noqa: E402
from adjointgen.xlb.fields import field  # noqa: E402
from adjointgen.xlb.user import register  # noqa: E402

POROSITY = "porosity"


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
    """One step of XLB's JAX ``stepper`` whose collision reads design ``fields`` ({name: JAX array,
    ``(1, nx, ny[, nz])``}); returns XLB's ``(f_0, f_1)``. It runs the stepper's pull step without
    XLB's ``jax.jit`` (whose cache, keyed on the stepper object, would keep the first field
    values it saw), so the fields can be traced (``jax.vjp``) and changed between calls."""
    pull = type(stepper).jax_implementation_pull
    with bound_fields(stepper.collision, **fields):
        return pull.__wrapped__(stepper, f_0, f_1, bc_mask, missing_mask, omega, timestep)
