"""The JAX face: a generated step as a JAX function (Warp kernels forward, generated adjoint in
its VJP). jax.grad over several steps in lax.scan equals XLB-JAX's gradient; jax.checkpoint
composes; inputs are left alone."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import adjointgen.xlb.compat

adjointgen.xlb.compat.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from adjointgen.config import Configuration  # noqa: E402
from adjointgen.runtime.jax_face import jax_step  # noqa: E402
from adjointgen.tools.verify import OMEGA, TOLERANCES, _enable_x64, jax_vjp, random_state  # noqa: E402
from adjointgen.xlb.support import make_stepper, prepare_fields  # noqa: E402

STEPS = 5


def _setup(label: str, shape: tuple):
    _enable_x64()
    config = Configuration.parse(label)
    stepper = make_stepper(config, "warp", shape)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    dtype = np.float64 if config.is_fp64 else np.float32
    f0 = random_state(config, shape, 0).astype(dtype)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape).astype(dtype)
    arrays = [jnp.asarray(a) for a in (f0, f_1.numpy(), bc_mask.numpy(), missing_mask.numpy(), cotangent)]
    return config, jax_step(stepper), *arrays


def _loss(step, f_1, bc_mask, missing_mask, cotangent, checkpoint=False):
    def body(carry, _):
        f_0, f_1, omega = carry
        f_0, f_new = step(f_0, f_1, bc_mask, missing_mask, omega)
        return (f_new, f_0, omega), None  # XLB's loop: the new state becomes f_0

    body = jax.checkpoint(body) if checkpoint else body

    def loss(f0, omega):
        (final, _, _), _ = jax.lax.scan(body, (f0, f_1, omega), None, length=STEPS)
        return jnp.sum(cotangent * final)

    return loss


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP32FP32", (8, 6)), ("D3Q19/BGK/FP64FP64/cavity", (5, 4, 4)),
                                          ("D2Q9/BGK/FP64FP64/obstacle", (9, 7))])
def test_grad_over_a_scan_equals_xlb_jax(label, shape):
    config, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup(label, shape)
    omega = jnp.asarray(OMEGA, dtype=f0.dtype)
    grad, grad_omega = jax.jit(jax.grad(_loss(step, f_1, bc_mask, missing_mask, cotangent), argnums=(0, 1)))(f0, omega)
    _, reference, reference_omega = jax_vjp(config, shape, np.asarray(f0, np.float64), np.asarray(cotangent, np.float64), STEPS)
    tol = TOLERANCES[config.precision]
    error = np.max(np.abs(np.asarray(grad, np.float64) - reference)) / np.max(np.abs(reference))
    assert error <= STEPS * tol["grad"], error  # the bound: per step
    assert abs(float(grad_omega) - reference_omega) <= STEPS * tol["omega"] * abs(reference_omega)


def test_checkpoint_composes_and_inputs_stay_untouched():
    _, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup("D2Q9/BGK/FP32FP32", (8, 6))
    before = np.asarray(f0).copy(), np.asarray(f_1).copy()
    omega = jnp.asarray(OMEGA, dtype=f0.dtype)
    plain = jax.grad(_loss(step, f_1, bc_mask, missing_mask, cotangent))(f0, omega)
    remat = jax.grad(_loss(step, f_1, bc_mask, missing_mask, cotangent, checkpoint=True))(f0, omega)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(remat))
    f_0_out, f_new = jax.jit(step)(f0, f_1, bc_mask, missing_mask, omega)
    assert not np.array_equal(np.asarray(f_new), before[1])
    np.testing.assert_array_equal(np.asarray(f0), before[0])
    np.testing.assert_array_equal(np.asarray(f_1), before[1])


def _field_loss(step, f_1, bc_mask, missing_mask, cotangent):
    def body(carry, _):
        f_0, f_1, omega, fields = carry
        f_0, f_new = step(f_0, f_1, bc_mask, missing_mask, omega, fields)
        return (f_new, f_0, omega, fields), None

    def loss(f0, omega, fields):
        (final, _, _, _), _ = jax.lax.scan(body, (f0, f_1, omega, fields), None, length=STEPS)
        return jnp.sum(cotangent * final)

    return loss


@pytest.mark.parametrize("label, shape", [("D2Q9/PorousBGK/FP64FP64/channel", (8, 6)), ("D3Q19/PorousBGK/FP32FP32", (5, 4, 4))])
def test_design_field_gradients_over_a_scan_equal_xlb_jax(label, shape):
    import adjointgen.xlb.design  # noqa: F401  registers PorousBGK
    from adjointgen.tools.verify import design_fields, jax_reference

    config, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup(label, shape)
    assert step.fields == ("porosity",)
    gamma = design_fields(step.field_shapes)["porosity"].astype(f0.dtype)  # fluid, solid and gray cells
    omega = jnp.asarray(OMEGA, dtype=f0.dtype)
    grads = jax.jit(jax.grad(_field_loss(step, f_1, bc_mask, missing_mask, cotangent), argnums=(0, 1, 2)))(
        f0, omega, {"porosity": jnp.asarray(gamma)})
    reference = jax_reference(config, shape, np.asarray(f0, np.float64), np.asarray(cotangent, np.float64), STEPS,
                              {"porosity": gamma.astype(np.float64)})
    tol = TOLERANCES[config.precision]
    for ours, theirs in ((grads[0], reference.grad), (grads[2]["porosity"], reference.grad_fields["porosity"])):
        ours = np.asarray(ours, np.float64)
        assert ours.shape == theirs.shape and np.abs(theirs).max() > 0
        assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) <= STEPS * tol["grad"]
    assert abs(float(grads[1]) - reference.grad_omega) <= STEPS * tol["omega"] * abs(reference.grad_omega)


def test_a_step_that_reads_a_field_asks_for_it():
    import adjointgen.xlb.design  # noqa: F401
    from adjointgen.errors import RuntimeArgumentError

    _, step, f0, f_1, bc_mask, missing_mask, _ = _setup("D2Q9/PorousBGK/FP64FP64", (8, 6))
    with pytest.raises(RuntimeArgumentError, match="design field 'porosity'.*sixth argument"):
        step(f0, f_1, bc_mask, missing_mask, OMEGA, {})
    with pytest.raises(RuntimeArgumentError, match=r"shape \(1, 8, 6, 1\)"):
        step(f0, f_1, bc_mask, missing_mask, OMEGA, {"porosity": jnp.zeros((8, 6))})


def test_omega_is_never_read_back_and_known_omega_is_built_in(monkeypatch):
    """A number (or concrete array) for omega: the step is built for that value (per value, never
    a stale one); a traced omega goes to the module's device_omega variants as its array. Either
    way nothing reads omega back from the device, and both give the same bits."""
    import warp as wp

    from adjointgen.runtime import jax_face
    from adjointgen.runtime.step import DifferentiableStep

    _, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup("D2Q9/BGK/FP32FP32", (8, 6))
    assert step.step.manifest.device_omega
    given, read_back = [], []
    original = jax_face.CallTypes.omega_value
    monkeypatch.setattr(jax_face.CallTypes, "omega_value",
                        lambda self, array, fixed: given.append(original(self, array, fixed)) or given[-1])
    kernel_omega = DifferentiableStep.kernel_omega
    monkeypatch.setattr(DifferentiableStep, "kernel_omega", lambda self, omega, device_omega=False: read_back.append(
        isinstance(omega, wp.array) and not device_omega) or kernel_omega(self, omega, device_omega))

    def loss(f, omega):
        g = f_1
        for _ in range(3):
            g, f = step(f, g, bc_mask, missing_mask, omega)  # (f_0, f_new): the new state becomes f_0
        return jnp.sum(cotangent * f)

    first = None
    for value in (OMEGA, 0.9 * OMEGA):
        given.clear()
        traced = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(f0, jnp.asarray(value, dtype=f0.dtype))
        assert given and all(isinstance(g, wp.array) for g in given)  # the array, to the device_omega variants
        given.clear()
        fixed = jax.jit(jax.value_and_grad(functools.partial(loss, omega=value)))(f0)
        assert given and all(g == value for g in given)  # the built-in value
        np.testing.assert_array_equal(np.asarray(traced[1][0]), np.asarray(fixed[1]))
        assert float(traced[0]) == float(fixed[0])
        assert float(traced[1][1]) != 0.0  # omega's gradient from the device_omega adjoint
        if first is not None:
            assert not np.array_equal(np.asarray(fixed[1]), np.asarray(first)), "a stale omega"
        first = fixed[1]
    assert read_back and not any(read_back)


def test_a_known_omega_runs_the_adjoint_without_omegas_part(monkeypatch):
    """With omega built in, nothing asks for its gradient: the face passes no adj_omega, so the
    module's state-only adjoint runs (where the step prefers it, on CUDA; forced here), with the
    same state gradient bit for bit."""
    from adjointgen.runtime.step import DifferentiableStep

    _, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup("D2Q9/BGK/FP32FP32", (8, 6))
    asked = []
    adjoint = DifferentiableStep.adjoint
    monkeypatch.setattr(DifferentiableStep, "adjoint",
                        lambda self, *args, **kwargs: asked.append(args[8]) or adjoint(self, *args, **kwargs))

    def loss(f):
        g = f_1
        for _ in range(3):
            g, f = step(f, g, bc_mask, missing_mask, OMEGA)  # a number: built in
        return jnp.sum(cotangent * f)

    plain = jax.grad(loss)(f0)
    step.step.state_kernels = True
    try:
        state_only = jax.grad(loss)(f0)
    finally:
        step.step.state_kernels = None
    assert asked and all(a is None for a in asked)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(state_only))


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP32FP32", (8, 6)), ("D3Q19/BGK/FP64FP64/cavity", (5, 4, 4)),
                                          ("D2Q9/BGK/FP64FP64/obstacle", (9, 7))])
def test_carried_steps_give_the_plain_loops_gradients_bit_for_bit(label, shape):
    """XLB's loop with every step but the last the face's carried step (fresh adjoint, the
    returned f_0's cotangent taken as the carry) gives the gradients of the plain loop bit for
    bit: periodic, with slots (cavity), and updated in place with solid cells (obstacle), with
    omega built in and traced; omega's gradient to rounding (summed in another order)."""
    config, step, f0, f_1, bc_mask, missing_mask, cotangent = _setup(label, shape)
    assert step.carried is not None
    kept = np.asarray(bc_mask).copy()
    kept[(0, slice(1, 3), slice(1, 3))] = 255  # solid cells, whose adjoints adjoint_kept completes
    bc_mask = jnp.asarray(kept)

    def loss_with(faces):
        def loss(f, omega):
            g = f_1
            for face in faces:
                g, f = face(f, g, bc_mask, missing_mask, omega)  # (f_0, f_new): the new state becomes f_0
            return jnp.sum(cotangent * f) + 0.5 * jnp.sum(cotangent * g)
        return loss

    plain = loss_with([step] * 4)
    carried = loss_with([step.carried] * 3 + [step])
    for omega in (OMEGA, jnp.asarray(OMEGA, dtype=f0.dtype)):  # built in, traced
        argnums = (0,) if isinstance(omega, float) else (0, 1)
        ours, theirs = (jax.jit(jax.grad(loss, argnums=argnums))(f0, omega) for loss in (carried, plain))
        np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(theirs[0]))
        assert np.abs(np.asarray(ours[0])).max() > 0
        if len(argnums) == 2:
            assert abs(float(ours[1]) - float(theirs[1])) <= 1e-5 * abs(float(theirs[1]))


