"""The user-facing step: the README's usage, tape accumulation, solid nodes, errors, first use."""

import numpy as np
import pytest
import warp as wp

import adjointgen
from adjointgen.runtime import step as runtime
from adjointgen.config import Configuration
from adjointgen.errors import ConfigurationError, RuntimeArgumentError
from adjointgen.tools.verify import OMEGA, jax_vjp, random_state
from adjointgen.xlb.support import make_stepper

D2Q9_32 = Configuration.parse("D2Q9/BGK/FP32FP32")
D2Q9_64 = Configuration.parse("D2Q9/BGK/FP64FP64")


@wp.kernel
def _density_squared(f: wp.array4d(dtype=wp.float32), loss: wp.array(dtype=wp.float32)):
    i, j, k = wp.tid()
    rho = wp.float32(0.0)
    for l in range(9):
        rho += f[l, i, j, k]
    wp.atomic_add(loss, 0, rho * rho)


def test_readme_usage_matches_jax_grad_of_the_same_loss():
    import jax
    import jax.numpy as jnp

    shape = (8, 6)
    stepper = make_stepper(D2Q9_32, "warp", shape)
    step = adjointgen.differentiable(stepper)
    f_0, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    x = random_state(D2Q9_32, shape, seed=3).astype(np.float32)
    f_0 = wp.array(x, requires_grad=True)
    f_1 = wp.zeros_like(f_0, requires_grad=True)
    loss = wp.zeros(1, dtype=wp.float32, requires_grad=True)
    tape = wp.Tape()
    with tape:
        f_0, f_1 = step(f_0, f_1, bc_mask, missing_mask, OMEGA, 0)
        wp.launch(_density_squared, dim=f_1.shape[1:], inputs=[f_1, loss])
    tape.backward(loss=loss)

    jax_stepper = make_stepper(D2Q9_32, "jax", shape)
    _, j1, jbc, jmm = jax_stepper.prepare_fields()

    def jax_loss(f):
        _, new = jax_stepper(f, j1, jbc, jmm, OMEGA, 0)
        return jnp.sum(jnp.sum(new, axis=0) ** 2)

    expected = np.asarray(jax.grad(jax_loss)(jnp.asarray(x.reshape(9, *shape)))).reshape(x.shape)
    got = f_0.grad.numpy()
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) < 1e-5


def test_solid_nodes_keep_their_output_and_garbage_there_never_reaches_gradients():
    """A 3x3 solid block with NaN in the centre cell: no fluid cell pulls from the centre, so the
    forward is finite and so must every gradient be (select semantics), and the gradient still
    matches central differences of the same step."""
    shape = (9, 9)
    stepper = make_stepper(D2Q9_64, "warp", shape)
    step = adjointgen.differentiable(stepper)
    _, _, bc_mask, missing_mask = stepper.prepare_fields()
    mask = bc_mask.numpy()
    mask[0, 3:6, 3:6, 0] = 255
    bc_mask = wp.array(mask, dtype=wp.uint8)
    x = random_state(D2Q9_64, shape, seed=5)
    old = random_state(D2Q9_64, shape, seed=6)
    x[:, 4, 4, 0] = np.nan

    def run(f0, f1_old, cotangent=None, omega=OMEGA):
        a = wp.array(f0, dtype=wp.float64, requires_grad=True)
        b = wp.array(f1_old, dtype=wp.float64, requires_grad=True)
        w = wp.array([omega], dtype=wp.float64, requires_grad=True)
        tape = wp.Tape()
        with tape:
            step(a, b, bc_mask, missing_mask, w, 0)
        if cotangent is None:
            return b.numpy()
        tape.backward(grads={b: wp.array(cotangent, dtype=wp.float64)})
        run.omega_grad = float(w.grad.numpy()[0])
        return b.numpy(), a.grad.numpy(), b.grad.numpy()

    c = np.random.default_rng(7).standard_normal(x.shape)
    out, g0, g1 = run(x, old, c)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(g0)) and np.all(np.isfinite(g1))
    solid = mask[0, :, :, 0] == 255
    assert np.array_equal(out[:, solid], old[:, solid])          # kept
    assert np.array_equal(g1[:, solid], c[:, solid])            # adjoint passes to the old content
    assert np.all(g1[:, ~solid] == 0)                            # overwritten elsewhere
    assert np.all(g0[:, 4, 4, 0] == 0)
    t = np.random.default_rng(8).standard_normal(x.shape) * np.abs(np.nan_to_num(x))
    t[:, 4, 4, 0] = 0
    eps = 1e-6
    jt = (run(x + eps * t, old) - run(x - eps * t, old)) / (2 * eps)
    lhs, rhs = np.sum(jt * c), np.sum(np.nan_to_num(t) * g0)
    assert abs(lhs - rhs) / abs(rhs) < 1e-7
    # omega: the kept cells write zero into their per-cell slot (the scratch array is never cleared)
    d_omega = np.sum((run(x, old, omega=OMEGA + eps) - run(x, old, omega=OMEGA - eps)) / (2 * eps) * c)
    assert np.isfinite(run.omega_grad) and abs(run.omega_grad - d_omega) / abs(d_omega) < 1e-7


