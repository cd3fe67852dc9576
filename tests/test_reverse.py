"""The reverse sweep against sympy's gradient of the whole (substituted) program."""

import sympy

from adjointgen.compiler.access import analyse
from adjointgen.compiler.ir import Assign, Param
from adjointgen.compiler.reverse import differentiate
from tests.helpers import lower_source

PARAMS = [Param("a", "array", "float64", 4), Param("b", "array", "float64", 4), Param("s", "scalar", "float64")]
HEAD = "def k(a: wp.array4d(dtype=float), b: wp.array4d(dtype=float), s: float):\n    i, j, k = wp.tid()\n"


def _reverse_sweep_values(adjoint, values):
    """Evaluate the adjoint updates numerically in order; returns adjoint variables."""
    env = dict(values)
    for group in adjoint.groups:
        for update in group.updates:
            contribution = float(update.expr.subs(env))
            env[sympy.Symbol(update.target, real=True)] = contribution + (0.0 if update.first else env[sympy.Symbol(update.target, real=True)])
    return env


def adjoint_values(program, adjoint, seeds, point):
    """The forward's statements and then the reverse sweep evaluated numerically at ``point``
    (load values), with ``seeds`` for the stored values' adjoints; returns every variable."""
    env = dict(point)
    for name, seed in zip((s.variable for s in adjoint.seeds), seeds):
        env[sympy.Symbol(name, real=True)] = seed
    for statement in program.statements:
        if isinstance(statement, Assign):
            env[statement.target] = float(statement.expr.subs(env))
    return _reverse_sweep_values(adjoint, env)


def test_statement_partials_compose_to_the_whole_gradient():
    program = lower_source(HEAD + (
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n"
        "    r = x + y\n    u = (x - y) / r\n    e = r * (1.0 + 3.0 * u + 4.5 * u * u) * s\n"
        "    b[0, i, j, k] = e\n    b[1, i, j, k] = e * u\n"
    ), PARAMS)
    adjoint = differentiate(program, analyse(program))
    # whole-program expressions of the two outputs in terms of the loads
    subs = {}
    for st in program.statements:
        if isinstance(st, Assign):
            subs[st.target] = st.expr.subs(subs)
    x, y = (st.target for st in program.statements[:2])
    outputs = [sympy.sympify(store.value).subs(subs) for store in program.stores]
    seeds = [0.3, -1.7]
    point = {x: 0.9, y: 0.4, sympy.Symbol("s", real=True): 1.3}
    env = adjoint_values(program, adjoint, seeds, point)
    for load in (x, y):
        expected = float(sum(seed * sympy.diff(out, load) for seed, out in zip(seeds, outputs)).subs(point))
        assert abs(env[sympy.Symbol(f"adj_{load}", real=True)] - expected) < 1e-12


def test_zero_partials_are_dropped_and_unused_statements_skipped():
    program = lower_source(HEAD + "    x = a[0, i, j, k]\n    b[0, i, j, k] = x * s\n", PARAMS)
    adjoint = differentiate(program, analyse(program))
    updates = [u for g in adjoint.groups for u in g.updates]
    assert [u.target for u in updates] == ["adj_a_0", "adj_s"]  # x * s: both partials are non-zero
    assert adjoint.groups[-1].scatter[0] == "a"


def test_a_discarded_branch_that_divides_by_zero_leaves_no_nan_in_the_adjoint():
    # the then-branch divides by the density d, which is 0 where the branch is not taken
    program = lower_source(HEAD + (
        "    x = a[0, i, j, k]\n    d = a[1, i, j, k]\n"
        "    q = x / d\n"
        "    y = wp.where(s > 0.0, q, x * 2.0)\n"
        "    b[0, i, j, k] = y\n"
    ), PARAMS)
    adjoint = differentiate(program, analyse(program))
    values = {sympy.Symbol("a_0", real=True): 0.7, sympy.Symbol("a_1", real=True): 0.0,
              sympy.Symbol("s", real=True): -1.0, sympy.Symbol("adj_b_out", real=True): 1.0}
    for statement in program.statements:
        if isinstance(statement, Assign):
            values[statement.target] = statement.expr.subs(values)
    env = _reverse_sweep_values(adjoint, {**values, sympy.Symbol(adjoint.seeds[0].variable, real=True): 1.0})
    assert float(env[sympy.Symbol("adj_a_0", real=True)]) == 2.0  # the branch taken
    assert float(env[sympy.Symbol("adj_a_1", real=True)]) == 0.0  # not NaN (0 * -x/d**2)


def test_conditional_stores_seed_from_the_prepared_array_under_their_condition():
    params = PARAMS + [Param("mask", "array", "uint8", 4)]
    head = HEAD.replace("s: float)", "s: float, mask: wp.array4d(dtype=wp.uint8))")
    program = lower_source(head + (
        "    m = mask[0, i, j, k]\n"
        "    b[0, i, j, k] = a[0, i, j, k] * s\n"
        "    a[0, i, j, k] = wp.where(m == wp.uint8(1), b[0, i, j, k], a[0, i, j, k])\n"
        "    a[0, i, j, k] = wp.where(m == wp.uint8(2), s * s, a[0, i, j, k])\n"
    ), params)
    accesses = analyse(program)
    adjoint = differentiate(program, accesses)
    assert accesses.in_place == ["a"]
    (element,) = adjoint.prepared
    assert element[0] == "a" and str(element[2]) == "Eq(mask_0, 1) | Eq(mask_0, 2)"
    in_place = [seed for seed in adjoint.seeds if seed.in_place]
    # the first store defines the element only where the second does not happen
    assert [str(seed.condition) for seed in in_place] == ["Eq(mask_0, 1) & Ne(mask_0, 2)", "Eq(mask_0, 2)"]
    assert adjoint.clears == [("b", program.stores[0].index)]


def test_zero_safe_products_only_where_a_select_can_discard_the_value():
    from adjointgen.compiler.ir import Select
    from adjointgen.compiler.reverse import always_used

    program = lower_source(HEAD + (
        "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n    q = x / y\n    r = x * y\n"
        "    b[0, i, j, k] = wp.where(s > 1.0, q, x) + r * y\n"), PARAMS)
    always = always_used(program)
    assert "r" in always and "q" not in always  # q only reaches the output through a branch
    adjoint = differentiate(program, analyse(program))
    updates = {(group.forward.split(" =")[0], u.target): u.expr for group in adjoint.groups for u in group.updates}
    x = next(str(s.target) for s in program.statements if getattr(s, "index", (None,))[0] == 0)
    # where the branch is not taken, adj_q is exactly 0 and 1/y may be inf: 0, never NaN
    assert isinstance(updates[("q", f"adj_{x}")], Select)
    assert not updates[("r", f"adj_{x}")].has(Select)  # r is used everywhere: a plain product
