"""Reciprocals in the reverse sweep (adjointgen.compiler.reciprocals): divisions in the adjoint's
updates become products with reciprocals defined once before their first use; same values up to
rounding; integer divisors untouched; names stable."""

import sympy

from adjointgen.compiler import reciprocals
from adjointgen.compiler.access import analyse
from adjointgen.compiler.ir import Assign
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.reverse import differentiate
from tests.helpers import lower_source
from tests.test_reverse import HEAD, PARAMS, adjoint_values

SOURCE = HEAD + (
    "    x = a[0, i, j, k]\n    y = a[1, i, j, k]\n    z = a[2, i, j, k]\n"
    "    r = x + y\n    u = z / r\n    v = (x - z) / (r * r)\n    w = u / (y + 2.0)\n"
    "    b[0, i, j, k] = u * v\n    b[1, i, j, k] = w + v / x\n"
)


def _adjoints(source=SOURCE):
    program = lower_source(source, PARAMS)
    names = Namer.for_program(program)
    adjoint = differentiate(program, analyse(program), names)
    return program, adjoint, reciprocals.hoist(adjoint, program, names)


def _negative_powers(expr):
    return [n for n in sympy.preorder_traversal(expr) if isinstance(n, sympy.Pow) and n.exp.is_Integer and n.exp < 0]


def test_only_the_definitions_divide_and_each_is_defined_once_before_its_uses():
    _, before, after = _adjoints()
    assert sum(len(_negative_powers(u.expr)) for g in before.groups for u in g.updates) > 3
    defined, seen = set(), []
    for update in (u for g in after.groups for u in g.updates):
        used = {s.name for s in update.expr.free_symbols if s.name.startswith("rcp_")}
        assert used <= defined, f"{update.target} uses {used - defined} before its definition"
        if update.target.startswith("rcp_"):
            assert update.first and update.target not in defined
            assert update.expr.exp == -1  # the definition is the one division left
            defined.add(update.target)
            seen.append(update.target)
        else:
            assert not _negative_powers(update.expr), update
    assert "rcp_r_0" in seen or any(name.startswith("rcp_r") for name in seen)
    assert any(name[4:].isdigit() for name in seen)  # y + 2.0: an expression gets a numbered name


def test_the_gradient_is_unchanged_up_to_rounding():
    program, before, after = _adjoints()
    loads = [st.target for st in program.statements[:3]]
    point = dict(zip(loads, (0.9, 0.4, -0.7))) | {sympy.Symbol("s", real=True): 1.3}
    old = adjoint_values(program, before, (0.3, -1.7), point)
    new = adjoint_values(program, after, (0.3, -1.7), point)
    for load in loads:
        key = sympy.Symbol(f"adj_{load}", real=True)
        assert abs(new[key] - old[key]) <= 1e-12 * max(1.0, abs(old[key]))
    assert any(abs(old[sympy.Symbol(f"adj_{load}", real=True)]) > 0.1 for load in loads)


def test_a_wrong_reciprocal_would_be_seen():
    """The comparison above rejects a reciprocal of the wrong value (the test can fail)."""
    program, before, after = _adjoints()
    broken = after.groups[:]
    for position, group in enumerate(broken):
        for index, update in enumerate(group.updates):
            if update.target.startswith("rcp_"):
                wrong = type(update)(update.target, update.expr * sympy.Float(1.001), update.first)
                updates = group.updates[:index] + [wrong] + group.updates[index + 1:]
                broken[position] = type(group)(group.origin, group.forward, updates, group.scatter)
                break
        else:
            continue
        break
    loads = [st.target for st in program.statements[:3]]
    point = dict(zip(loads, (0.9, 0.4, -0.7))) | {sympy.Symbol("s", real=True): 1.3}
    old = adjoint_values(program, before, (0.3, -1.7), point)
    new = adjoint_values(program, type(after)(after.seeds, after.clears, broken, after.keep, after.parameters, after.prepared),
                 (0.3, -1.7), point)
    assert max(abs(new[sympy.Symbol(f"adj_{l}", real=True)] - old[sympy.Symbol(f"adj_{l}", real=True)]) for l in loads) > 1e-6


def test_only_floating_point_divisors_are_replaced():
    """(The lowering refuses integers converted into floats, so an integer divisor cannot reach
    an update from source; the pass still leaves one alone.)"""
    program, _, _ = _adjoints()
    x, i = sympy.Symbol(str(program.statements[0].target), real=True), sympy.Symbol("i", real=True)
    assert reciprocals._is_division(x ** -2, program)
    assert not reciprocals._is_division(i ** -1, program)
    assert not reciprocals._is_division(x ** 2, program)


def test_names_are_stable_across_builds():
    _, _, first = _adjoints()
    _, _, second = _adjoints()
    assert [(u.target, str(u.expr)) for g in first.groups for u in g.updates] == \
           [(u.target, str(u.expr)) for g in second.groups for u in g.updates]


def test_the_shipped_modules_divide_in_their_reverse_sweeps_only_to_define_reciprocals():
    from adjointgen import locations

    for path in sorted(locations.generated_dir().glob("d*.py")):
        text = path.read_text()
        sweep = text[text.index("        # reverse sweep"):text.index("        # writes")]
        dividing = [line.strip() for line in sweep.splitlines() if " / " in line and not line.strip().startswith("#")]
        assert dividing, path.name
        assert all(line.startswith("rcp_") and " = wp.float" in line for line in dividing), (path.name, dividing)


def test_the_replay_divides_through_the_sweeps_reciprocals_and_keeps_its_targets():
    from adjointgen.compiler.ir import Reciprocal

    program, _, after = _adjoints()
    assert after.reciprocals
    statements = [s for s in program.statements if isinstance(s, Assign)]
    replayed = reciprocals.in_replay(statements, after.reciprocals)
    assert [s.target for s in replayed] == [s.target for s in statements]
    rewritten = [s for s, old in zip(replayed, statements) if s.expr != old.expr]
    assert rewritten and all(any(isinstance(n, Reciprocal) for n in sympy.preorder_traversal(s.expr)) for s in rewritten)
    point = {s.target: 0.0 for s in program.statements} | dict(zip((st.target for st in program.statements[:3]), (0.9, 0.4, -0.7)))
    for old, new in zip(statements, replayed):  # the same values, up to rounding
        point[old.target] = float(old.expr.subs(point))
        value = float(new.expr.replace(lambda n: isinstance(n, Reciprocal), lambda n: 1 / n.args[0]).subs(point))
        assert abs(value - point[old.target]) <= 1e-12 * max(1.0, abs(point[old.target]))
    assert reciprocals.in_replay(statements, ()) == statements


def test_the_shipped_forwards_keep_their_divisions_and_the_replays_share_the_reciprocals():
    from adjointgen import locations

    for path in sorted(locations.generated_dir().glob("d*.py")):
        text = path.read_text()
        forward = text[text.index("def _forward_variant"):text.index("def _adjoint_variant")]
        replay = text[text.index("        # replay of the forward cell program"):text.index("        # reverse sweep")]
        assert " / rho" in forward and "1.0) / (rho" not in forward, path.name
        assert "1.0) / (rho" in replay and " / rho" not in replay.replace("1.0) / (rho", ""), path.name
