"""Checkpointed rollouts: equal to XLB-JAX over 20 steps, the same bits whatever the number of
snapshots, memory that grows with the snapshots and not with the steps, and a wp.Tape face."""

import json
import subprocess
import sys

import numpy as np
import pytest
import warp as wp

from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime.plan import binomial_forward_steps  # checked against checkpoint_schedules in test_plan.py
from adjointgen.runtime.rollout import checkpointed_rollout
from adjointgen.tools.verify import GeneratedSide, _enable_x64, jax_vjp, random_state, relative_error

STEPS = 20


def _run(side, f0, cotangent, snapshots, steps=STEPS, omega=1.6, observe=None):
    dtype = np.float64 if side.config.is_fp64 else np.float32
    f_0, f_1 = wp.array(f0.astype(dtype)), wp.array(side.f1_prepared.astype(dtype))
    result = checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, omega, steps, snapshots,
                                  progress=False)
    adj_f_0, adj_f_1 = result.backward(adj_f_0=wp.array(cotangent.astype(dtype)), observe=observe)
    result.adj_f_1 = adj_f_1.numpy()  # the initial f_1's gradient, for the tests that compare it
    return result, adj_f_0.numpy().astype(np.float64)


@pytest.mark.parametrize("label, shape, tolerance", [
    ("D2Q9/BGK/FP64FP64/cavity", (6, 5), 1e-9),
    ("D3Q19/BGK/FP32FP32", (4, 5, 3), 1e-4),
    ("D2Q9/BGK/FP64FP64/channel", (8, 6), 1e-9),
])
def test_twenty_steps_equal_xlb_jax(label, shape, tolerance):
    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    f0 = random_state(config, shape, 0)
    if not config.is_fp64:
        f0 = f0.astype(np.float32).astype(np.float64)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape)
    _, ours = _run(side, f0, cotangent, snapshots=4)
    _, reference, _ = jax_vjp(config, shape, f0, cotangent, STEPS)
    assert relative_error(ours, reference) <= tolerance


@pytest.mark.parametrize("label, f_1_cells", [
    ("D2Q9/BGK/FP64FP64/channel", 2 * 4),  # ZouHe keeps data in f_1: stored at its inlet and outlet cells (no corners)
    ("D2Q9/BGK/FP64FP64", 0),  # nothing reads f_1 before the next step overwrites it: f_0 alone
    ("D2Q9/BGK/FP64FP64/obstacle", None),  # and solid cells keep their old output in f_1 (some cells more)
])
def test_the_number_of_snapshots_does_not_change_a_bit(label, f_1_cells, monkeypatch):
    from adjointgen.runtime import rollout

    config = Configuration.parse(label)
    side = GeneratedSide(config, (8, 6))
    f0 = random_state(config, (8, 6), 0)
    stored = []  # arrays a rollout copies: wp.clone (its pairs), _Sweep.copy (stored states, from the step's pool)
    original_clone, original_store = wp.clone, rollout._Sweep.copy

    def counting_clone(array, *args, **kwargs):
        stored.append(array.shape)
        return original_clone(array, *args, **kwargs)

    def counting_store(sweep, array):
        stored.append(array.shape)
        return original_store(sweep, array)

    monkeypatch.setattr(rollout.wp, "clone", counting_clone)
    monkeypatch.setattr(rollout._Sweep, "copy", counting_store)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape)
    results = {s: _run(side, f0, cotangent, snapshots=s) for s in (STEPS, 2, 3, 8)}
    everything, stored_all = results[STEPS]
    assert everything.stats.forward_steps == STEPS and everything.stats.peak_stored_states == STEPS
    for snapshots in (2, 3, 8):
        result, gradient = results[snapshots]
        assert np.array_equal(gradient, stored_all), snapshots
        assert np.array_equal(result.adj_f_1, everything.adj_f_1), snapshots
        assert np.array_equal(result.f_0.numpy(), everything.f_0.numpy())
        assert result.stats.peak_stored_states <= snapshots + 1  # snapshots + the inputs of one step
        # what the memory costs: recomputation, and no more than the binomial optimum (no forward
        # step whose result nothing reads: the adjoint replays a step from its input)
        assert result.stats.forward_steps == binomial_forward_steps(STEPS, snapshots) > STEPS
    # clones of the last rollout (3 snapshots... 8): the work pair and the final pair (2 + 2), each
    # step input kept for the adjoint (f_0, and f_1 where read), each snapshot's f_0; its f_1 is
    # kept only at the cells where a step reads it or keeps its output
    stored.clear()
    result, _ = _run(side, f0, cotangent, snapshots=3)
    inputs = 1 + side.step.manifest.reads_f_1
    snapshot_clones = len(stored) - 4 - inputs * (STEPS - result.stats.borrowed_inputs)
    # (a snapshot of f_0 alone that a step then runs from is written by that step's forward_save)
    assert snapshot_clones + result.stats.snapshots_in_forward == result.stats.snapshots_written > 0
    assert (result.stats.snapshots_in_forward > 0) == (label == "D2Q9/BGK/FP64FP64")
    fraction = result.plan.storage.f_1_fraction
    cells = 8 * 6
    if f_1_cells == 0:
        assert result.plan.storage.snapshot_arrays == 1
    elif f_1_cells is not None:
        assert round(fraction * cells) == f_1_cells
    else:
        assert 2 * 4 < round(fraction * cells) < cells / 2
    assert result.plan.snapshot_bytes == result.plan.storage.snapshot_bytes(result.plan.array_bytes)
    # a restore does not copy the stored state back: steps that update f_0 in place run on the
    # stored f_0 and put back the elements they overwrote (fewer whole-array copies in the
    # reverse sweep than it has restores; it had one per restore)
    copies = []
    original_copy = wp.copy

    def counting_copy(dest, *args, **kwargs):
        copies.append(dest.shape)
        return original_copy(dest, *args, **kwargs)

    result = checkpointed_rollout(side.step, wp.array(f0), wp.array(side.f1_prepared), side.bc_mask, side.missing_mask,
                                  1.6, STEPS, 3, progress=False)
    monkeypatch.setattr(rollout.wp, "copy", counting_copy)
    stored.clear()
    result.backward(adj_f_0=wp.array(cotangent))
    assert len(copies) - len(stored) <= result.stats.snapshots_written  # (stored states are copies too)


