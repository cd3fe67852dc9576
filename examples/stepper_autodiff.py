"""XLB issue #161, corrected: gradients through one stepper step, JAX vs Warp, side by side.

The original script unpacked the Warp stepper's return as ``f_out, f_in = stepper(...)`` and the
JAX one as ``f_out, _ = stepper(...)``. XLB steppers return ``(f_0, f_1)``, the input buffer
first and the new state second, so both sides computed their loss from the *input* state and the
"zero gradient through the stepper" was the gradient of an untouched buffer.

This version takes the new state from the second return value and compares, for D2Q9 and D3Q19
(FP32, periodic, BGK), the gradient of ``sum(rho**2)`` after one step with respect to the initial
populations from

- XLB's JAX backend (``jax.value_and_grad``), the reference;
- XLB's Warp stepper under Warp's own ``wp.Tape`` (right in 2D, silently wrong in 3D: loops of
  more than ``wp.config.max_unroll`` iterations are not replayed in the backward pass);
- ``adjointgen.differentiable(stepper)`` under ``wp.Tape`` (generated adjoint kernels).

Usage: python examples/stepper_autodiff.py [--grid-2d 32] [--grid-3d 16]
"""

from __future__ import annotations

import argparse

import numpy as np

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper

OMEGA = 1.8


def jax_gradient(config, shape, f0, weights=None):
    import jax
    import jax.numpy as jnp

    stepper = make_stepper(config, "jax", shape)
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()

    def loss(f_in):
        _, f_new = stepper(f_in, f_1, bc_mask, missing_mask, OMEGA, 0)  # the new state is the SECOND value
        if weights is not None:  # a loss that also sees the collision (BGK conserves rho)
            return jnp.sum(jnp.asarray(weights.reshape(f_new.shape)) * f_new)
        rho = jnp.sum(f_new, axis=0)
        return jnp.sum(rho**2)

    value, grad = jax.value_and_grad(loss)(jnp.asarray(f0.reshape((f0.shape[0], *shape))))
    return float(value), np.asarray(grad).reshape(f0.shape)


def warp_gradient(config, shape, f0, use_adjointgen, weights=None):
    import warp as wp

    stepper = make_stepper(config, "warp", shape)
    _, _, bc_mask, missing_mask = stepper.prepare_fields()
    step = adjointgen.differentiable(stepper) if use_adjointgen else stepper

    # The loss kernels avoid loops over q: a loop of more than wp.config.max_unroll (16) iterations
    # is not replayed by Warp's tape, which would silently zero the gradient of the loss itself.
    @wp.kernel
    def density(f: wp.array4d(dtype=wp.float32), rho: wp.array3d(dtype=wp.float32)):
        l, i, j, k = wp.tid()
        wp.atomic_add(rho, i, j, k, f[l, i, j, k])

    @wp.kernel
    def weighted_sum(f: wp.array4d(dtype=wp.float32), c: wp.array4d(dtype=wp.float32), loss: wp.array(dtype=wp.float32)):
        l, i, j, k = wp.tid()
        wp.atomic_add(loss, 0, c[l, i, j, k] * f[l, i, j, k])

    @wp.kernel
    def sum_of_squares(rho: wp.array3d(dtype=wp.float32), loss: wp.array(dtype=wp.float32)):
        i, j, k = wp.tid()
        wp.atomic_add(loss, 0, rho[i, j, k] * rho[i, j, k])

    f_in = wp.array(f0, dtype=wp.float32, requires_grad=True)
    f_out = wp.zeros_like(f_in, requires_grad=True)
    rho = wp.zeros(f0.shape[1:], dtype=wp.float32, requires_grad=True)
    loss = wp.zeros(1, dtype=wp.float32, requires_grad=True)
    tape = wp.Tape()
    with tape:
        f_in, f_out = step(f_in, f_out, bc_mask, missing_mask, OMEGA, 0)  # f_out is the new state
        if weights is None:
            wp.launch(density, dim=f_out.shape, inputs=[f_out, rho])
            wp.launch(sum_of_squares, dim=rho.shape, inputs=[rho, loss])
        else:
            wp.launch(weighted_sum, dim=f_out.shape, inputs=[f_out, wp.array(weights, dtype=wp.float32), loss])
    tape.backward(loss=loss)
    return float(loss.numpy()[0]), f_in.grad.numpy().astype(np.float64)


def initial_state(config, shape, seed=0):
    from adjointgen.tools.verify import random_state

    return random_state(config, shape, seed).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-2d", type=int, default=32)
    parser.add_argument("--grid-3d", type=int, default=16)
    args = parser.parse_args(argv)

    print()
    print("=" * 78)
    print("XLB STEPPER AUTODIFF TEST (corrected: differentiates the new state)")
    print("=" * 78)
    results = {}
    for config, shape in ((Configuration.parse("D2Q9/BGK/FP32FP32"), (args.grid_2d,) * 2),
                          (Configuration.parse("D3Q19/BGK/FP32FP32"), (args.grid_3d,) * 3)):
        f0 = initial_state(config, shape)
        weights = np.random.default_rng(1).standard_normal(f0.shape).astype(np.float32)
        print()
        print("-" * 78)
        print(f" {config.label}, grid {'x'.join(map(str, shape))}, omega {OMEGA}, periodic")
        print("-" * 78)
        print(f" {'Metric':<34} {'JAX (reference)':>15} {'Warp tape':>12} {'adjointgen':>12}")
        for label, w in (("sum(rho**2)", None), ("sum(c * f_new), random c", weights)):
            jax_loss, jax_grad = jax_gradient(config, shape, f0, w)
            tape_loss, tape_grad = warp_gradient(config, shape, f0, use_adjointgen=False, weights=w)
            gen_loss, gen_grad = warp_gradient(config, shape, f0, use_adjointgen=True, weights=w)
            norm = np.linalg.norm(jax_grad)
            tape_err = np.linalg.norm(tape_grad - jax_grad) / norm
            gen_err = np.linalg.norm(gen_grad - jax_grad) / norm
            results[(config.velocity_set, label)] = gen_err
            print(f" loss = {label}")
            print(f"   {'Loss value':<32} {jax_loss:>15.4f} {tape_loss:>12.4f} {gen_loss:>12.4f}")
            print(f"   {'Gradient norm (through stepper)':<32} {norm:>15.6f} {np.linalg.norm(tape_grad):>12.6f} {np.linalg.norm(gen_grad):>12.6f}")
            print(f"   {'Relative difference to JAX':<32} {'-':>15} {tape_err:>12.2e} {gen_err:>12.2e}")
    print()
    print("=" * 78)
    print("SUMMARY")
    print("=" * 78)
    for (name, label), err in results.items():
        print(f" {name}, loss {label}: adjointgen gradient vs JAX, relative difference {err:.2e} --> {'OK' if err < 1e-5 else 'MISMATCH'}")
    print()
    return 0 if all(err < 1e-5 for err in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
