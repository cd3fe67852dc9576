"""Tape steps in fused pairs (runtime.step._TapeRecord): XLB's ping-pong loop on a wp.Tape gives
bit for bit the gradients of the accumulating path (``step.tape_fusion = False``), and those of a
checkpointed rollout, with adjoint_fresh on every step but the last where the pairs are exact
and nowhere else; a forced wrong fusion is caught by the same comparison."""

from typing import Any

import numpy as np
import pytest
import warp as wp

from adjointgen.config import Configuration
from adjointgen.runtime.rollout import checkpointed_rollout
from adjointgen.runtime.step import _TapeRecord
from adjointgen.tools.verify import GeneratedSide, random_state

STEPS = 6


@wp.kernel
def _weighted_sum(f: wp.array4d(dtype=Any), c: wp.array4d(dtype=Any), loss: wp.array(dtype=Any)):
    l, i, j, k = wp.tid()
    wp.atomic_add(loss, 0, f[l, i, j, k] * c[l, i, j, k])


_SIDES = {}


def _side(label, shape):
    key = (label, shape)
    if key not in _SIDES:
        _SIDES[key] = GeneratedSide(Configuration.parse(label), shape)
    return _SIDES[key]


def _data(side, seed=0):
    dtype = np.float64 if side.config.is_fp64 else np.float32
    f0 = random_state(side.config, tuple(side.stepper.grid.shape), seed).astype(dtype)
    rng = np.random.default_rng(seed + 1)
    return f0, side.f1_prepared.astype(dtype), [rng.standard_normal(f0.shape).astype(dtype) for _ in range(3)]


def _tape_loop(side, fusion, steps=STEPS, loss_after=None, loss_on=0, backwards=1, zero_between=False, spy=None,
               bc_mask=None):
    """XLB's loop on a tape from the test state; the loss: <c0, final f_0> + <c1, final f_1> (the
    last step's input buffer) + <c2, f_0 (``loss_on`` 0) or f_1 (1) after step ``loss_after``>,
    recorded between two steps.
    Returns the gradients of the initial f_0, f_1 and omega after ``backwards`` backward passes."""
    step = side.step
    f0, f1, (c0, c1, c2) = _data(side)
    dtype = wp.float64 if side.config.is_fp64 else wp.float32
    first, second = wp.array(f0, requires_grad=True), wp.array(f1, requires_grad=True)
    omega = wp.array([1.6], dtype=step.compute_dtype, requires_grad=True)
    loss = wp.zeros(1, dtype=dtype, requires_grad=True)
    cs = [wp.array(c) for c in (c0, c1, c2)]
    step.tape_fusion = fusion
    tape = wp.Tape()
    f_0, f_1 = first, second
    try:
        with tape:
            for t in range(steps):
                f_0, f_1 = step(f_0, f_1, side.bc_mask if bc_mask is None else bc_mask, side.missing_mask, omega, t)
                f_0, f_1 = f_1, f_0
                if t == loss_after:
                    wp.launch(_weighted_sum, dim=f_0.shape, inputs=[(f_0, f_1)[loss_on], cs[2], loss])
            wp.launch(_weighted_sum, dim=f_0.shape, inputs=[f_0, cs[0], loss])
            wp.launch(_weighted_sum, dim=f_1.shape, inputs=[f_1, cs[1], loss])
    finally:
        step.tape_fusion = True
    runs = [record.kernels() for record in tape.launches if isinstance(record, _TapeRecord)]
    if spy is not None:
        spy.extend(runs)
    for n in range(backwards):
        if zero_between and n:
            tape.zero()
        tape.backward(loss=loss)
    return [first.grad.numpy().copy(), second.grad.numpy().copy(), omega.grad.numpy().copy()]


def _assert_bitwise(a, b):
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


CASES = [("D2Q9/BGK/FP64FP64", (6, 5), True), ("D3Q19/BGK/FP32FP32", (4, 5, 3), True),
         ("D2Q9/BGK/FP64FP64/cavity", (7, 6), True),  # bounce-back reads through slots and adjoint_gather
         ("D2Q9/BGK/FP64FP64/obstacle", (8, 6), False),  # solid cells (bc_mask 255): never fused
         ("D2Q9/BGK/FP64FP64/channel", (8, 6), False)]  # ZouHe: in place, reads f_1: never fused


@pytest.mark.parametrize("label, shape, fused", CASES)
def test_fused_tape_steps_are_bitwise_the_accumulating_ones(label, shape, fused):
    side = _side(label, shape)
    runs = []
    fusion = _tape_loop(side, True, spy=runs)
    _assert_bitwise(fusion, _tape_loop(side, False))
    if fused:  # every step but the last writes its adj_f_0; the first also clears its adj_f_1
        assert runs == [(True, False)] + [(True, True)] * (STEPS - 2) + [(False, True)]
    else:
        assert runs == [(False, False)] * STEPS
    assert np.any(fusion[0]) and np.any(fusion[2])


