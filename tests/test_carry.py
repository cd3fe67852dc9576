"""The fresh adjoint of a step that updates f_0 in place (its carry) and adjoint_kept: when the
compiler gives them, and what they print. That they equal the accumulating adjoint bit for bit in
a rollout is tested in test_rollout.py."""

import pytest
import sympy

from adjointgen.compiler import access, guards, reverse
from adjointgen.compiler.guards import Need
from adjointgen.compiler.ir import Param
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.plan import plan_module
from adjointgen.config import Configuration
from tests.helpers import lower_source

PARAMS = [Param("f_0", "array", "float64", 4), Param("f_1", "array", "float64", 4), Param("bc_mask", "array", "uint8", 4)]
HEAD = ("def k(f_0: wp.array4d(dtype=float), f_1: wp.array4d(dtype=float), bc_mask: wp.array4d(dtype=wp.uint8)):\n"
        "    i, j, k = wp.tid()\n    bc = bc_mask[0, i, j, k]\n    x = f_0[0, i, j, k]\n    y = f_1[0, i, j, k]\n")


def _plan(read_at: int, overwritten_at: int):
    """A one-population step that reads its f_1 where the id is ``read_at`` and overwrites its
    f_0 in place where it is ``overwritten_at`` (XLB's ZouHe pattern when the two are equal)."""
    program = lower_source(HEAD + (
        f"    f_1[0, i, j, k] = x * 2.0 + wp.where(bc == wp.uint8({read_at}), y, 0.0)\n"
        f"    f_0[0, i, j, k] = wp.where(bc == wp.uint8({overwritten_at}), x * 3.0, f_0[0, i, j, k])\n"), PARAMS)
    accesses = access.analyse(program, unit_axes=(2,))
    names = Namer.for_program(program)
    adjoint = reverse.differentiate(program, accesses, names)
    return plan_module(Configuration.parse("D2Q9/BGK/FP64FP64"), program, adjoint, accesses, guards.cell_guards(program),
                       names, [], "toy")


def test_condition_ids_reads_tests_of_the_id_and_nothing_else():
    b, c = sympy.symbols("b c")
    assert guards.condition_ids(sympy.And(sympy.Eq(b, 2), sympy.Ne(b, 3)), b) == Need(frozenset({2}))
    assert guards.condition_ids(sympy.Or(sympy.And(sympy.Eq(b, 2), sympy.Ne(b, 3)), sympy.Eq(b, 3)), b) == Need(frozenset({2, 3}))
    assert guards.condition_ids(sympy.Ne(b, 2), b) is None  # every id but one: not a finite set
    assert guards.condition_ids(sympy.Eq(c, 2), b) is None and guards.condition_ids(sympy.true, b) is None


def test_a_step_updating_f_0_in_place_gets_a_fresh_variant_through_the_carry():
    plan = _plan(read_at=2, overwritten_at=2)
    assert plan.manifest.in_place == ("f_0",) and plan.manifest.has("adjoint_fresh")
    fresh = "\n".join(plan.adjoint.writes).split("if wp.static(fresh):")[1].split("\nelse:")[0]
    # the adjoint of the f_1 read goes into the carry, only where the cell overwrote f_0; adj_f_1 is left alone
    # (the test of id 2 through the split step's flag, constant False in the rest part)
    assert "    if bc_mask_0_is_2:\n        seed_f_0[0, i, j, k] = " in fresh and "adj_f_1[" not in fresh
    # the seed of the overwritten element is loaded only where it was overwritten
    assert plan.adjoint.in_place_seeds[-2:][0].startswith("if bc_mask_0_is_2:")


def test_no_fresh_variant_where_f_1_is_read_where_f_0_is_not_overwritten():
    """The carry would then hold a value outside the overwritten elements, which the next step
    (reading the carry only there) would drop: the compiler gives no fresh variant."""
    plan = _plan(read_at=3, overwritten_at=2)
    assert plan.manifest.in_place == ("f_0",) and not plan.manifest.has("adjoint_fresh")
    assert not plan.manifest.has("adjoint_kept")


@pytest.fixture(scope="module")
def obstacle_text() -> str:
    from adjointgen.compiler.pipeline import generate
    from adjointgen.xlb.support import make_stepper

    config = Configuration.parse("D2Q9/BGK/FP64FP64/obstacle")
    return generate(make_stepper(config, "warp", (10, 8)), config)