def _fresh_and_accumulating(side, shape, bc_mask, monkeypatch, steps=12, snapshots=3):
    """The gradients (initial f_0, f_1, omega) of one rollout reversed with adjoint_fresh (a
    cotangent on the final f_0 only) and with the accumulating adjoint (the same, plus a zero
    cotangent for f_1, which keeps the rollout off the fresh path), and the ``fresh`` flags the
    reverse sweeps packed their launches with."""
    config = side.config
    dtype = np.float64 if config.is_fp64 else np.float32
    f0 = random_state(config, shape, 0).astype(dtype)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape).astype(dtype)
    calls = []
    original = side.step.adjoint_launches

    def spy(*args, **kwargs):  # the reverse sweep packs its adjoint launches once
        calls.append(kwargs.get("fresh", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(side.step, "adjoint_launches", spy)
    outputs = {}
    for name, other in (("fresh", None), ("accumulate", np.zeros_like(cotangent))):
        omega = wp.zeros(1, dtype=side.step.compute_dtype)
        result = checkpointed_rollout(side.step, wp.array(f0), wp.array(side.f1_prepared.astype(dtype)), bc_mask,
                                      side.missing_mask, 1.6, steps, snapshots, progress=False)
        adj = result.backward(adj_f_0=wp.array(cotangent), adj_f_1=None if other is None else wp.array(other), adj_omega=omega)
        outputs[name] = [a.numpy() for a in adj] + [omega.numpy()]
    monkeypatch.undo()
    return outputs["fresh"], outputs["accumulate"], calls


def _with_solid_cell(bc_mask, cell):
    solid = bc_mask.numpy()
    solid[(0, *cell)] = 255
    return wp.array(solid)


@pytest.mark.parametrize("label, shape, solid", [
    ("D2Q9/BGK/FP64FP64", (6, 5), None),
    ("D3Q19/BGK/FP32FP32", (4, 5, 3), None),
    ("D2Q9/BGK/FP64FP64/cavity", (7, 6), None),  # bounce-back reads through slots and adjoint_gather
    ("D2Q9/BGK/FP64FP64", (6, 5), (1, 1, 0)),  # a kept cell: adjoint_kept completes the fresh adjoint
    ("D2Q9/BGK/FP64FP64/channel", (8, 6), None),  # ZouHe updates f_0 in place and reads f_1: the carry
    ("D2Q9/BGK/FP64FP64/obstacle", (10, 8), None),  # both: in place and a solid block
    ("D2Q9/BGK/FP32FP32/cavity", (7, 6), (2, 2, 0)),
])
def test_fresh_adjoint_is_bitwise_the_accumulating_one(label, shape, solid, monkeypatch):
    """A rollout with a cotangent on the final state only runs adjoint_fresh (3 state arrays of
    traffic), with the carry where a step updates f_0 in place or keeps cells: bit for bit what the
    accumulating adjoint gives, the initial f_1's and omega's gradients included. The cotangent is
    not zero at kept cells, so their identity steps are exercised."""
    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    bc_mask = side.bc_mask if solid is None else _with_solid_cell(side.bc_mask, solid)
    assert side.step.manifest.has("adjoint_fresh") and side.step.manifest.has("adjoint_kept")
    fresh, accumulate, calls = _fresh_and_accumulating(side, shape, bc_mask, monkeypatch)
    assert calls == [True, False]
    for ours, reference in zip(fresh, accumulate):
        assert np.array_equal(ours, reference)
    kept = bool((bc_mask.numpy() == 255).any())
    if not side.step.manifest.reads_f_1 and not kept:
        assert not np.any(fresh[1])  # the initial f_1 is not read: zero adjoint
    else:
        assert np.any(fresh[1])  # what the step read of f_1, or a kept cell's f_1, has a gradient


@pytest.mark.parametrize("broken", ["no adjoint_kept", "no carry from step to step"])
def test_the_fresh_comparison_rejects_a_broken_carry(broken, monkeypatch):
    """The comparison above fails when the fresh path drops what the carry or adjoint_kept adds."""
    from adjointgen.runtime.step import DifferentiableStep

    config = Configuration.parse("D2Q9/BGK/FP64FP64/obstacle")
    side = GeneratedSide(config, (10, 8))
    original = DifferentiableStep.adjoint_launches

    def broken_launches(self, *args, **kwargs):
        carry = kwargs.get("carry")
        if carry is None:  # the accumulating rollout
            return original(self, *args, **kwargs)
        if broken == "no adjoint_kept":
            kwargs["kept_cells"] = False
        packed = original(self, *args, **kwargs)
        if broken == "no carry from step to step":
            run = packed.run
            packed.run = lambda: (carry.zero_(), run())  # each step starts from a zero carry
        return packed

    monkeypatch.setattr(DifferentiableStep, "adjoint_launches", broken_launches)
    fresh, accumulate, _ = _fresh_and_accumulating(side, (10, 8), side.bc_mask, monkeypatch)
    assert not all(np.array_equal(ours, reference) for ours, reference in zip(fresh, accumulate))


def test_losses_on_intermediate_states_equal_xlb_jax():
    _enable_x64()
    import jax
    import jax.numpy as jnp

    from adjointgen.xlb.support import make_stepper

    config = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")
    shape = (6, 5)
    side = GeneratedSide(config, shape)
    f0 = random_state(config, shape, 0)
    rng = np.random.default_rng(2)
    c_final, c_middle = rng.standard_normal(f0.shape), rng.standard_normal(f0.shape)
    middle = 7
    cotangent_middle = wp.array(c_middle)

    def observe(t, f_0, f_1, adj_f_0, adj_f_1):
        if t == middle:  # the state before step `middle`, i.e. after `middle` steps
            wp.launch(_add, dim=adj_f_0.size, inputs=[cotangent_middle.flatten(), adj_f_0.flatten()])

    _, ours = _run(side, f0, c_final, snapshots=3, steps=12, observe=observe)

    stepper = make_stepper(config, "jax", shape)
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    jshape = (9,) + shape

    def loss(f):
        total = 0.0
        for t in range(12):
            if t == middle:
                total += jnp.sum(f * c_middle.reshape(jshape))
            _, f = stepper(f, f_1, bc_mask, missing_mask, 1.6, t)
        return total + jnp.sum(f * c_final.reshape(jshape))

    reference = np.asarray(jax.grad(loss)(jnp.asarray(f0.reshape(jshape)))).reshape(f0.shape)
    assert relative_error(ours, reference) < 1e-10


@wp.kernel
def _add(source: wp.array(dtype=wp.float64), target: wp.array(dtype=wp.float64)):
    i = wp.tid()
    target[i] = target[i] + source[i]


@wp.kernel
def _weighted_sum(f: wp.array4d(dtype=wp.float64), c: wp.array4d(dtype=wp.float64), loss: wp.array(dtype=wp.float64)):
    l, i, j, k = wp.tid()
    wp.atomic_add(loss, 0, f[l, i, j, k] * c[l, i, j, k])


def test_a_rollout_is_one_operation_of_a_tape():
    config = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")
    side = GeneratedSide(config, (6, 5))
    f0 = random_state(config, (6, 5), 0)
    c = np.random.default_rng(1).standard_normal(f0.shape)
    _, expected = _run(side, f0, c, snapshots=3)
    f_0 = wp.array(f0, requires_grad=True)
    f_1 = wp.array(side.f1_prepared, requires_grad=True)
    omega = wp.array([1.6], dtype=wp.float64, requires_grad=True)
    cotangent = wp.array(c.reshape(f0.shape))
    loss = wp.zeros(1, dtype=wp.float64, requires_grad=True)
    tape = wp.Tape()
    with tape:
        result = checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, omega, STEPS, 3, progress=False)
        wp.launch(_weighted_sum, dim=result.f_0.shape, inputs=[result.f_0, cotangent, loss])
    tape.backward(loss=loss)
    assert np.allclose(f_0.grad.numpy(), expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    _, _, reference_omega = jax_vjp(config, (6, 5), f0, c, STEPS)
    assert relative_error(omega.grad.numpy()[0], reference_omega) < 1e-10


def test_progress_bar_on_request_and_quiet_otherwise(capsys):
    config = Configuration.parse("D2Q9/BGK/FP64FP64")
    side = GeneratedSide(config, (6, 5))
    f_0, f_1 = wp.array(random_state(config, (6, 5), 0)), wp.array(side.f1_prepared)
    checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 5, 2).backward()
    assert "forward" not in capsys.readouterr().err  # not a terminal: quiet
    checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 5, 2, progress=True).backward()
    err = capsys.readouterr().err
    assert "forward" in err and "reverse" in err


