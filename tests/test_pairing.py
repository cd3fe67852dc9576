"""Paired fresh adjoints (adjointgen.compiler.pairing): which programs get them, what they write,
the same bits as the slots and adjoint_gather, and a mask that does not mirror caught."""

import numpy as np
import pytest
import warp as wp

from adjointgen.compiler import guards, pairing
from adjointgen.compiler.pipeline import run_pipeline
from adjointgen.config import Configuration
from adjointgen.errors import PairingMismatch
from adjointgen.manifest import adjoint_kernel_name
from adjointgen.runtime.rollout import checkpointed_rollout
from adjointgen.tools.verify import GeneratedSide, random_state
from adjointgen.xlb.support import make_stepper

CAVITY = "D2Q9/BGK/FP64FP64/cavity"
SHAPE = (9, 8)


def _pairing_of(label: str):
    config = Configuration.parse(label)
    shape = (5, 4, 4) if config.dim == 3 else (5, 4)
    stages = run_pipeline(make_stepper(config, "warp", shape), config)
    return stages.plan.adjoint, stages.plan.manifest


@pytest.mark.parametrize("label, paired", [
    (CAVITY, True),  # halfway bounce-back walls and an EquilibriumBC lid: every slot pairs
    ("D2Q9/BGK/FP64FP64", False),  # periodic: no slots
    ("D2Q9/BGK/FP64FP64/channel", False),  # ZouHe updates f_0 in place
])
def test_which_modules_get_paired_variants(label, paired):
    adjoint, manifest = _pairing_of(label)
    names = {adjoint_kernel_name(True, state_only, paired=True) for state_only in (False, True)}
    assert bool(names & set(manifest.kernels)) == paired
    assert any(variant.paired for variant in adjoint.variants) == paired


def test_the_paired_writes_leave_the_slots_alone_and_read_one_word_per_side():
    adjoint, _ = _pairing_of(CAVITY)
    writes = "\n".join(adjoint.writes)
    paired = writes.split("if wp.static(paired):\n")[1].split("\nelse:\n    if wp.static(fresh):")[0]
    assert "adj_slots" not in paired and "adj_slots" in writes  # the other variants keep them
    # the writer: population 1's element is left to its reader where bit 0 of its word is set
    assert "    paired_writes = adj_pairs[0, i, j, k]" in paired and "    paired_reads = adj_pairs[1, i, j, k]" in paired
    assert ("if (paired_writes & wp.int32(1)) == wp.int32(0):\n        adj_f_0[1, i, j_m1, k] = adj_f_0_1\n"
            "    elif adj_f_0_1 != wp.float64(0.0):\n        adj_pairing_error[0] = 1") in paired
    # the reader: its slot's value written into its own element where its bit 0 is set
    assert ("if (paired_reads & wp.int32(1)) != wp.int32(0):\n        adj_f_0[1, i, j, k] = adj_f_0_1_1\n"
            "    elif adj_f_0_1_1 != wp.float64(0.0):\n        adj_pairing_error[0] = 1") in paired
    assert paired.count("adj_pairing_error[0] = 1") == 16  # 8 populations, both sides


def test_adjoint_pairs_evaluates_one_test_for_both_sides():
    config = Configuration.parse(CAVITY)
    stages = run_pipeline(make_stepper(config, "warp", (5, 4)), config)
    body = "\n".join(stages.plan.pairs.body)
    # slot 0 (population 1, pulled from j - 1): the writer tests its reader at j - 1, the reader its writer at j + 1
    assert "bc_mask_0_reader_at_0 = bc_mask[0, i, j_m1, k]" in body and "bc_mask_0_writer_at_0 = bc_mask[0, i, j_p1, k]" in body
    assert "if missing_mask[1, i, j, k] and (bc_mask_0_reader_at_0 == wp.uint8(1)):" in body
    assert "and missing_mask[1, i, j_p1, k]:\n        paired_reads = paired_reads | wp.int32(1)" in body
    assert body.endswith("adj_pairs[0, i, j, k] = paired_writes\nadj_pairs[1, i, j, k] = paired_reads")


