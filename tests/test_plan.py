"""Rollout plans (adjointgen/runtime/plan.py): a memory budget becomes stored states; the plan's
forward steps and bytes are what the rollout then runs and holds; bad budgets are clear errors."""

import numpy as np
import pytest
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime.plan import StepTimes, binomial_forward_steps, parse_memory
from adjointgen.tools.verify import GeneratedSide, random_state

STEPS = 20
SHAPE = (8, 6)


@pytest.fixture(scope="module")
def periodic():
    config = Configuration.parse("D2Q9/BGK/FP64FP64")
    side = GeneratedSide(config, SHAPE)
    f0 = random_state(config, SHAPE, 0)
    return side, f0, np.random.default_rng(1).standard_normal(f0.shape)


def _rollout(side, f0, cotangent, **budget):
    result = adjointgen.checkpointed_rollout(side.step, wp.array(f0), wp.array(side.f1_prepared), side.bc_mask,
                                             side.missing_mask, 1.6, STEPS, progress=False, **budget)
    gradient, _ = result.backward(adj_f_0=wp.array(cotangent))
    return result, gradient.numpy()


def test_a_memory_budget_becomes_the_snapshots_it_pays_for(periodic):
    side, f0, cotangent = periodic
    array = f0.size * 8  # one FP64 population array
    # fixed: work, final and adjoint pairs (6 arrays) and one kept input (f_0: the step reads no f_1);
    # a snapshot of this periodic step is f_0 alone
    budget = 7 * array + 10 * array + array // 2
    plan = adjointgen.plan_rollout(side.step, wp.array(f0), side.bc_mask, STEPS, memory=budget)
    assert (plan.snapshots, plan.snapshot_bytes, plan.memory_bytes) == (10, array, 17 * array)
    assert plan.forward_steps == binomial_forward_steps(STEPS, 10) == 29  # r = 2: 2 * 20 - C(12, 1) + 1
    result, gradient = _rollout(side, f0, cotangent, memory=budget)
    assert result.plan == plan
    assert result.stats.forward_steps == plan.forward_steps  # the plan is what runs
    assert result.stats.peak_stored_states <= plan.snapshots + 1
    _, by_count = _rollout(side, f0, cotangent, snapshots=10)
    _, everything = _rollout(side, f0, cotangent, snapshots=STEPS)
    assert np.array_equal(gradient, by_count) and np.array_equal(gradient, everything)


def test_room_for_every_input_stores_them_all(periodic):
    side, f0, cotangent = periodic
    plan = adjointgen.plan_rollout(side.step, wp.array(f0), side.bc_mask, STEPS, memory="1GB")
    assert plan.stores_every_input and plan.forward_steps == STEPS
    assert plan.memory_bytes == 6 * f0.size * 8 + STEPS * f0.size * 8
    auto = adjointgen.plan_rollout(side.step, wp.array(f0), side.bc_mask, STEPS, memory="auto")
    assert auto.stores_every_input  # a few KiB per state on any machine that runs the tests
    assert "every step's input" in str(auto) and f"{STEPS} forward steps" in str(auto)


def test_the_expected_time_is_forward_steps_and_one_adjoint_per_step(periodic):
    side, f0, _ = periodic
    plan = adjointgen.plan_rollout(side.step, wp.array(f0), side.bc_mask, STEPS, memory=12 * f0.size * 8)
    assert plan.snapshots == 5 and plan.forward_steps == binomial_forward_steps(STEPS, 5)
    assert plan.expected_seconds(StepTimes(1e-3, 2e-3)) == pytest.approx(plan.forward_steps * 1e-3 + STEPS * 2e-3)


def test_bad_budgets_are_clear_errors(periodic):
    side, f0, cotangent = periodic
    with pytest.raises(RuntimeArgumentError, match="less than a rollout on this grid needs with one snapshot"):
        adjointgen.plan_rollout(side.step, wp.array(f0), side.bc_mask, STEPS, memory=1000)
    with pytest.raises(RuntimeArgumentError, match="either snapshots= .* or memory="):
        _rollout(side, f0, cotangent, snapshots=3, memory="1GB")
    with pytest.raises(RuntimeArgumentError, match="either snapshots= .* or memory="):
        _rollout(side, f0, cotangent)
    with pytest.raises(RuntimeArgumentError, match="write bytes"):
        parse_memory("twenty gigs")


def test_memory_sizes_parse_in_decimal_and_binary_units():
    assert parse_memory("20GB") == 20e9 and parse_memory("16 GiB") == 16 * 2**30 and parse_memory(1234) == 1234
    assert parse_memory("1.5e3MB") == 1.5e9


def test_the_binomial_count_matches_the_schedule_library():
    """Griewank's count (plus the final step) against what checkpoint_schedules' schedule runs
    once the step before each reverse is no longer run (the forward steps of its Forward actions
    minus one per Reverse of the reverse sweep)."""
    import checkpoint_schedules as cs

    for steps, snapshots in ((20, 3), (30, 4), (1000, 15), (1000, 37), (7, 2), (12, 5)):
        actions = list(cs.MultistageCheckpointSchedule(steps, snapshots, 0))
        run = sum(min(a.n1, steps) - a.n0 for a in actions if isinstance(a, cs.Forward))
        end = next(i for i, a in enumerate(actions) if isinstance(a, cs.EndForward))
        skipped = sum(isinstance(a, cs.Reverse) for a in actions[end:]) - 1  # the first reverse follows the sweep
        assert run - skipped == binomial_forward_steps(steps, snapshots), (steps, snapshots)