def test_bad_arguments_are_refused():
    config = Configuration.parse("D2Q9/BGK/FP64FP64")
    side = GeneratedSide(config, (6, 5))
    f_0, f_1 = wp.array(random_state(config, (6, 5), 0)), wp.array(side.f1_prepared)
    with pytest.raises(RuntimeArgumentError, match="steps >= 1"):
        checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 0, 2)
    result = checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 3, 2, progress=False)
    # a cotangent shaped unlike the state (wp.copy would copy what fits: a silently wrong gradient)
    with pytest.raises(RuntimeArgumentError, match=r"adj_f_0 must be a Warp array shaped and typed like the state"):
        result.backward(adj_f_0=wp.zeros((9, 6, 1, 1), dtype=wp.float64))
    with pytest.raises(RuntimeArgumentError, match=r"adj_f_1 .*got shape \(9, 6, 5, 1\), dtype float32"):
        result.backward(adj_f_1=wp.zeros((9, 6, 5, 1), dtype=wp.float32))
    result.backward()  # a refused call leaves the result usable
    with pytest.raises(RuntimeArgumentError, match="only once"):
        result.backward()


_MEMORY_PROBE = """
import json, sys
import numpy as np, warp as wp
from adjointgen.config import Configuration
from adjointgen.runtime.rollout import checkpointed_rollout
from adjointgen.tools.verify import GeneratedSide, random_state


def status(key):  # kB, from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])


wp.config.quiet = True
snapshots = int(sys.argv[1])
config = Configuration.parse("D2Q9/BGK/FP64FP64")
side = GeneratedSide(config, (64, 64))
f_0, f_1 = wp.array(random_state(config, (64, 64), 0)), wp.array(side.f1_prepared)
checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 3, 2, progress=False).backward(adj_f_0=f_0)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
result = checkpointed_rollout(side.step, f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 400, snapshots, progress=False)
result.backward(adj_f_0=f_0)
print(json.dumps({"peak_kib": status("VmHWM") - before, "stored": result.stats.peak_stored_states}))
"""


