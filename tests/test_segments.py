"""Segment plans (runtime.plan, runtime.schedules.ResidualSegments, the rollout's residual path):
with ``scalar_gradients=False`` a rollout keeps the residuals of a segment's steps and reverses
them from those. The plan takes the fewest segments the budget holds (the last as long as it
can be), the rollout runs exactly the plan, the gradients are bit for bit the binomial plan's for
every budget (fresh and accumulating sweeps, a solid cell, the cavity's slots), requests the plan
cannot serve are refused, too small a budget falls back to the binomial plan, and a wrong residual
is caught."""

import numpy as np
import pytest
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime import rollout
from adjointgen.runtime.plan import Storage, plan_for_segments
from adjointgen.runtime.schedules import ResidualSegments
from adjointgen.tools.verify import GeneratedSide, random_state
from tests.test_tape_step import _with_a_solid_cell

STEPS = 20
_SIDES = {}


def _side(label, shape):
    if (label, shape) not in _SIDES:
        _SIDES[label, shape] = GeneratedSide(Configuration.parse(label), shape)
    return _SIDES[label, shape]


def _rollout(side, shape, bc_mask=None, adj_f_1=False, **budget):
    f0 = random_state(side.config, shape, 0)
    rng = np.random.default_rng(1)
    cotangents = [rng.standard_normal(f0.shape) for _ in range(2)]
    result = adjointgen.checkpointed_rollout(side.step, wp.array(f0), wp.array(side.f1_prepared),
                                             side.bc_mask if bc_mask is None else bc_mask, side.missing_mask, 1.6, STEPS,
                                             progress=False, **budget)
    g0, g1 = result.backward(adj_f_0=wp.array(cotangents[0]), adj_f_1=wp.array(cotangents[1]) if adj_f_1 else None)
    return result, g0.numpy(), g1.numpy()


def test_segment_starts_split_the_steps_before_the_last_segment_evenly():
    stored = Storage(False, False, False)
    plan = plan_for_segments(20, 3, 100, 25, stored, last=8)
    assert plan.segment_starts() == [0, 6, 12] and plan.forward_steps == 20 + 12 - 2
    assert plan.memory_bytes == 6 * 100 + 2 * 100 + 8 * 25
    assert plan_for_segments(20, 3, 100, 25, stored).segment_starts() == [0, 7, 13]  # the last: 7, the longest
    with pytest.raises(ValueError):
        plan_for_segments(20, 3, 100, 25, stored, last=5)  # 15 steps in two segments of at most 5: no
    actions = [str(a) for a in ResidualSegments(10, [0, 3, 6])]
    assert actions[:4] == ["Forward(0, 3, True, False, StorageType.RAM)", "Forward(3, 6, True, False, StorageType.RAM)",
                           "Forward(6, 10, False, True, StorageType.WORK)", "EndForward()"]
    assert actions[4:7] == ["Reverse(10, 6, True)", "Move(3, StorageType.RAM, StorageType.WORK)",
                            "Forward(3, 6, False, True, StorageType.WORK)"]
    assert actions[-1] == "EndReverse()"


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP64FP64", (8, 6)), ("D2Q9/BGK/FP64FP64/cavity", (7, 6))])
def test_every_budget_gives_the_binomial_plans_gradients_bit_for_bit(label, shape):
    side = _side(label, shape)
    _, reference, reference_1 = _rollout(side, shape, snapshots=4)
    for snapshots in (0, 1, 2, 5, STEPS - 1):
        result, g0, g1 = _rollout(side, shape, snapshots=snapshots, scalar_gradients=False)
        plan = result.plan
        assert plan.segment and plan.segments == snapshots + 1
        assert result.stats.forward_steps == plan.forward_steps == 2 * STEPS - plan.segment - snapshots
        assert 0 < result.stats.peak_residuals <= plan.segment and result.stats.peak_stored_states <= snapshots
        assert g0.tobytes() == reference.tobytes() and g1.tobytes() == reference_1.tobytes(), snapshots