def test_no_pairing_for_a_split_adjoint_or_a_slot_written_at_every_id():
    config = Configuration.parse(CAVITY)
    stages = run_pipeline(make_stepper(config, "warp", (5, 4)), config)
    program, accesses, cell_guards = stages.program, stages.accesses, stages.guards
    needs = {slot: guards.Need(frozenset({1})) for slot in range(len(accesses.slots))}
    assert pairing.find(program, accesses, cell_guards, needs, split=False) is not None
    assert pairing.find(program, accesses, cell_guards, needs, split=True) is None  # split adjoints: never
    unguarded = dict(needs)
    unguarded.pop(0)
    assert pairing.find(program, accesses, cell_guards, unguarded, split=False) is None  # a slot written everywhere


def _gradient(side, f0, cotangent, bc_mask, missing_mask=None):
    f_0, f_1 = wp.array(f0), wp.array(side.f1_prepared)
    missing_mask = side.missing_mask if missing_mask is None else missing_mask
    result = checkpointed_rollout(side.step, f_0, f_1, bc_mask, missing_mask, 1.6, 6, 3, progress=False)
    return [a.numpy() for a in result.backward(adj_f_0=wp.array(cotangent))]


@pytest.fixture(scope="module")
def cavity():
    config = Configuration.parse(CAVITY)
    side = GeneratedSide(config, SHAPE)
    f0 = random_state(config, SHAPE, 0)
    cotangent = np.random.default_rng(3).standard_normal(f0.shape)
    return side, f0, cotangent


def test_a_paired_rollout_is_bitwise_the_one_with_slots(cavity, monkeypatch):
    side, f0, cotangent = cavity
    launched = []
    original = side.step.kernel
    monkeypatch.setattr(side.step, "kernel", lambda name: (launched.append(name), original(name))[1])
    side.step.pairing = True
    paired = _gradient(side, f0, cotangent, side.bc_mask)
    assert "adjoint_fresh_paired" in launched and "adjoint_gather" not in launched
    launched.clear()
    side.step.pairing = False
    try:
        slots = _gradient(side, f0, cotangent, side.bc_mask)
    finally:
        side.step.pairing = True
    assert "adjoint_fresh" in launched and "adjoint_gather" in launched
    for a, b in zip(paired, slots):
        assert np.array_equal(a, b)


def test_a_mask_that_does_not_mirror_is_caught_and_then_gets_the_slots(cavity):
    side, f0, cotangent = cavity
    bc = side.bc_mask.numpy()[0, :, :, 0]
    missing = side.missing_mask.numpy()
    c = np.asarray(side.step.stepper.velocity_set._c).T
    opposite = [int(np.flatnonzero((c == -c[p]).all(axis=1))[0]) for p in range(len(c))]
    # a wall cell x reflecting population p, and the cell w it would have pulled opp(p) from
    x, p = next(((x, p) for x in zip(*np.nonzero(bc == 1)) for p in range(1, len(c)) if missing[(opposite[p], *x, 0)]))
    w = tuple((x[a] + c[p][a]) % bc.shape[a] for a in range(2))
    assert missing[(p, *w, 0)]
    missing[(p, *w, 0)] = False  # w now streams p from x: its read has an adjoint, and x's slot too
    edited = wp.array(missing, dtype=wp.bool)
    bc_mask = wp.clone(side.bc_mask)  # a mask object of its own (the step remembers masks that failed)
    with pytest.raises(PairingMismatch, match="do not mirror"):
        _gradient(side, f0, cotangent, bc_mask, missing_mask=edited)
    again = _gradient(side, f0, cotangent, bc_mask, missing_mask=edited)  # the slots from now on
    side.step.pairing = False
    try:
        reference = _gradient(side, f0, cotangent, bc_mask, missing_mask=edited)
    finally:
        side.step.pairing = True
    for a, b in zip(again, reference):
        assert np.array_equal(a, b)