def test_adjoint_kept_works_from_the_kept_cells_side(obstacle_text):
    """Cells not kept return after reading their own id; a kept cell writes its 9 elements, the 8
    it would have read where their cell is not kept, and its 9 carry elements (one writer each)."""
    kept = obstacle_text.split("def adjoint_kept(")[1]
    assert kept.index("if not kept:\n        return") < kept.index("kept_reader_")  # neighbours' ids only where kept
    writes = [line.strip() for line in kept.splitlines() if line.strip().startswith(("adj_f_0[", "seed_f_0["))]
    own = [line for line in writes if ", i, j, k] = " in line]
    assert len(own) == 18 and len(writes) == 18 + 8  # 9 own gradient and 9 carry elements, 8 read ones
    assert all(line.endswith("= wp.float64(0.0)") for line in writes if line not in own)
    assert kept.count("== wp.uint8(255)") == 1 + 8  # its own id and those of its 8 neighbours
    assert "adj_f_0[0, i, j, k] = seed_f_0[0, i, j, k]" in kept  # population 0 is read by its own cell


# walls, ZouHe in and out, solid; walls, Regularized in, extrapolation out (listed for its neighbourhood reads)
@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP64FP64/obstacle", (10, 8)), ("D2Q9/BGK/FP64FP64/extrapolation", (10, 8))])
def test_a_split_step_equals_the_one_launch_step_bit_for_bit(label, shape, monkeypatch):
    """Steps with ZouHe conditions (Manifest.listed_ids) run their forward and adjoint in parts on
    a GPU: the ZouHe cells from a list (the adjoint one launch per ZouHe id) or, without a list,
    in launches over the grid that return at the other cells; the other cells in a kernel compiled
    without ZouHe's code. Forced on here (the CPU default is one launch): the forward (direct and
    packed, two steps), the accumulating and fresh (with the carry) adjoints, with and without the
    omega gradient: the same bits as one launch. A part left out is caught."""
    import numpy as np

    from adjointgen.tools.verify import GeneratedSide, random_state

    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    step = side.step
    assert step.manifest.listed_ids == (2, 3) and step.manifest.has("adjoint_fresh_rest")
    assert all(step.manifest.has(f"adjoint_{p}_{k}") for p in ("listed", "grid") for k in (2, 3))
    f0 = random_state(config, shape, 0)
    results = {mode: _split_outputs(step, side, f0, mode) for mode in ("whole", "listed", "grid")}
    assert all(np.array_equal(one, two) for one, two in zip(results["whole"], results["listed"]))
    assert all(np.array_equal(one, two) for one, two in zip(results["whole"], results["grid"]))
    ids = side.bc_mask.numpy()[0]
    assert 0 < int(np.isin(ids, step.manifest.listed_ids).sum()) < ids.size // 4
    # negative control: the last part (ZouHe id 3's cells) left out
    parts = step._parts
    monkeypatch.setattr(step, "_parts", lambda *args, **kwargs: parts(*args, **kwargs)[:-1])
    short = _split_outputs(step, side, f0, "grid")
    assert not all(np.array_equal(one, two) for one, two in zip(results["whole"], short))


def _split_outputs(step, side, f0, mode: str) -> list:
    """The adjoints (accumulating and fresh, with and without omega's) and two forward steps of a
    split step on ``side``, run in one launch (``mode`` "whole"), with lists ("listed") or over
    the grid in parts ("grid")."""
    import numpy as np
    import warp as wp

    step.split_listed, step.split_grid = mode == "listed", mode == "grid"
    assert (step.listed_cells(side.bc_mask) is not None) == (mode == "listed")
    cotangents = [np.random.default_rng(seed).standard_normal(f0.shape) for seed in (1, 2)]
    out = []
    for fresh, with_omega in ((False, True), (False, False), (True, True), (True, False)):
        step.state_kernels = not with_omega
        adj_f_0, adj_f_1 = wp.array(np.zeros_like(f0) if fresh else cotangents[0]), wp.array(cotangents[1])
        carry = wp.zeros_like(adj_f_0) if fresh else None
        omega = wp.zeros(1, dtype=wp.float64) if with_omega else None
        step.adjoint(wp.array(f0), wp.array(side.f1_prepared), side.bc_mask, side.missing_mask, 1.6, 0, adj_f_0, adj_f_1,
                     omega, fresh=fresh, carry=carry)
        out += [a.numpy() for a in (adj_f_0, adj_f_1, omega, carry) if a is not None]
    f_0, f_1 = wp.array(f0), wp.array(side.f1_prepared)  # the forward, in place on f_0 at ZouHe cells
    step.forward(f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 0)
    step.forward_launch(f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 1).launch()  # packed (rollouts)
    step.split_listed = step.split_grid = step.state_kernels = None
    return out + [f_0.numpy(), f_1.numpy()]


