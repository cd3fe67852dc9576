"""A sharded rollout's step whose interior cells compute while the halos travel (issue 18).

In the plain sharded step (:func:`~adjointgen.runtime.sharding.sharded_rollout`) the forward waits
for the halo exchange: the crossing populations travel, are written into the halo planes, and then
one launch computes the slab. Here the step is three calls that XLA sees separately:

1. the interior: the forward over the padded slab with a mask whose edge planes (1 and n-2) are
   kept too (255), so it computes planes 2 to n-3, which read no halo; it does not depend on the
   exchange, and XLA may run the ``ppermute`` of the edge planes' crossing populations meanwhile;
2. the halos written (in place, as before), then the forward over two views of three planes each,
   ``[0:3]`` and ``[n-3:n]``, with a mask that is kept everywhere but the edge planes: only the
   edge planes are computed, from the fresh halos, into the same output array;
3. in the reverse, the other way round: the fresh adjoint of the edge planes first, into a new
   gradient array (the crossing populations of its halo planes cleared first: what
   ``adjoint_kept`` would give those that no edge cell reads, since their carry is zero), whose
   halo adjoints then travel back while the
   fresh adjoint of the interior runs into the same array, followed by ``adjoint_kept`` with the
   real mask over the whole slab and the returned halo adjoints added onto the edge planes.

Every cell that is not kept is computed by exactly one launch, and a fresh adjoint writes (never
adds) the elements its cell read, one writer each; kept cells (the interior launch's and the edge
views' artificial ones among them) write nothing in either kernel. So the states and the state
gradients are the one-launch path's bit for bit (``tests/test_sharding.py``); omega's gradient is
the sum of the two launches' sums (to rounding).

Which steps: those with a carried step (:func:`~adjointgen.runtime.jax_face.carries`) that update
nothing in place and leave no slots to gather (a gather adds the slots of readers on both sides of
an edge plane to its elements, which the split would have to order); :func:`refusal` says why
not. On one device the ``ppermute`` is a copy to itself, so the split only adds launches; whether
it pays needs several GPUs (``benchmarks/NOTES.md``).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import warp as wp

from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime.halos import Exchange, clear_halos, launch_over_plane, put_halos
from adjointgen.runtime.jax_face import CallTypes, captured, known_omega, with_kept_cells


def refusal(face) -> str | None:
    """Why the step of the JAX face ``face`` (:func:`~adjointgen.runtime.jax_face.jax_step`) cannot
    run overlapped; None where it can."""
    manifest = face.step.manifest
    if face.carried is None:
        return "its module has no fresh adjoint that chains through a carry (or it reads design fields)"
    if manifest.writes_f_0:
        return "it updates f_0 in place (a boundary condition keeps data there)"
    if manifest.slot_count:
        return "its adjoint leaves reads in slots that a gather adds up across the edge planes"
    return None


@dataclass(frozen=True)
class EdgeMasks:
    """The two masks of an overlapped step, made once per rollout from a device's padded ``bc_mask``:
    ``interior`` keeps the edge planes (1 and n-2) too, ``edges`` keeps every plane but them."""

    interior: Any
    edges: Any

    @classmethod
    def of(cls, padded):
        import jax.numpy as jnp

        edge_planes = (slice(1, 2), slice(-2, -1))
        interior, edges = padded, jnp.full_like(padded, 255)
        for planes in edge_planes:
            interior = interior.at[:, planes].set(255)
            edges = edges.at[:, planes].set(padded[:, planes])
        return cls(interior, edges)


def edge_views(planes: int) -> tuple[slice, slice]:
    """The two three-plane windows of a padded slab of ``planes`` planes that hold an edge plane in
    their middle, with both of its neighbours (a launch over one wraps within it)."""
    return slice(0, 3), slice(planes - 3, planes)


def overlapped_step(face, exchange: Exchange):
    """``run(f_0, f_1, bc_mask, masks, missing_mask, omega) -> (f_0, f_new)`` on a device's padded
    slab (``masks``: :class:`EdgeMasks` of ``bc_mask``), with the halos of ``f_0`` refreshed by
    ``exchange`` inside the step (see the module docstring); its VJP is the carried step's (the
    cotangent of the returned ``f_0`` is the carry)."""
    steps: dict = {}

    def run(f_0, f_1, bc_mask, masks: EdgeMasks, missing_mask, omega):
        if f_0.shape[1] < 5:  # else an edge view's other plane is an edge plane too, computed with its wrap
            raise RuntimeArgumentError(f"overlap=True needs slabs of at least 3 planes along x; a device holds "
                                       f"{f_0.shape[1] - 2}")
        fixed = known_omega(omega)
        key = (fixed, captured())
        if key not in steps:
            steps[key] = _custom_step(_Calls(face.step, face.timestep, fixed), exchange, fixed)
        return steps[key](f_0, f_1, bc_mask, masks.interior, masks.edges, missing_mask, omega)

    return run


class _Calls:
    """The Warp side of an overlapped step, as JAX calls, for one omega (``fixed``: its value where
    built in, else None: read from its array): ``interior``, ``edges`` (forward), ``adjoint_edges``,
    ``adjoint_interior`` (reverse)."""

    def __init__(self, step, timestep: int, fixed: float | None):
        self.types = t = CallTypes(step, fixed)
        state, mask, missing, omega_type = t.state, wp.array4d(dtype=wp.uint8), wp.array4d(dtype=wp.bool), t.omega
        indices = wp.array(dtype=wp.int32)
        on_device = t.on_device(fixed)

        def interior(f_0: state, f_1: state, bc_mask: mask, interior_mask: mask, missing_mask: missing,
                     omega: omega_type, f_new: state):
            step.forward(f_0, with_kept_cells(f_1, f_new, bc_mask), interior_mask, missing_mask,
                         t.omega_value(omega, fixed), timestep, device_omega=on_device)

        def edges(f_0: state, f_new: state, left: state, right: state, rightward: indices, leftward: indices,
                  edge_mask: mask, missing_mask: missing, omega: omega_type):
            launch_over_plane(put_halos, f_0, left, right, rightward, leftward)
            for planes in edge_views(f_0.shape[1]):
                step.forward(f_0[:, planes], f_new[:, planes], edge_mask[:, planes], missing_mask[:, planes],
                             t.omega_value(omega, fixed), timestep, device_omega=on_device)

        def adjoint_edges(f_0: state, edge_mask: mask, missing_mask: missing, omega: omega_type, adj_f_new: state,
                          rightward: indices, leftward: indices, adj_f_0: state, adj_omega: omega_type):
            adj_omega.zero_()
            # the halos' elements that travel back and that no edge cell reads (its cell is kept):
            # zero, as adjoint_kept leaves them (the others adjoint_kept writes over afterwards)
            launch_over_plane(clear_halos, adj_f_0, rightward, leftward)
            for planes in edge_views(f_0.shape[1]):
                step.adjoint(f_0[:, planes], f_0[:, planes], edge_mask[:, planes], missing_mask[:, planes],
                             t.omega_value(omega, fixed), timestep, adj_f_0[:, planes], adj_f_new[:, planes],
                             t.wanted_adj_omega(adj_omega, fixed), fresh=True, device_omega=on_device)

        def adjoint_interior(f_0: state, bc_mask: mask, interior_mask: mask, missing_mask: missing, omega: omega_type,
                             adj_f_new: state, left_sent: state, right_sent: state, adj_f_0: state, carry: state,
                             adj_omega: omega_type):
            adj_omega.zero_()
            step.adjoint(f_0, f_0, interior_mask, missing_mask, t.omega_value(omega, fixed), timestep, adj_f_0, adj_f_new,
                         t.wanted_adj_omega(adj_omega, fixed), fresh=True, device_omega=on_device)
            step.kept_launch(f_0, bc_mask, adj_f_0, adj_f_new, carry).launch()  # the real mask, every cell

        def call(function, outputs: int, in_out=()):
            return wp.jax_callable(function, num_outputs=outputs, in_out_argnames=list(in_out),
                                   graph_mode=t.mode)

        self.interior = call(interior, 1)
        self.edges = call(edges, 2, ("f_0", "f_new"))
        self.adjoint_edges = call(adjoint_edges, 2)
        self.adjoint_interior = call(adjoint_interior, 3, ("adj_f_0", "carry"))


def _custom_step(calls: _Calls, exchange: Exchange, fixed: float | None):
    """The overlapped step as a ``jax.custom_vjp`` over ``calls`` (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    t = calls.types
    rightward, leftward = exchange.indices

    @jax.custom_vjp
    def apply(f_0, f_1, bc_mask, interior_mask, edge_mask, missing_mask, omega):
        w = t.omega_array(omega)
        left, right = exchange.receive(f_0)  # in flight while the interior computes
        f_new = calls.interior(f_0, f_1, bc_mask, interior_mask, missing_mask, w, output_dims={"f_new": tuple(f_0.shape)})[0]
        f_0, f_new = calls.edges(f_0, f_new, left, right, rightward, leftward, edge_mask, missing_mask, w)
        return f_0, f_new

    def apply_fwd(f_0, f_1, bc_mask, interior_mask, edge_mask, missing_mask, omega):
        out = apply(f_0, f_1, bc_mask, interior_mask, edge_mask, missing_mask, omega)
        return out, (out[0], bc_mask, interior_mask, edge_mask, missing_mask, omega)  # f_0 with its halos

    def apply_bwd(residuals, cotangents):
        f_0, bc_mask, interior_mask, edge_mask, missing_mask, omega = residuals
        carry, adj_f_new = (c.astype(f_0.dtype) for c in cotangents)
        w = t.omega_array(omega)
        adj_f_0, adj_omega_edges = calls.adjoint_edges(f_0, edge_mask, missing_mask, w, adj_f_new, rightward, leftward,
                                                       output_dims={"adj_f_0": tuple(f_0.shape), "adj_omega": (1,)})
        pieces = exchange.halo_pieces(adj_f_0)
        back = exchange.send_back_pieces(pieces)  # in flight while the interior's adjoint runs
        # (the pieces go to the interior's call too, unread: XLA then slices them before that call
        # updates adj_f_0 in place, where it otherwise copies adj_f_0 for them)
        adj_f_0, carry, adj_omega = calls.adjoint_interior(f_0, bc_mask, interior_mask, missing_mask, w, adj_f_new, *pieces,
                                                           adj_f_0, carry, output_dims={"adj_omega": (1,)})
        adj_f_0 = exchange.return_(adj_f_0, *back)
        if fixed is None:
            adj_omega = jnp.reshape(adj_omega_edges + adj_omega, jnp.shape(omega)).astype(jnp.result_type(omega))
        else:  # built in: nothing differentiates it
            adj_omega = jnp.zeros_like(omega)
        masks = [np.zeros(m.shape, dtype=jax.dtypes.float0) for m in (bc_mask, interior_mask, edge_mask, missing_mask)]
        return (adj_f_0, carry, *masks, adj_omega)

    apply.defvjp(apply_fwd, apply_bwd)
    return apply