def test_a_memory_budget_takes_the_fewest_segments_it_holds():
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    f0 = wp.array(random_state(side.config, (8, 6), 0))
    state, residual = f0.size * 8, 3 * 48 * 8  # one FP64 population array; one step's 3 residuals
    fixed = 6 * state
    # one segment (every step's residuals) needs fixed + 20 R; with one snapshot (S = 3 R here) the
    # last segment may hold (budget - fixed - S) / R = 10 steps, and the first takes the other 10
    budget = fixed + 2 * state + 7 * residual
    plan = adjointgen.plan_rollout(side.step, f0, side.bc_mask, STEPS, memory=budget, scalar_gradients=False)
    assert (plan.segments, plan.segment, plan.memory_bytes, plan.forward_steps) == (2, 10, budget, 29)
    result, gradient, _ = _rollout(side, (8, 6), memory=budget, scalar_gradients=False)
    assert result.plan == plan and result.stats.forward_steps == plan.forward_steps
    roomy = adjointgen.plan_rollout(side.step, f0, side.bc_mask, STEPS, memory="1GB", scalar_gradients=False)
    assert (roomy.segments, roomy.forward_steps) == (1, STEPS)  # every step's residuals: nothing recomputed
    # less than segments need (~2 sqrt(T S R)): the binomial plan
    small = adjointgen.plan_rollout(side.step, f0, side.bc_mask, STEPS, memory=fixed + 2 * state + state // 2,
                                    scalar_gradients=False)
    assert not small.segment and small.snapshots == 1
    _, binomial, _ = _rollout(side, (8, 6), snapshots=1)
    assert gradient.tobytes() == binomial.tobytes()


@pytest.mark.parametrize("solid, adj_f_1", [(True, False), (False, True)])
def test_kept_cells_and_an_accumulating_sweep_give_the_same_bits(solid, adj_f_1):
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    bc_mask = _with_a_solid_cell(side) if solid else None
    _, r0, r1 = _rollout(side, (8, 6), bc_mask, adj_f_1, snapshots=3)
    _, g0, g1 = _rollout(side, (8, 6), bc_mask, adj_f_1, snapshots=3, scalar_gradients=False)
    assert g0.tobytes() == r0.tobytes() and g1.tobytes() == r1.tobytes() and np.any(g0)


def test_what_a_segment_plan_cannot_give_is_refused():
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    f0 = wp.array(random_state(side.config, (8, 6), 0))
    for request in ({"adj_omega": wp.zeros(1, dtype=wp.float64)}, {"observe": lambda *args: None}):
        result = adjointgen.checkpointed_rollout(side.step, f0, wp.array(side.f1_prepared), side.bc_mask, side.missing_mask,
                                                 1.6, STEPS, 2, progress=False, scalar_gradients=False)
        with pytest.raises(RuntimeArgumentError, match="scalar_gradients=False"):
            result.backward(adj_f_0=f0, **request)


def test_a_tape_wanting_omegas_gradient_refuses_a_rollout_without_it():
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    f0 = wp.array(random_state(side.config, (8, 6), 0), requires_grad=True)
    f1 = wp.array(side.f1_prepared, requires_grad=True)
    omega = wp.array([1.6], dtype=wp.float64, requires_grad=True)
    with wp.Tape():
        with pytest.raises(RuntimeArgumentError, match="omega require"):
            adjointgen.checkpointed_rollout(side.step, f0, f1, side.bc_mask, side.missing_mask, omega, STEPS, 2,
                                            progress=False, scalar_gradients=False)


def test_a_wrong_residual_is_caught(monkeypatch):
    """Negative control: one step's residuals zeroed after forward_residuals wrote them change the
    gradient (the comparison above would see it)."""
    side = _side("D2Q9/BGK/FP64FP64", (8, 6))
    _, reference, _ = _rollout(side, (8, 6), snapshots=3, scalar_gradients=False)
    original = rollout._ResidualPool.forward

    def spoiled(pool, f_0, f_1, timestep):
        kept = original(pool, f_0, f_1, timestep)
        if timestep == 7:
            kept.array.fill_(1.0)  # a density of one, no momentum: not this step's values
        return kept

    monkeypatch.setattr(rollout._ResidualPool, "forward", spoiled)
    _, wrong, _ = _rollout(side, (8, 6), snapshots=3, scalar_gradients=False)
    assert not np.array_equal(wrong, reference)
