"""Operators of your own, written the way XLB writes its operators, differentiated by adjointgen.

``TRT`` is the two-relaxation-time collision: the symmetric part of the non-equilibrium
populations relaxes with omega, the antisymmetric part with omega_minus, chosen from the "magic"
parameter Lambda = (1/omega - 1/2)(1/omega_minus - 1/2) = 1/4.

``MovingWallBounceBackBC`` is halfway bounce-back off a wall moving with a constant velocity
(Ladd's momentum correction, wall density 1): a missing population becomes the reflected one
plus 6 w_i (c_i . u_wall). The mix ``moving_lid`` uses it as the lid of a cavity whose other
walls are XLB's HalfwayBounceBackBC.

Generate and verify the adjoints against JAX autodiff of the operators' own ``jax_implementation``:

    adjointgen verify --source examples/user_operators.py --config D2Q9/TRT/FP64FP64 --config D3Q19/TRT/FP32FP32
    adjointgen verify --source examples/user_operators.py --config D2Q9/TRT/FP64FP64/moving_lid
    adjointgen build  --source examples/user_operators.py --config D3Q19/TRT/FP32FP32 --out my_generated/

or use it in Python: ``stepper.collision = TRT(...)`` on an XLB Warp stepper before its first
step (or ``adjointgen.xlb.support.make_stepper`` with a ``.../TRT/...`` configuration), then
``adjointgen.differentiable(stepper)``.
"""

from functools import partial
from typing import Any

import adjointgen  # first: lets XLB 0.3.1 import on current Warp (adjointgen.xlb.compat)
import jax.numpy as jnp
import numpy as np
import warp as wp
from jax import jit
from jax import lax
from xlb.compute_backend import ComputeBackend
from xlb.operator import Operator
from xlb.operator.boundary_condition import HalfwayBounceBackBC
from xlb.operator.boundary_condition.boundary_condition import BoundaryCondition, ImplementationStep
from xlb.operator.collision.collision import Collision

MAGIC = 0.25


@adjointgen.register
class TRT(Collision):
    """Two-relaxation-time collision (Ginzburg's TRT) with the magic parameter 1/4."""

    @Operator.register_backend(ComputeBackend.JAX)
    @partial(jit, static_argnums=(0,))
    def jax_implementation(self, f, feq, rho, u, omega):
        opp = np.asarray(self.velocity_set.opp_indices)
        fneq = f - feq
        symmetric = 0.5 * (fneq + fneq[opp])
        antisymmetric = 0.5 * (fneq - fneq[opp])
        omega = self.compute_dtype(omega)
        omega_minus = 1.0 / (MAGIC / (1.0 / omega - 0.5) + 0.5)
        return f - omega * symmetric - omega_minus * antisymmetric

    def _construct_warp(self):
        _opp = self.velocity_set.opp_indices
        _f_vec = wp.vec(self.velocity_set.q, dtype=self.compute_dtype)
        _magic = self.compute_dtype(MAGIC)
        _half = self.compute_dtype(0.5)
        _one = self.compute_dtype(1.0)

        @wp.func
        def functional(f: Any, feq: Any, rho: Any, u: Any, omega: Any):
            _omega = self.compute_dtype(omega)
            omega_minus = _one / (_magic / (_one / _omega - _half) + _half)
            fout = _f_vec()
            for l in range(self.velocity_set.q):
                fneq = f[l] - feq[l]
                fneq_opp = f[_opp[l]] - feq[_opp[l]]
                fout[l] = f[l] - _omega * _half * (fneq + fneq_opp) - omega_minus * _half * (fneq - fneq_opp)
            return fout

        return functional, None


@adjointgen.register
class MovingWallBounceBackBC(BoundaryCondition):
    """Halfway bounce-back off a wall moving with ``wall_velocity`` (Ladd, wall density 1)."""

    def __init__(self, wall_velocity, velocity_set=None, precision_policy=None, compute_backend=None, indices=None):
        self.wall_velocity = tuple(float(v) for v in wall_velocity)
        super().__init__(ImplementationStep.STREAMING, velocity_set, precision_policy, compute_backend, indices)
        self.needs_padding = True

    def _shift(self) -> np.ndarray:
        """6 w_i (c_i . u_wall) per direction i."""
        c = np.asarray(self.velocity_set._c, dtype=np.float64)  # (d, q)
        w = np.asarray(self.velocity_set._w, dtype=np.float64)
        return 6.0 * w * (np.asarray(self.wall_velocity) @ c)

    @Operator.register_backend(ComputeBackend.JAX)
    @partial(jit, static_argnums=(0,))
    def jax_implementation(self, f_pre, f_post, bc_mask, missing_mask):
        boundary = bc_mask == self.id
        shape = (self.velocity_set.q,) + boundary.shape[1:]
        boundary = lax.broadcast_in_dim(boundary, shape, tuple(range(self.velocity_set.d + 1)))
        shift = jnp.asarray(self._shift(), dtype=f_post.dtype).reshape((-1,) + (1,) * (f_post.ndim - 1))
        reflected = f_pre[np.asarray(self.velocity_set.opp_indices)] + shift
        return jnp.where(jnp.logical_and(missing_mask, boundary), reflected, f_post)

    def _construct_warp(self):
        _opp = self.velocity_set.opp_indices
        _shift = wp.vec(self.velocity_set.q, dtype=self.compute_dtype)(*(self.compute_dtype(v) for v in self._shift()))

        @wp.func
        def functional(index: Any, timestep: Any, missing_mask: Any, f_0: Any, f_1: Any, f_pre: Any, f_post: Any):
            _f = f_post
            for l in range(self.velocity_set.q):
                if missing_mask[l] == wp.uint8(1):
                    _f[l] = f_pre[_opp[l]] + _shift[l]
            return _f

        return functional, self._construct_kernel(functional)


LID_VELOCITY = 0.05


@adjointgen.register_mix("moving_lid")
def moving_lid(grid, dim):
    """A cavity: the top wall moves along x (MovingWallBounceBackBC), the others are at rest."""
    def cells(faces):
        return {p for face in faces for p in zip(*(list(axis) for axis in face))}

    lid = cells([grid.bounding_box_indices(remove_edges=True)["top"]])  # the top face without its edges
    walls = cells(grid.bounding_box_indices().values()) - lid

    def indices(points):
        return np.array(sorted(points)).T.tolist()

    velocity = (LID_VELOCITY,) + (0.0,) * (dim - 1)
    return [HalfwayBounceBackBC(indices=indices(walls)), MovingWallBounceBackBC(velocity, indices=indices(lid))]