def test_each_part_tests_the_ids_it_never_has_through_flags_that_are_false_there(obstacle_text):
    """A split step's bodies test the boundary ids through flags defined after the parts' early
    returns, constant False in the parts whose cells never have that id, so that their compiler
    drops that id's code (NOTES v49, v51, v56): the forward's flags of the listed ids (ZouHe's) are
    False in its rest part; the adjoint's flag of a listed id is True only in the whole grid and
    that id's own parts (``listed_K``, ``grid_K``), any other id's only in the whole grid and the
    rest part. The exit condition's id (255) gets no flag (every part has returned there), and
    the kernels without parts (adjoint_prepare, the gathers) keep the plain tests."""
    import re

    body = obstacle_text.split("# body-sha256")[1]
    flags = re.findall(r"^ *(bc_mask_0_is_(\d+)) = (.*)$", body, flags=re.M)
    assert sorted({(f, k) for f, k, _ in flags}) == [(f"bc_mask_0_is_{k}", str(k)) for k in (1, 2, 3, 4)]
    adjoint = {f'wp.static(part in ("", "listed_{k}", "grid_{k}")) and (bc_mask_0 == wp.uint8({k}))' for k in "23"}
    adjoint |= {f'wp.static(part in ("", "rest")) and (bc_mask_0 == wp.uint8({k}))' for k in "14"}
    # the forward's two, of the listed ids (its listed part does not spill without the others, and
    # its rest part ran 11 % slower with them: NOTES v51)
    forward = {f'wp.static(part in ("", "listed", "grid")) and (bc_mask_0 == wp.uint8({k}))' for k in "23"}
    assert {d for _, _, d in flags} == adjoint | forward and len(flags) == 4 + 2
    for kernel, ids in (("def forward(", "23"), ("def adjoint(", "1234")):
        code = body.split(kernel)[1].split("\n    return wp.kernel")[0]
        skip, after = code.split("return  # run by the listed parts")
        assert "(bc_mask_0 == wp.uint8(2)) or (bc_mask_0 == wp.uint8(3))" in skip.rstrip().splitlines()[-1]
        definitions, uses = after.split(f"bc_mask_0_is_{ids[-1]} = ")[1].split("\n", 1)
        for k in ids:  # past the flags' definitions, only the flags test the ids
            assert f"bc_mask_0 == wp.uint8({k})" not in uses and f"bc_mask_0_is_{k}" in uses
        assert all(f"bc_mask_0_is_{k}" not in after for k in set("1234") - set(ids))
    prepare = body.split("def adjoint_prepare(")[1].split("\n\n\n")[0]
    assert "bc_mask_0_is" not in prepare and "== wp.uint8(2)" in prepare


def test_a_flag_constant_in_the_wrong_part_is_caught(obstacle_text, tmp_path):
    """Negative control for the split's flags: the comparison of the split forward
    (forward_rest over the grid, then forward_listed over the list) with the one launch passes
    with the module as generated, and fails when a listed id's flag is made constant False in the
    listed part instead of the rest part (ZouHe's inlet then runs as a plain cell)."""
    import importlib.util

    import numpy as np
    import warp as wp

    from adjointgen.tools.verify import GeneratedSide, random_state

    side = GeneratedSide(Configuration.parse("D2Q9/BGK/FP64FP64/obstacle"), (10, 8))
    ids = side.bc_mask.numpy()[0]
    cells = wp.array(np.argwhere(np.isin(ids, side.step.manifest.listed_ids)).astype(np.int32), dtype=wp.int32)
    f0 = random_state(side.config, (10, 8), 0)

    def outputs(module, launches) -> list:
        f_0, f_1 = wp.array(f0), wp.array(side.f1_prepared)
        arrays = {"f_0": f_0, "f_1": f_1, "bc_mask": side.bc_mask, "missing_mask": side.missing_mask, "omega_in": 1.6,
                  "timestep": 0, "saved_f_0": wp.zeros_like(f_0), "listed_cells": cells}
        for name, dim in launches:
            kernel = getattr(module, name)
            wp.launch(kernel, dim=dim, inputs=[arrays[arg.label] for arg in kernel.adj.args])
        return [f_0.numpy(), f_1.numpy()]

    def split_equals_one_launch(text: str, name: str) -> bool:
        (tmp_path / f"{name}.py").write_text(text)
        spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        one = outputs(module, [("forward", ids.shape)])
        split = outputs(module, [("forward_rest", ids.shape), ("forward_listed", cells.shape[0])])
        return all(np.array_equal(a, b) for a, b in zip(one, split))

    flag = 'bc_mask_0_is_2 = wp.static(part in ("", "listed", "grid"))'
    assert obstacle_text.count(flag) == 1  # the forward's
    assert split_equals_one_launch(obstacle_text, "flags_as_generated")
    assert not split_equals_one_launch(obstacle_text.replace(flag, 'bc_mask_0_is_2 = wp.static(part in ("", "rest"))'), "flag_wrong")
