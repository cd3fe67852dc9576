"""The JAX face of a generated step: XLB's call, ``(f_0, f_1, bc_mask, missing_mask, omega) ->
(f_0, f_new)``, as a JAX function whose forward launches the generated Warp forward kernel and
whose VJP launches the generated adjoint kernels (through Warp's ``jax_callable``, inside a
``jax.custom_vjp``). It works under ``jax.jit``, ``jax.lax.scan`` and ``jax.checkpoint``, on the
CPU and on CUDA devices (JAX chooses from where the arrays live).

Guarantees: the inputs are never modified (JAX semantics; the kernels write into new buffers);
the backward pass needs only the step's inputs, which JAX keeps anyway, so a step stores nothing
extra; ``omega`` is differentiable (a float or a 0-d/1-element array); ``bc_mask`` and
``missing_mask`` are not (their cotangents are zero). Arrays use the Warp layout, ``(q, nx, ny,
nz)`` with ``nz = 1`` in 2D (XLB's JAX backend drops that axis in 2D).
"""
# (no ``from __future__ import annotations``: jax_callable reads the callables' annotations,
# which name local Warp types)


import numpy as np
import warp as wp


def jax_step(stepper, timestep: int = 0):
    """A JAX function for the XLB Warp ``stepper`` (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from adjointgen.runtime.step import differentiable

    step = differentiable(stepper)
    store, compute = step.store_dtype, step.compute_dtype
    state_type = wp.array4d(dtype=store)

    # the forward writes the new state into f_1's buffer (kept cells keep their old content there)
    # and, for conditions that keep data in f_0 (ZouHe, ...), into f_0's: those are in-out, so JAX
    # gives the callable copies (or buffers it no longer needs), never the caller's arrays
    writes_f_0 = step.manifest.writes_f_0

    def forward(f_0: state_type, f_1: state_type, bc_mask: wp.array4d(dtype=wp.uint8),
                missing_mask: wp.array4d(dtype=wp.bool), omega: wp.array(dtype=compute)):
        step.forward(f_0, f_1, bc_mask, missing_mask, float(omega.numpy()[0]), timestep)

    def backward(f_0: state_type, f_1: state_type, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: wp.array(dtype=compute),
                 adj_f_0: state_type, adj_f_1: state_type, adj_omega: wp.array(dtype=compute)):
        adj_omega.zero_()
        step.adjoint(f_0, f_1, bc_mask, missing_mask, float(omega.numpy()[0]), timestep, adj_f_0, adj_f_1, adj_omega)

    forward_call = wp.jax_callable(forward, num_outputs=2 if writes_f_0 else 1,
                                   in_out_argnames=["f_0", "f_1"] if writes_f_0 else ["f_1"],
                                   graph_mode=wp.JaxCallableGraphMode.NONE)
    backward_call = wp.jax_callable(backward, num_outputs=3, in_out_argnames=["adj_f_0", "adj_f_1"], output_dims={"adj_omega": (1,)},
                                    graph_mode=wp.JaxCallableGraphMode.NONE)
    compute_dtype = jnp.float64 if compute == wp.float64 else jnp.float32

    def _omega(omega):
        return jnp.reshape(jnp.asarray(omega, dtype=compute_dtype), (1,))

    @jax.custom_vjp
    def apply(f_0, f_1, bc_mask, missing_mask, omega):
        outputs = forward_call(f_0, f_1, bc_mask, missing_mask, _omega(omega))
        return tuple(outputs) if writes_f_0 else (f_0, outputs[0])  # f_0 untouched: passed through

    def apply_fwd(f_0, f_1, bc_mask, missing_mask, omega):
        return apply(f_0, f_1, bc_mask, missing_mask, omega), (f_0, f_1, bc_mask, missing_mask, omega)

    def apply_bwd(residuals, cotangents):
        f_0, f_1, bc_mask, missing_mask, omega = residuals
        adj_f_0, adj_f_1 = cotangents
        adj_f_0, adj_f_1, adj_omega = backward_call(f_0, f_1, bc_mask, missing_mask, _omega(omega),
                                                    adj_f_0.astype(f_0.dtype), adj_f_1.astype(f_1.dtype))
        zero = [np.zeros(m.shape, dtype=jax.dtypes.float0) for m in (bc_mask, missing_mask)]
        adj_omega = jnp.reshape(adj_omega, jnp.shape(omega)).astype(jnp.result_type(omega))
        return adj_f_0, adj_f_1, zero[0], zero[1], adj_omega

    apply.defvjp(apply_fwd, apply_bwd)
    apply.step = step
    apply.writes_f_0 = writes_f_0  # False: the returned f_0 is the input itself
    return apply