def test_peak_memory_grows_with_snapshots_not_steps():
    # 400 steps of a 64x64 D2Q9 FP64 grid: one population array is 288 KiB
    runs = {}
    for snapshots in (4, 400):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(snapshots)], capture_output=True, text=True,
                             check=True)
        runs[snapshots] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs[4]["stored"] == 5 and runs[400]["stored"] == 400
    array_kib = 9 * 64 * 64 * 8 / 1024  # one population array; a state is two
    assert runs[400]["peak_kib"] > 300 * array_kib  # storing every step's input f_0 (the periodic adjoint reads no f_1)
    assert runs[4]["peak_kib"] < 40 * array_kib  # a handful of states (and allocator slack)


@pytest.mark.parametrize("label", ["D2Q9/BGK/FP64FP64", "D2Q9/BGK/FP64FP64/channel"])
def test_graphs_and_packed_launches_change_no_bit(label, monkeypatch):
    """The sweeps' packed launches (runtime.launches), and runs of forward steps replayed as graphs
    of two steps (CUDA devices by default; Warp's CPU graphs here), give the bits of plain wp.launch
    calls: the gradient of a rollout with graphs on, off, and with every forward through
    step.forward (wp.launch) and every adjoint's launches packed anew for it (as step.adjoint does)."""
    from adjointgen.runtime import launches, rollout

    config = Configuration.parse(label)
    side = GeneratedSide(config, (8, 6))
    f0 = random_state(config, (8, 6), 0)
    cotangent = np.random.default_rng(1).standard_normal(f0.shape)
    assert not launches.reads_parameter(side.step.kernel("forward"), "timestep")
    assert launches.reads_parameter(side.step.kernel("forward"), "omega")
    replays = []
    original_replay = wp.capture_launch
    monkeypatch.setattr(launches.wp, "capture_launch", lambda graph: (replays.append(graph), original_replay(graph)))
    results = {}
    for graphs in (True, False):
        monkeypatch.setattr(launches, "GRAPHS", graphs)
        results[graphs] = _run(side, f0, cotangent, snapshots=3)
    assert replays and results[True][0].stats.forward_steps == results[False][0].stats.forward_steps
    assert np.array_equal(results[True][1], results[False][1])
    assert np.array_equal(results[True][0].f_0.numpy(), results[False][0].f_0.numpy())

    class Unpacked(launches.PackedForward):  # every step through step.forward, every adjoint through step.adjoint
        def __init__(self, step, pair, bc_mask, missing_mask, omega, lifted_values, graphs=None):
            self.graphs, self.forward = None, lambda f_0, f_1, t: step.forward(f_0, f_1, bc_mask, missing_mask, omega, t,
                                                                               lifted_values, check=False)

        def step(self, f_0, f_1, timestep):
            self.forward(f_0, f_1, timestep)

    packed = side.step.adjoint_launches

    def unpacked_adjoint(*args, fresh=False, **fields):
        class Each:  # the launches packed anew for every step (what step.adjoint does)
            def set(self, **values):
                self.values = values

            def run(self):
                v = self.values
                packed(v["f_0"], v["f_1"], args[2], args[3], args[4], v["timestep"], v["adj_f_0"], v["adj_f_1"],
                       *args[8:], fresh=fresh, **fields).run()
        each = Each()
        each.set(f_0=args[0], f_1=args[1], timestep=args[5], adj_f_0=args[6], adj_f_1=args[7])
        return each

    monkeypatch.setattr(rollout, "PackedForward", Unpacked)
    monkeypatch.setattr(side.step, "adjoint_launches", unpacked_adjoint)
    _, plain = _run(side, f0, cotangent, snapshots=3)
    assert np.array_equal(plain, results[False][1])