def test_each_recorded_step_accumulates_into_its_input_gradient():
    shape = (5, 4)
    stepper = make_stepper(D2Q9_64, "warp", shape)
    step = adjointgen.differentiable(stepper)
    _, _, bc_mask, missing_mask = stepper.prepare_fields()
    x = random_state(D2Q9_64, shape, seed=9)
    c = np.random.default_rng(10).standard_normal(x.shape)
    states = [wp.array(x, dtype=wp.float64, requires_grad=True)]
    tape = wp.Tape()
    with tape:
        for t in range(4):
            states.append(wp.zeros_like(states[0], requires_grad=True))
            step(states[-2], states[-1], bc_mask, missing_mask, OMEGA, t)
    tape.backward(grads={states[-1]: wp.array(c, dtype=wp.float64)})
    _, expected, _ = jax_vjp(D2Q9_64, shape, x, c, 4)
    assert np.max(np.abs(states[0].grad.numpy() - expected)) / np.max(np.abs(expected)) < 1e-10
    tape.zero()
    assert np.all(states[0].grad.numpy() == 0)


@pytest.fixture(scope="module")
def d2q9():
    stepper = make_stepper(D2Q9_32, "warp", (4, 4))
    return stepper, adjointgen.differentiable(stepper), stepper.prepare_fields()


def test_wrong_dtype_shape_and_buffers_are_clear_errors(d2q9):
    _, step, (f_0, f_1, bc_mask, missing_mask) = d2q9
    with pytest.raises(RuntimeArgumentError, match="dtype float64, but D2Q9/BGK/FP32FP32 needs float32"):
        step(wp.zeros(f_0.shape, dtype=wp.float64), f_1, bc_mask, missing_mask, 1.0)
    with pytest.raises(RuntimeArgumentError, match=r"f_0 do\(es\) not match the grid \(4, 4, 1\)"):
        step(wp.zeros((9, 4, 5, 1), dtype=wp.float32), f_1, bc_mask, missing_mask, 1.0)
    # both state arrays from another grid: they are blamed, not the (right) masks
    other = [wp.zeros((9, 8, 8, 1), dtype=wp.float32) for _ in range(2)]
    with pytest.raises(RuntimeArgumentError, match=r"f_0 and f_1 do\(es\) not match the grid \(4, 4, 1\)"):
        step(*other, bc_mask, missing_mask, 1.0)
    with pytest.raises(RuntimeArgumentError, match="missing_mask must have 9 row"):
        step(f_0, f_1, bc_mask, wp.zeros((3, 4, 4, 1), dtype=wp.bool), 1.0)
    with pytest.raises(RuntimeArgumentError, match="different buffers"):
        step(f_0, f_0, bc_mask, missing_mask, 1.0)
    with pytest.raises(RuntimeArgumentError, match="warp array"):
        step(f_0.numpy(), f_1, bc_mask, missing_mask, 1.0)


def test_recording_without_gradient_arrays_says_what_to_do(d2q9):
    _, step, (f_0, f_1, bc_mask, missing_mask) = d2q9
    with wp.Tape():
        with pytest.raises(RuntimeArgumentError, match="requires_grad=True"):
            step(f_0, f_1, bc_mask, missing_mask, 1.0)


