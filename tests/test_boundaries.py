"""Boundary conditions beyond the verify table: solid nodes full of NaN, kinks at special
values, the prescribed-value gradient a user reads back, and XLB steppers told apart by Warp."""

import numpy as np
import pytest

from adjointgen.xlb import compat
from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError
from adjointgen.tools.verify import GeneratedSide, aux_value_gradients, jax_vjp, random_state, relative_error


@pytest.fixture(scope="module")
def obstacle():
    config = Configuration.parse("D2Q9/BGK/FP64FP64/obstacle")
    return GeneratedSide(config, (10, 7))


def test_nan_in_solid_nodes_never_reaches_a_gradient(obstacle):
    solid = obstacle.bc_mask.numpy()[0] == 255
    assert solid.any()
    f0 = random_state(obstacle.config, (10, 7), 0)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape)
    clean_state, clean = obstacle.rollout(f0, 3, cotangent)
    poisoned = f0.copy()
    poisoned[:, solid] = np.nan
    f1 = obstacle.f1_prepared.copy()
    f1[:, solid] = np.nan
    state, gradient = obstacle.rollout(poisoned, 3, cotangent, f1=f1)
    assert np.isfinite(gradient).all() and np.isfinite(obstacle.f1_gradient[:, ~solid]).all()
    assert np.array_equal(gradient[:, ~solid], clean[:, ~solid])
    assert np.array_equal(state[:, ~solid], clean_state[:, ~solid])  # fluid cells never see the NaN


@pytest.mark.parametrize("label", ["D2Q9/KBC/FP64FP64", "D2Q9/SmagorinskyLESBGK/FP64FP64"])
def test_models_with_kinks_at_a_uniform_rest_state(label):
    # at rest the strain is zero (Smagorinsky's square root) and the entropic products vanish
    # (KBC's stabiliser divides by them, guarded by epsilon): gradients stay finite and equal XLB-JAX's
    config = Configuration.parse(label)
    side = GeneratedSide(config, (6, 5))
    weights = np.asarray(side.stepper.velocity_set.w, dtype=np.float64)
    rest = np.broadcast_to(weights.reshape(-1, 1, 1, 1), (len(weights), 6, 5, 1)).copy()
    cotangent = np.random.default_rng(2).standard_normal(rest.shape)
    _, ours = side.rollout(rest, 1, cotangent)
    _, reference, _ = jax_vjp(config, (6, 5), rest, cotangent, 1)
    assert np.isfinite(ours).all()
    assert relative_error(ours, reference) < 1e-12


def test_prescribed_value_gradient_reads_f_1_grad_at_the_condition():
    config = Configuration.parse("D2Q9/BGK/FP64FP64/channel")
    side = GeneratedSide(config, (8, 6))
    f0 = random_state(config, (8, 6), 0)
    cotangent = np.random.default_rng(3).standard_normal(f0.shape)
    totals = aux_value_gradients(side, f0, cotangent, 2)
    import warp as wp

    grad = wp.array(side.f1_gradient)
    inlet, outlet = (bc for bc in side.stepper.boundary_conditions if type(bc).__name__ == "ZouHeBC")
    per_cell = side.step.prescribed_value_gradient(inlet, side.bc_mask, grad)
    assert per_cell.shape == (4,)  # the inlet face without its corners
    assert np.allclose([per_cell.sum(), side.step.prescribed_value_gradient(outlet, side.bc_mask, grad).sum()], totals)
    walls = side.stepper.boundary_conditions[0]
    with pytest.raises(RuntimeArgumentError, match="keep prescribed values in f_1"):
        side.step.prescribed_value_gradient(walls, side.bc_mask, grad)


def test_steppers_with_the_same_ids_but_other_conditions_get_other_warp_kernels():
    from adjointgen.xlb.support import make_stepper

    channel = make_stepper(Configuration.parse("D2Q9/BGK/FP32FP32/channel"), "warp", (8, 6))
    outflow = make_stepper(Configuration.parse("D2Q9/BGK/FP32FP32/outflow"), "warp", (8, 6))
    described = [s.warp_kernel.options["xlb_boundary_conditions"] for s in (channel, outflow)]
    assert described == ["1:HalfwayBounceBackBC,2:ZouHeBC(velocity),3:ZouHeBC(pressure)",
                         "1:HalfwayBounceBackBC,2:ZouHeBC(velocity),3:DoNothingBC"]
    assert compat.key_stepper_kernel(outflow) == described[1]


def test_a_prescribed_profile_gets_one_gradient_per_cell():
    # ZouHe keeps one prescribed value per inlet cell in f_1[0] (a profile is just unequal
    # values): the per-cell gradient must match central differences cell by cell
    config = Configuration.parse("D2Q9/BGK/FP64FP64/channel")
    side = GeneratedSide(config, (8, 6))
    f0 = random_state(config, (8, 6), 0)
    cotangent = np.random.default_rng(4).standard_normal(f0.shape)
    mask = side.bc_mask.numpy()[0]
    inlet = next(bc for bc in side.stepper.boundary_conditions if getattr(bc, "bc_type", None) == "velocity")
    f1 = side.f1_prepared.copy()
    cells = np.argwhere(mask == inlet.id)
    f1[0][mask == inlet.id] *= 1.0 + 0.2 * np.arange(len(cells))  # a profile: 0.02, 0.024, 0.028, ...
    side.rollout(f0, 3, cotangent, f1=f1)
    import warp as wp

    per_cell = side.step.prescribed_value_gradient(inlet, side.bc_mask, wp.array(side.f1_gradient))
    eps = 1e-6
    for n, cell in enumerate(cells):
        shifted = []
        for sign in (1, -1):
            f1_shifted = f1.copy()
            f1_shifted[(0, *cell)] += sign * eps
            shifted.append(side.rollout(f0, 3, f1=f1_shifted)[0])
        finite = np.sum((shifted[0] - shifted[1]) / (2 * eps) * cotangent)
        assert abs(per_cell[n] - finite) <= 1e-7 * max(abs(finite), 1e-3)
