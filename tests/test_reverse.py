"""The reverse sweep against sympy's gradient of the whole (substituted) program."""

import sympy

from adjointgen.access import analyse
from adjointgen.ir import Assign, Param
from adjointgen.reverse import differentiate
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
    env = dict(point)
    for (name, _, _, _), seed in zip(adjoint.seeds, seeds):
        env[sympy.Symbol(name, real=True)] = seed
    for st in program.statements:
        if isinstance(st, Assign):
            env[st.target] = float(st.expr.subs(env))
    env = _reverse_sweep_values(adjoint, env)
    for load in (x, y):
        expected = float(sum(seed * sympy.diff(out, load) for seed, out in zip(seeds, outputs)).subs(point))
        assert abs(env[sympy.Symbol(f"adj_{load}", real=True)] - expected) < 1e-12


def test_zero_partials_are_dropped_and_unused_statements_skipped():
    program = lower_source(HEAD + "    x = a[0, i, j, k]\n    b[0, i, j, k] = x * s\n", PARAMS)
    adjoint = differentiate(program, analyse(program))
    updates = [u for g in adjoint.groups for u in g.updates]
    assert [u.target for u in updates] == ["adj_a_0", "adj_s"]  # x * s: both partials are non-zero
    assert adjoint.groups[-1].scatter[0] == "a"