def test_steps_without_a_chainable_fresh_adjoint_have_no_carried_step():
    import adjointgen.xlb.design  # noqa: F401  registers PorousBGK

    _, step, *_ = _setup("D2Q9/PorousBGK/FP64FP64", (8, 6))
    assert step.carried is None  # no adjoint_kept: a traced mask's kept cells could not be completed


@pytest.mark.parametrize("label, writes_f_0, shape", [("D2Q9/BGK/FP64FP64/cavity", False, (9, 7)),
                                                      ("D2Q9/BGK/FP64FP64/obstacle", True, (9, 7)),
                                                      ("D3Q19/BGK/FP64FP64/cavity", False, (5, 4, 11))])
def test_a_step_leaves_kept_cells_as_xlbs_warp_step_does(label, writes_f_0, shape):
    """The face writes a new array (or, where ZouHe keeps data in f_0, f_0 and f_1 in place):
    kept (solid) cells hold exactly what XLB's own Warp step leaves there, the other cells its
    values to rounding (the generated arithmetic's order)."""
    import warp as wp

    config, step, f0, f_1, bc_mask, missing_mask, _ = _setup(label, shape)
    assert step.writes_f_0 == writes_f_0
    assert step.step.split_listed is False  # no read-back of the mask per call (new Warp arrays each call)
    kept = np.asarray(bc_mask).copy()
    block = (slice(3, 5), slice(2, 4)) if len(shape) == 2 else (slice(2, 4), slice(1, 3), slice(6, 10))
    kept[(0, *block)] = 255  # a solid block, as prepare_fields marks the obstacle mix's
    stepper = make_stepper(config, "warp", shape)
    arrays = [wp.array(np.asarray(a), dtype=dtype) for a, dtype in
              ((f0, wp.float64), (f_1, wp.float64), (kept, wp.uint8), (missing_mask, wp.bool))]
    omega = float(np.float32(OMEGA))  # XLB's kernel takes a Python float as a float32
    expected_0, expected_new = stepper(*arrays, omega, 0)
    f_0_out, f_new = jax.jit(step)(f0, f_1, jnp.asarray(kept), missing_mask, omega)
    solid = np.broadcast_to(kept == 255, np.shape(f_new))
    for ours, theirs in ((f_new, expected_new), (f_0_out, expected_0)):
        ours, theirs = np.asarray(ours), theirs.numpy()
        np.testing.assert_array_equal(ours[solid], theirs[solid])
        np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-15)
    assert not np.array_equal(np.asarray(f_new)[solid], np.asarray(f0)[solid])  # f_1's content, not f_0's