def test_boundary_parameter_gradients_of_a_rollout_equal_the_tape_ones():
    """Lifted boundary values (the lid's rho and u): the rollout's packed reductions of per-cell
    parameter adjoints give what XLB's loop on a tape gives (verify checks that one against FP64
    finite differences)."""
    config = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")
    side = GeneratedSide(config, (7, 6), boundary_parameters=True)
    step = side.step
    f0 = random_state(config, (7, 6), 0)
    c = np.random.default_rng(1).standard_normal(f0.shape)
    steps = 8
    ours = {name: wp.zeros_like(array) for name, array in step.parameters.items()}
    result = checkpointed_rollout(step, wp.array(f0), wp.array(side.f1_prepared), side.bc_mask, side.missing_mask, 1.6, steps, 3,
                                  progress=False)
    result.backward(adj_f_0=wp.array(c), adj_parameters=ours)
    for array in step.parameters.values():
        array.grad.zero_()
    f_0, f_1 = wp.array(f0, requires_grad=True), wp.array(side.f1_prepared, requires_grad=True)
    tape = wp.Tape()
    with tape:
        for t in range(steps):
            f_0, f_1 = step(f_0, f_1, side.bc_mask, side.missing_mask, 1.6, t)
            f_0, f_1 = f_1, f_0
    tape.backward(grads={f_0: wp.array(c)})
    assert sorted(ours) == ["bc1_rho", "bc1_u"]
    for name, array in step.parameters.items():
        expected = array.grad.numpy()
        assert np.any(expected) and np.allclose(ours[name].numpy(), expected, rtol=1e-12, atol=1e-14), name