def test_steppers_outside_the_scope_are_refused():
    from adjointgen.xlb.support import import_xlb

    import_xlb()
    from xlb.operator.boundary_condition import GradsApproximationBC

    jax_stepper = make_stepper(D2Q9_32, "jax", (4, 4))
    with pytest.raises(ConfigurationError, match="Warp backend"):
        adjointgen.differentiable(jax_stepper)
    stepper = make_stepper(Configuration.parse("D3Q19/BGK/FP32FP32"), "warp", (4, 4, 4))
    stepper.boundary_conditions = [GradsApproximationBC(indices=[[0], [0], [0]])]  # 3D only in XLB
    with pytest.raises(ConfigurationError, match="GradsApproximationBC are not generated yet"):
        adjointgen.differentiable(stepper)


def test_omega_array_must_be_one_element_of_the_compute_type(d2q9):
    _, step, (f_0, f_1, bc_mask, missing_mask) = d2q9
    with pytest.raises(RuntimeArgumentError, match=r"shape \(1,\) and dtype float32"):
        step(f_0, f_1, bc_mask, missing_mask, wp.array([1.0, 1.2], dtype=wp.float32))
    with pytest.raises(RuntimeArgumentError, match=r"shape \(1,\) and dtype float32"):
        step(f_0, f_1, bc_mask, missing_mask, wp.array([1.0], dtype=wp.float64))


def test_boundary_values_are_parameters_only_when_asked():
    config = Configuration.parse("D2Q9/BGK/FP32FP32/cavity")
    stepper = make_stepper(config, "warp", (5, 4))
    assert adjointgen.differentiable(stepper).parameters == {}
    lifted = adjointgen.differentiable(stepper, boundary_parameters=True)
    assert sorted(lifted.parameters) == ["bc1_rho", "bc1_u"]
    assert np.allclose(lifted.parameters["bc1_u"].numpy(), [0.05, 0.0])
    assert lifted.manifest.program_sha256 != adjointgen.differentiable(stepper).manifest.program_sha256


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP32FP32", (7, 5)), ("D2Q9/BGK/FP64FP64/cavity", (7, 6)),
                                          ("D2Q9/BGK/FP64FP64/channel", (9, 6))])
def test_without_a_parameter_gradient_the_state_kernels_give_the_same_state_gradients(label, shape, monkeypatch):
    """Asked for no omega gradient, the step runs adjoint_state / adjoint_fresh_state (no per-cell
    parameter adjoints, fewer registers): bit for bit the state gradients of the full kernels, for
    a periodic grid, one with slots (cavity) and one updated in place (ZouHe's channel). By default
    only CUDA devices use them; the test turns them on."""
    from adjointgen.runtime.plan import has_kept_cells
    from adjointgen.tools.verify import GeneratedSide

    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    manifest = side.step.manifest
    assert manifest.has("adjoint_state") and manifest.parameters == ("omega",)
    launched = []
    original_launch = wp.launch

    def spy(kernel, *args, **kwargs):
        launched.append(kernel.key)
        return original_launch(kernel, *args, **kwargs)

    monkeypatch.setattr(runtime.wp, "launch", spy)
    dtype = np.float64 if config.is_fp64 else np.float32
    f0 = random_state(config, shape, 0).astype(dtype)
    cotangents = [np.random.default_rng(seed).standard_normal(f0.shape).astype(dtype) for seed in (1, 2)]
    if not wp.get_device().is_cuda:  # by default only CUDA devices use them (they save registers there)
        side.step.adjoint(wp.array(f0), wp.array(side.f1_prepared.astype(dtype)), side.bc_mask, side.missing_mask, OMEGA,
                          0, wp.array(cotangents[0]), wp.array(cotangents[1]))
        assert "adjoint" in launched and not any("_state" in key for key in launched)
    side.step.state_kernels = True
    fresh_cases = [False] + [True] * (manifest.has("adjoint_fresh") and not has_kept_cells(side.bc_mask))
    for fresh in fresh_cases:
        results = {}
        for with_omega in (True, False):
            launched.clear()
            adj_f_0 = wp.array(np.zeros_like(f0) if fresh else cotangents[0])
            adj_f_1 = wp.array(cotangents[1])
            adj_omega = wp.zeros(1, dtype=side.step.compute_dtype) if with_omega else None
            carry = wp.zeros_like(adj_f_1) if fresh and manifest.in_place else None  # in place: the carry
            side.step.adjoint(wp.array(f0), wp.array(side.f1_prepared.astype(dtype)), side.bc_mask, side.missing_mask,
                              OMEGA, 0, adj_f_0, adj_f_1, adj_omega, fresh=fresh, carry=carry)
            expected = ("adjoint_fresh" if fresh else "adjoint") + ("" if with_omega else "_state")
            assert expected in launched and all(not key.endswith("_state") for key in launched) == with_omega
            results[with_omega] = (adj_f_0.numpy(), adj_f_1.numpy()) + ((carry.numpy(),) if carry is not None else ())
        for full, state_only in zip(results[True], results[False]):
            assert np.array_equal(full, state_only)
        assert np.any(results[False][0])


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP32FP32", (7, 5)), ("D2Q9/BGK/FP64FP64/channel", (9, 6))])
def test_omega_read_on_the_device_gives_the_same_bits(label, shape):
    """The device_omega variants (omega from a one-element array, for callers that hold it on the
    device only): the forward's new state and the accumulating adjoint's state and omega
    gradients are bit for bit those of the variants that take the number, for a periodic grid
    and for ZouHe's channel (updated in place: adjoint_prepare, which takes the number, runs too)."""
    from adjointgen.tools.verify import GeneratedSide

    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    step = side.step
    assert step.manifest.device_omega
    dtype = np.float64 if config.is_fp64 else np.float32
    f0 = random_state(config, shape, 0).astype(dtype)
    f1 = side.f1_prepared.astype(dtype)
    cotangents = [np.random.default_rng(seed).standard_normal(f0.shape).astype(dtype) for seed in (1, 2)]
    omega_array = wp.array([OMEGA], dtype=step.compute_dtype)
    results = {}
    for device_omega in (False, True):
        omega = omega_array if device_omega else OMEGA
        f_0, f_1 = wp.array(f0), wp.array(f1)
        step.forward(f_0, f_1, side.bc_mask, side.missing_mask, omega, 0, device_omega=device_omega)
        adj_f_0, adj_f_1 = wp.array(cotangents[0]), wp.array(cotangents[1])
        adj_omega = wp.zeros(1, dtype=step.compute_dtype)
        step.adjoint(wp.array(f0), wp.array(f1), side.bc_mask, side.missing_mask, omega, 0, adj_f_0, adj_f_1, adj_omega,
                     device_omega=device_omega)
        results[device_omega] = [a.numpy() for a in (f_0, f_1, adj_f_0, adj_f_1, adj_omega)]
    for number, array in zip(results[False], results[True]):
        assert np.array_equal(number, array)
    assert results[True][4][0] != 0.0