def _obstacle_face():
    """The D2Q9 FP64 obstacle channel's face (a split step) on a 16x7 grid, a random f_0 and the
    prepared f_1 and masks, as JAX arrays."""
    config = Configuration.parse("D2Q9/BGK/FP64FP64/obstacle")
    _enable_x64()
    stepper = make_stepper(config, "warp", (16, 7))
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    f_0 = jnp.asarray(random_state(config, (16, 7), 0))
    return (jax_step(stepper), f_0, *(jnp.asarray(a.numpy()) for a in (f_1, bc_mask, missing_mask)))


def test_a_known_mask_gets_its_list_once_and_a_traced_one_none(monkeypatch):
    """Without listed=, a split step's face makes the list of a mask known when JAX traces the call
    (concrete), once per mask object (forced on here: on a CPU the default is one launch), with
    the whole grid's bits; a traced mask (a jit argument) gets none."""
    from adjointgen.runtime import jax_face

    step, f_0, f_1, bc, mm = _obstacle_face()
    assert step.known_lists(bc) is None  # on a CPU: off by default
    made = []
    rows_with = jax_face._rows_with
    monkeypatch.setattr(jax_face, "_rows_with", lambda ids, mask: made.append(1) or rows_with(ids, mask))

    def loss(f, mask):
        left, new = step(f, f_1, mask, mm, OMEGA)
        return jnp.sum(new * new) + jnp.sum(left)

    whole = jax.value_and_grad(loss)(f_0, bc)
    step.known_lists.wanted = True
    try:
        # the mask closed over by a jitted function (known while JAX traces), then two eager calls
        listed = [jax.jit(jax.value_and_grad(lambda f: loss(f, bc)))(f_0)]
        listed += [jax.value_and_grad(loss)(f_0, bc) for _ in range(2)]
        assert made == [1]  # once for the three calls
        assert not isinstance(step.known_lists(bc), jax.core.Tracer)
        assert np.array_equal(np.asarray(step.known_lists(bc)), rows_with(step.step.manifest.listed_ids, bc))
        seen = []
        jax.jit(lambda mask: seen.append(step.known_lists(mask)) or mask)(bc)  # a jit argument: traced, no list
        assert seen == [None]
    finally:
        step.known_lists.wanted = None
    for value, grad in listed:
        assert float(value) == float(whole[0]) and np.array_equal(np.asarray(grad), np.asarray(whole[1]))


