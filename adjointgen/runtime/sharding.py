"""A step split across devices along the first grid axis, with JAX's own sharding as the engine.

:func:`sharded_step` turns a per-device step with XLB's call ``(f_0, f_1, bc_mask, missing_mask,
omega) -> (f_0, f_new)`` (the JAX face of a generated step, :func:`adjointgen.runtime.jax_face.jax_step`,
or any JAX step such as XLB's own JAX stepper) into one on arrays sharded along the grid's x axis
(array axis 1) over a one-dimensional device mesh, with ``jax.shard_map``:

1. each device pads its slab with ``halo`` planes from each neighbour, exchanged with
   ``jax.lax.ppermute`` (periodic in x: the last device's right neighbour is the first);
2. the step runs on the padded slab; its own wrap-around in x only touches the halo planes, whose
   results are dropped;
3. the slab is cut back out.

Differentiating this needs nothing more: JAX transposes the slicing into padding and each
``ppermute`` into the reverse permutation, so the adjoint the step scatters into a halo plane
travels back to the device that owns the plane and is added there (the transposed exchange).
``omega`` is replicated and cast to device-varying before the step, so its gradient (one part per
device) is summed over the devices by the cast's transpose. One halo plane
suffices for velocity sets whose speeds are at most 1 per axis (D2Q9, D3Q19, D3Q27). The masks
are exchanged like the state (they are inputs of every step; cheap next to the populations).
"""

from __future__ import annotations


def _halo_exchange(x, axis_name: str, devices: int, halo: int):
    """``x`` padded along axis 1 with ``halo`` planes from the left and right neighbours."""
    import jax
    import jax.numpy as jnp

    to_right = [(i, (i + 1) % devices) for i in range(devices)]
    to_left = [(i, (i - 1) % devices) for i in range(devices)]
    from_left = jax.lax.ppermute(x[:, -halo:], axis_name, to_right)  # my left halo: left neighbour's last planes
    from_right = jax.lax.ppermute(x[:, :halo], axis_name, to_left)
    return jnp.concatenate([from_left, x, from_right], axis=1)


def sharded_step(step, mesh, axis_name: str = "x", halo: int = 1, writes_f_0: bool = True):
    """``step`` run on slabs of the grid, one per device of ``mesh`` (see the module docstring).

    ``writes_f_0=False`` says that the step returns its ``f_0`` unchanged (a generated step whose
    ``manifest.writes_f_0`` is False; :func:`~adjointgen.runtime.jax_face.jax_step` returns it as
    the step's ``writes_f_0``): the input slab is then passed through instead of cut out of the
    step's padded result. True is right for every step, False only saves that copy."""
    import jax
    from jax.sharding import PartitionSpec as P

    devices = mesh.shape[axis_name]

    def local(f_0, f_1, bc_mask, missing_mask, omega):
        padded = [_halo_exchange(a, axis_name, devices, halo) for a in (f_0, f_1, bc_mask, missing_mask)]
        # omega is the same on every device, its gradient a different part on each: mark it as
        # varying, whose transpose sums the parts over the devices
        omega = jax.lax.pcast(omega, axis_name, to="varying")
        f_0_out, f_new = step(*padded, omega)
        if not writes_f_0:  # the step leaves f_0 alone: no copy of it back
            return f_0, f_new[:, halo:-halo]
        return f_0_out[:, halo:-halo], f_new[:, halo:-halo]

    slab = P(None, axis_name)
    return jax.shard_map(local, mesh=mesh, in_specs=(slab, slab, slab, slab, P()), out_specs=(slab, slab))
