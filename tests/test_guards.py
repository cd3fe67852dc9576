"""Cell-kind guards: which statements only matter at some boundary ids, their order for emission,
and the forward kernel that skips them elsewhere (forward parity with XLB is in the verify rows)."""

import pytest
import sympy

from adjointgen.compiler import guards
from adjointgen.compiler.guards import EVERYWHERE, Need
from adjointgen.compiler.ir import Param, Select
from tests.helpers import lower_source

PARAMS = [Param("a", "array", "float64", 4), Param("m", "array", "uint8", 4), Param("b", "array", "float64", 4)]
HEAD = ("def k(a: wp.array4d(dtype=float), m: wp.array4d(dtype=wp.uint8), b: wp.array4d(dtype=float)):\n"
        "    i, j, k = wp.tid()\n    bc = m[0, i, j, k]\n")


def _program(body: str):
    return lower_source(HEAD + body, PARAMS)


def test_need_sets_restrict_and_combine():
    assert EVERYWHERE.only(2) == Need(frozenset({2}))
    assert EVERYWHERE.without(2).only(2) == Need()
    assert EVERYWHERE.without(2).union(Need(frozenset({2}))) == EVERYWHERE
    assert Need(frozenset({1})).union(Need(frozenset({4}))) == Need(frozenset({1, 4}))
    assert Need(frozenset({1, 2})).without(2) == Need(frozenset({1}))
    assert Need(frozenset({1})).guardable and not Need(frozenset({0, 1})).guardable and not EVERYWHERE.without(3).guardable


def test_values_selected_only_at_some_ids_are_guarded_with_those_ids():
    program = _program(
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n    z = a[2, i, j, k]\n"
        "    w = wp.where(bc == wp.uint8(2), y * z, x)\n    v = wp.where(bc == wp.uint8(3), z, w)\n"
        "    b[0, i, j, k] = v\n")
    identity = guards.cell_id_symbol(program, "m")
    assert identity.name == "m_0"
    needs = guards.analyse(program, identity)
    names = {str(s.target): s for s in program.statements}
    load = {names[n].index[0]: n for n in names if n.startswith("a_")}
    assert needs == {load[1]: Need(frozenset({2})), load[2]: Need(frozenset({2, 3}))}  # x is needed everywhere


def test_a_value_also_used_outside_a_select_is_not_guarded():
    program = _program(
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n"
        "    w = wp.where(bc == wp.uint8(2), y, x)\n    b[0, i, j, k] = w + y\n")
    assert guards.analyse(program, guards.cell_id_symbol(program, "m")) == {}


def test_conditions_other_than_an_id_test_pass_their_need_through():
    program = _program(
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n"
        "    w = wp.where(x > 0.5, y, x)\n    b[0, i, j, k] = w\n")
    assert guards.analyse(program, guards.cell_id_symbol(program, "m")) == {}


def test_schedule_groups_guarded_statements_and_respects_dependencies():
    program = _program(
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n    p = x * 2.0\n    z = a[2, i, j, k]\n"
        "    q = y * z\n    w = wp.where(bc == wp.uint8(2), q, p)\n    b[0, i, j, k] = w\n")
    identity = guards.cell_id_symbol(program, "m")
    needs = guards.analyse(program, identity)
    order = guards.schedule(program.statements, needs, identity)
    assert sorted(map(str, (s.target for s in order))) == sorted(map(str, (s.target for s in program.statements)))
    position = {str(s.target): n for n, s in enumerate(order)}
    for n, statement in enumerate(order):
        parts = statement.index if hasattr(statement, "array") else (statement.expr,)
        for symbol in set().union(*(sympy.sympify(e).free_symbols for e in parts)):
            assert position.get(symbol.name, -1) < n  # everything used comes first
    kinds = [str(s.target) in needs for s in order]
    assert kinds.count(True) == 3  # y, z and q
    first = kinds.index(True)
    assert kinds[first:first + 3] == [True] * 3  # one run: one if block


@pytest.fixture(scope="module")
def cavity_module() -> str:
    from adjointgen.config import Configuration
    from adjointgen.compiler.pipeline import generate
    from adjointgen.xlb.support import make_stepper

    config = Configuration.parse("D3Q19/BGK/FP32FP32/cavity")
    return generate(make_stepper(config, "warp", (6, 5, 4)), config)


def _adjoint_body(text: str) -> str:
    """The module's one adjoint body (inside its variant factory), at the forward's indentation."""
    body = text.split("    def adjoint(")[1].split("    adjoint.__name__")[0]
    return "\n".join(line[4:] for line in body.splitlines())


def _dedent(text: str) -> str:
    return "\n".join(line[4:] for line in text.splitlines())


def _replays(adjoint: str) -> list:
    """The adjoint body's replays at the body's indentation: the one from the residuals (the
    ``with_residuals`` variants) and the one from the step's input."""
    section = adjoint[adjoint.index("# replay of the forward cell program"):adjoint.index("# reverse sweep")]
    from_residuals, from_input = section.split("    if wp.static(with_residuals):\n")[1].split("\n    else:\n")
    return [_dedent(from_residuals), _dedent(from_input)]