def test_calls_are_captured_graphs_only_inside_captured_calls_and_where_nothing_is_read_back():
    import warp as wp

    from adjointgen.runtime.jax_face import captured_calls, graph_mode

    assert graph_mode() == wp.JaxCallableGraphMode.NONE
    with captured_calls():
        assert graph_mode() == wp.JaxCallableGraphMode.WARP
        assert graph_mode(reads_back=True) == wp.JaxCallableGraphMode.NONE  # a host read cannot be captured
        with captured_calls(False):
            assert graph_mode() == wp.JaxCallableGraphMode.NONE
        assert graph_mode() == wp.JaxCallableGraphMode.WARP
    assert graph_mode() == wp.JaxCallableGraphMode.NONE


def test_a_split_steps_face_takes_its_list_and_gives_the_whole_grids_bits():
    """The obstacle channel's face with its ZouHe cells from a list (listed=, the rest part without
    their code), and without a list in parts over the grid (a GPU's default), against the one
    launch over the grid: forward and VJP bit for bit on the CPU."""
    from adjointgen.runtime.jax_face import listed_cells

    step, f_0, f_1, bc, mm = _obstacle_face()
    cells = listed_cells(step, bc)
    assert cells is not None and len(cells) == int(np.isin(np.asarray(bc), step.step.manifest.listed_ids).sum())

    def loss(f, listed):
        g = f_1
        for _ in range(3):
            left, new = step(f, g, bc, mm, OMEGA, listed=listed)
            f, g = new, left
        return jnp.sum(f * f) + jnp.sum(g)

    whole, split = (jax.value_and_grad(loss)(f_0, listed) for listed in (None, jnp.asarray(cells)))
    assert float(whole[0]) == float(split[0])
    assert np.array_equal(np.asarray(whole[1]), np.asarray(split[1]))
    short = jax.value_and_grad(loss)(f_0, jnp.asarray(cells[1:]))  # one ZouHe cell left out: caught
    assert not np.array_equal(np.asarray(whole[1]), np.asarray(short[1]))
    # without a list, as on a GPU: the ZouHe cells' parts over the grid (returning at the other cells)
    step.step.split_grid = True
    try:
        grid = jax.value_and_grad(loss)(f_0, None)
    finally:
        step.step.split_grid = None
    assert float(whole[0]) == float(grid[0]) and np.array_equal(np.asarray(whole[1]), np.asarray(grid[1]))
