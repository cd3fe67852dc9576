"""Divisions in the reverse sweep become products with reciprocals computed once.

The partials of a statement that divides (``temp = fneq / feq``, ``u = m / rho``) divide the
incoming adjoint by the same value again and again: KBC's reverse sweep had 107 divisions for
28 distinct divisors. An IEEE single-precision division on a GPU takes a slow path (a called
subroutine, with its registers saved) whenever its numerator is zero, and in a reverse sweep the
numerator is an adjoint, which is exactly zero wherever the cotangent has not arrived yet (a loss
on part of the grid, the first reverse steps of a rollout). Measured on an H200 (NOTES v32):
KBC's ``adjoint_fresh_state`` took 3.19 ms with zero output adjoints against 1.70 ms with random
ones, the same kernel on the same state.

So each negative integer power ``b**-k`` in an update becomes ``rcp_b**k``, where ``rcp_b = 1 / b``
is a new update placed, once per divisor, right before the first update that uses it. The
reciprocal's numerator is never zero; a product by it costs one multiplication. The values
differ from the divisions by rounding only (a reciprocal and a product round twice); where the
divisor is a value that a select may discard (see :func:`adjointgen.compiler.reverse._times`), the
product stays inside the same zero-safe select as the division was. Divisors that are not
floating-point (an integer expression) keep their division.

The adjoint's replay of the forward then divides by the same values (``temp = fneq / feq``):
:func:`in_replay` writes those divisions as products with ``1 / feq`` too, which the compiler
merges with the sweep's reciprocal. The forward kernel keeps its divisions (XLB's arithmetic);
the replayed values differ from it by rounding only.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from adjointgen.compiler.ir import FLOAT_TYPES, Assign, Program, Reciprocal
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.reverse import Adjoint, Group, Update


def hoist(adjoint: Adjoint, program: Program, names: Namer) -> Adjoint:
    """``adjoint`` with every floating-point divisor of its updates replaced by a reciprocal
    variable, each defined by one update (``rcp_x = x**-1``, ``first=True``) inserted before the
    first update that uses it, in sweep order.

    Guarantees: no update but the definitions has a negative integer power of a floating-point
    expression left; each reciprocal is defined exactly once, before every use; the names come
    from ``names`` (``rcp_<variable>`` for a variable, ``rcp_<N>`` for an expression), in the
    order of first use, so regenerating is byte-identical."""
    defined: dict = {}  # divisor -> reciprocal symbol
    groups = [_hoisted(group, program, names, defined) for group in adjoint.groups]
    return replace(adjoint, groups=groups, reciprocals=tuple(defined))


def in_replay(statements: list, divisors: tuple) -> list:
    """The adjoint's replay of ``statements`` with each division by one of ``divisors`` (those
    the reverse sweep inverts) written as a product with ``Reciprocal(divisor)``: the replay and
    the sweep then share one division per divisor (ptxas sm_90, KBC's ``adjoint_fresh_state``:
    3408 -> 2864 instructions, 128 bytes of spills -> none). Statements keep their targets, so
    the guard analysis and the scheduling apply unchanged. The replayed values then differ from
    the forward's by rounding only (the forward kernel keeps its divisions)."""
    wanted = set(divisors)
    return [replace(s, expr=_with_reciprocals(s.expr, wanted, Reciprocal)) if isinstance(s, Assign) and wanted else s
            for s in statements]


def _is_power_of(node, divisors) -> bool:
    """``node`` is ``b**-k`` (k a positive integer) with ``b`` in ``divisors``."""
    return isinstance(node, sympy.Pow) and node.exp.is_Integer and node.exp < 0 and node.base in divisors


def _with_reciprocals(expr, divisors, reciprocal):
    """``expr`` with each ``b**-k`` (b in ``divisors``) written ``reciprocal(b)**k``."""
    return expr.replace(lambda node: _is_power_of(node, divisors), lambda node: reciprocal(node.base) ** (-node.exp))


def _hoisted(group: Group, program: Program, names: Namer, defined: dict) -> Group:
    updates = []
    for update in group.updates:
        new = [d for d in _divisors(update.expr, program) if d not in defined]
        for divisor in new:
            defined[divisor] = sympy.Symbol(_name(divisor, names), real=True)
            updates.append(Update(defined[divisor].name, sympy.Pow(divisor, -1, evaluate=False), first=True))
        updates.append(replace(update, expr=_with_reciprocals(update.expr, defined, defined.get)))
    return replace(group, updates=updates)


def _divisors(expr, program: Program) -> list:
    """The floating-point bases of the negative integer powers in ``expr``, in a fixed order."""
    found = {node.base for node in sympy.preorder_traversal(expr) if _is_division(node, program)}
    return sorted(found, key=sympy.default_sort_key)


def _is_division(node, program: Program) -> bool:
    if not (isinstance(node, sympy.Pow) and node.exp.is_Integer and node.exp < 0):
        return False
    symbols = node.base.free_symbols
    return bool(symbols) and all(program.dtypes.get(s.name) in FLOAT_TYPES for s in symbols)


def _name(divisor, names: Namer) -> str:
    if isinstance(divisor, sympy.Symbol):
        return names.reciprocal(divisor.name)
    return names.reciprocal_of_expression(sympy.srepr(divisor))