def test_cavity_forward_and_replay_read_the_missing_mask_only_at_wall_cells(cavity_module):
    text = cavity_module
    forward = _dedent(text.split("    def forward(")[1].split("    forward.__name__")[0])
    for kernel in [forward] + _replays(_adjoint_body(text)):
        guarded = kernel.split("    if bc_mask_0 == wp.uint8(1):\n")[1].splitlines()
        block = guarded[:next((n for n, line in enumerate(guarded) if not line.startswith("        ")), len(guarded))]
        assert sum("= missing_mask[" in line for line in block) == 19
        assert kernel.count("= missing_mask[") == 19
        assert "    missing_mask_0 = False" in kernel and "# used only at cells with boundary id 1" in kernel


def test_cavity_slots_are_written_and_gathered_only_at_wall_cells(cavity_module):
    text = cavity_module
    adjoint = _adjoint_body(text)
    gather = text.split("def adjoint_gather(")[1].split("def adjoint_kept(")[0]
    # the bounce-back's own-cell reads: their adjoint is exactly zero away from the walls
    written = adjoint.split("    if bc_mask_0 == wp.uint8(1):\n        adj_slots[i, j, k, 0] = ")[1].split("\n    # per-cell")[0]
    assert written.count("adj_slots[") == 17  # the other 17 of 18, in the same block
    assert "adj_slots[i, j, k, 17] = " in written  # cell-major: a cell's slots are adjacent in memory
    assert "bc_mask: wp.array4d(dtype=wp.uint8)" in gather
    # the gather's variant factory: the gather itself in the else branch of the marks variant
    assert ("            if bc_mask_0_reader_0 == wp.uint8(1):\n"
            "                adj_f_0[1, i, j, k] = adj_f_0[1, i, j, k] + adj_slots[i, j, k, 0]") in gather
    assert gather.count("+ adj_slots[") == 18 and gather.count("= bc_mask[") == 1
    # the marks variant marks the same cells (the wall cells), for the listed variant's list
    assert "            if bc_mask_0_reader_0 == wp.uint8(1):\n                marked = wp.int32(1)" in gather


def test_a_store_made_only_at_some_ids_needs_its_value_only_there():
    program = _program(
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k] * 2.0\n"
        "    b[0, i, j, k] = x\n    b[1, i, j, k] = wp.where(bc == wp.uint8(2), y, b[1, i, j, k])\n")
    assert [str(s.when) for s in program.stores] == ["None", "Eq(m_0, 2)"]
    needs = guards.analyse(program, guards.cell_id_symbol(program, "m"))
    assert set(needs.values()) == {Need(frozenset({2}))} and len(needs) == 2  # the load and the product


def test_loads_shared_by_two_guarded_runs_are_issued_again_inside_each():
    """The forward's reloads (plan._forward_body): a load wanted at ids 2 and 3, used by a run
    guarded for 2 and one for 3, is loaded again inside each run under a new name; the shared
    load, now unused, is dropped, and values are unchanged (the same element is read)."""
    from adjointgen.compiler.ir import Load

    program = _program(
        "    x = a[0, i, j, k]\n    u = wp.sqrt(x)\n    v = wp.exp(x)\n    y = wp.where(bc == wp.uint8(2), u, 0.0)\n"
        "    z = wp.where(bc == wp.uint8(3), v, y)\n    b[0, i, j, k] = z\n")
    identity = guards.cell_id_symbol(program, "m")
    needs = guards.analyse(program, identity)
    load = next(s for s in program.statements if isinstance(s, Load) and s.array == "a")
    assert needs[load.target.name] == Need(frozenset({2, 3}))
    scheduled = guards.schedule(program.statements, needs, identity)
    statements, new_needs = guards.reload_loads(scheduled, needs, {load.target.name}, lambda name, run: f"{name}_again_{run}",
                                                set())
    reloads = [s for s in statements if isinstance(s, Load) and s.array == "a"]
    assert load not in statements and len(reloads) == 2
    assert sorted(tuple(sorted(new_needs[s.target.name].ids)) for s in reloads) == [(2,), (3,)]
    assert all(s.index == load.index for s in reloads)
    for reload in reloads:  # each is used in its own run only, and issued before that use
        users = [n for n, s in enumerate(statements) if reload.target in s.uses()]
        assert users and all(statements.index(reload) < n for n in users)
        assert all(new_needs[statements[n].target.name] == new_needs[reload.target.name] for n in users)


def test_tested_ids_finds_every_test_of_the_id_in_either_order_and_nothing_else():
    bc, x, a, b = sympy.symbols("bc x a b")
    exprs = [Select(sympy.Eq(bc, 2), a, b), sympy.And(sympy.Ne(3, bc), sympy.Eq(x, 5)), a + b]
    assert guards.tested_ids(exprs, bc) == {2, 3}  # x == 5 tests another variable
    assert guards.tested_ids([], bc) == set()