@pytest.mark.parametrize("label, shape, fused", CASES[:3])
def test_fused_tape_steps_equal_a_checkpointed_rollout(label, shape, fused):
    side = _side(label, shape)
    f0, f1, (c0, c1, _) = _data(side)
    omega = wp.zeros(1, dtype=side.step.compute_dtype)
    result = checkpointed_rollout(side.step, wp.array(f0), wp.array(f1), side.bc_mask, side.missing_mask, 1.6, STEPS, 2,
                                  progress=False)
    g0, g1 = result.backward(adj_f_0=wp.array(c0), adj_f_1=wp.array(c1), adj_omega=omega)
    tape = _tape_loop(side, True)
    tolerance = 1e-12 if side.config.is_fp64 else 1e-5
    for ours, theirs in zip(tape, (g0.numpy(), g1.numpy(), omega.numpy())):
        assert np.max(np.abs(ours - theirs)) <= tolerance * np.max(np.abs(theirs))


@pytest.mark.parametrize("label, shape, loss_on", [(*CASES[0][:2], 1), (*CASES[2][:2], 0), (*CASES[2][:2], 1)])
def test_a_loss_between_two_steps_splits_the_run(label, shape, loss_on):
    side = _side(label, shape)
    runs = []
    fusion = _tape_loop(side, True, loss_after=2, loss_on=loss_on, spy=runs)
    _assert_bitwise(fusion, _tape_loop(side, False, loss_after=2, loss_on=loss_on))
    # steps 0-2 and 3-5 are two runs: step 2 (before the loss) accumulates, step 3 clears its adj_f_1
    assert runs == [(True, False), (True, True), (False, True), (True, False), (True, True), (False, True)]
    assert not np.array_equal(fusion[0], _tape_loop(side, True)[0])  # the loss between counts


@pytest.mark.parametrize("zero_between", [False, True])
def test_backward_twice_or_after_zero_is_what_the_accumulating_path_gives(zero_between):
    side = _side(*CASES[2][:2])
    fusion = _tape_loop(side, True, backwards=2, zero_between=zero_between)
    _assert_bitwise(fusion, _tape_loop(side, False, backwards=2, zero_between=zero_between))
    if zero_between:
        _assert_bitwise(fusion, _tape_loop(side, True))


def test_a_reset_tape_starts_new_runs():
    side = _side(*CASES[0][:2])
    step = side.step
    f0, f1, _ = _data(side)
    a, b = wp.array(f0, requires_grad=True), wp.array(f1, requires_grad=True)
    tape = wp.Tape()
    with tape:
        step(a, b, side.bc_mask, side.missing_mask, 1.6, 0)
    tape.reset()
    with tape:
        step(b, a, side.bc_mask, side.missing_mask, 1.6, 1)
    assert [r.kernels() for r in tape.launches] == [(False, False)]


def _with_a_solid_cell(side):
    solid = side.bc_mask.numpy().copy()  # numpy() of a CPU array is a view of it
    solid[0, 1, 1, 0] = 255
    return wp.array(solid)


def test_a_solid_cell_is_never_fused():
    side = _side(*CASES[0][:2])  # a module with adjoint_fresh; the kept cell: only the mask says
    bc_mask, runs = _with_a_solid_cell(side), []
    _assert_bitwise(_tape_loop(side, True, spy=runs, bc_mask=bc_mask), _tape_loop(side, False, bc_mask=bc_mask))
    assert runs == [(False, False)] * STEPS


@pytest.mark.parametrize("loss_after, solid", [(2, False), (None, True)])
def test_a_wrong_fusion_is_caught(loss_after, solid, monkeypatch):
    """Negative control: fresh adjoints forced onto every step but the last, across a loss recorded
    between steps (on the buffer of the fused pair: the previous state, f_1 after the swap), or
    over solid cells, change the gradients, and the comparison sees it."""
    side = _side(*CASES[0][:2])
    bc_mask = _with_a_solid_cell(side) if solid else None
    reference = _tape_loop(side, False, loss_after=loss_after, loss_on=1, bc_mask=bc_mask)
    last = STEPS - 1
    monkeypatch.setattr(_TapeRecord, "kernels", lambda self: (self.inputs[5] != last, self.inputs[5] != 0))
    forced = _tape_loop(side, False, loss_after=loss_after, loss_on=1, bc_mask=bc_mask)
    assert not np.array_equal(forced[0], reference[0])


def test_copies_of_recorded_inputs_are_reused_once_the_tape_lets_go():
    """A second recording takes the copies the first tape held (no new allocation per step) and
    gives the same bits; while a tape holds its records, their copies are never handed out."""
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    side.step.saved_buffers.clear()
    first = _tape_loop(side, fusion=True)  # the tape is dropped on return: its STEPS copies come back
    assert len(side.step.saved_buffers) == STEPS
    pointers = {array.ptr for arrays in side.step.saved_buffers._free.values() for array in arrays}
    second = _tape_loop(side, fusion=True)
    for a, b in zip(first, second):
        _assert_bitwise(a, b)
    assert {array.ptr for arrays in side.step.saved_buffers._free.values() for array in arrays} == pointers
    f0, f1, _ = _data(side)
    a, b = wp.array(f0, requires_grad=True), wp.array(f1, requires_grad=True)
    tape = wp.Tape()
    with tape:
        side.step(a, b, side.bc_mask, side.missing_mask, 1.6, 0)
    assert len(side.step.saved_buffers) == STEPS - 1  # one copy is in use by the live tape
    tape.reset()
    assert len(side.step.saved_buffers) == STEPS