def test_device_omega_is_refused_clearly_where_the_module_has_no_such_variants(d2q9, monkeypatch):
    import dataclasses

    _, step, (f_0, f_1, bc_mask, missing_mask) = d2q9
    omega = wp.array([OMEGA], dtype=wp.float32)
    with pytest.raises(RuntimeArgumentError, match="needs omega as a one-element Warp array"):
        step.forward(f_0, f_1, bc_mask, missing_mask, OMEGA, device_omega=True)
    kernels = tuple(name for name in step.manifest.kernels if "device_omega" not in name)
    monkeypatch.setattr(step, "manifest", dataclasses.replace(step.manifest, kernels=kernels))
    with pytest.raises(RuntimeArgumentError, match="no device_omega variants.*pass omega as a number"):
        step.forward(f_0, f_1, bc_mask, missing_mask, omega, device_omega=True)


def test_readme_use_runs_as_written(tmp_path):
    """The README's "Use" block, run as a script exactly as written; appended: the gradient it
    printed equals the one a checkpointed rollout pulls back from d loss / d final state =
    2 (f_10 - target) (the tape's recording of XLB's two-buffer loop against the rollout's driver)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    use = readme.split("## Use", 1)[1]
    block = re.search(r"```python\n(.*?)```", use, re.S).group(1)
    check = """
final = adjointgen.checkpointed_rollout(step, wp.array(f_0.numpy()), wp.array(f_1.numpy()), bc_mask, missing_mask, 1.6,
                                        steps=10, snapshots=3, progress=False)
seed = wp.array(2.0 * (final.f_0.numpy() - target.numpy()))
g_0, _ = final.backward(adj_f_0=seed)
assert np.isfinite(f_0.grad.numpy()).all() and np.abs(f_0.grad.numpy()).max() > 0
np.testing.assert_allclose(f_0.grad.numpy(), g_0.numpy(), rtol=1e-4, atol=1e-6 * np.abs(g_0.numpy()).max())
print("README gradient checked")
"""
    script = tmp_path / "readme_use.py"
    script.write_text(block + check)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "README gradient checked" in result.stdout and "loss " in result.stdout
