"""Reverse mode over the per-cell program, one statement at a time.

For a statement ``t = e(s1, ..., sn)`` visited in reverse order, each floating-point operand
``s`` receives ``adj_t * de/ds``, where ``de/ds`` is sympy's derivative of that one small
right-hand side (no expression swell: nothing is substituted across statements). Adjoints of
stored values are seeded from the output array's gradient; the output gradient at a written
element is then cleared (the old content was overwritten). Adjoints of loads go back to the
element each load read (the transposed pull), race-free by :mod:`~adjointgen.access`.
Partials that are identically zero are dropped. Floating-point scalar parameters (``omega``)
get per-cell adjoints, which the runtime sums over the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from .access import Accesses
from .errors import UnsupportedConstruct
from .ir import FLOAT_TYPES, Load, Program, Select


@dataclass
class Update:
    target: str  # adjoint variable name
    expr: sympy.Expr  # the contribution
    first: bool  # the first contribution defines the variable


@dataclass
class Group:
    origin: str
    forward: str  # the forward statement, as "t = e"
    updates: list = field(default_factory=list)
    scatter: tuple | None = None  # (array, index, adjoint variable, load symbol name) for a load


@dataclass
class Adjoint:
    seeds: list  # (adjoint variable, array, index)
    clears: list  # (array, index)
    groups: list  # Group, in execution order
    keep: object  # the common keep condition of all stores (or None)
    parameters: list = field(default_factory=list)  # (scalar parameter, its adjoint variable or None)


def _times(adj, partial):
    """``adj * partial`` with the product moved inside selects, so the branch not taken is
    discarded rather than multiplied (select semantics for the adjoint too)."""
    if isinstance(partial, Select):
        condition, a, b = partial.args
        return Select(condition, _times(adj, a), _times(adj, b))
    return adj * partial


def adjoint_name(symbol) -> str:
    return f"adj_{symbol}"


def differentiate(program: Program, accesses: Accesses) -> Adjoint:
    keeps = {str(s.keep) for s in program.stores}
    if len(keeps) > 1:
        raise UnsupportedConstruct(program.name, "stores guarded by different early-exit conditions",
                                   "one early return per kernel is supported")
    floats = {str(s.target) for s in program.statements if program.is_float(s.target)}
    scalar_params = [p.name for p in program.params if p.kind == "scalar" and p.dtype in FLOAT_TYPES]
    floats |= set(scalar_params)
    defined: set[str] = set()
    seeds, clears = [], []
    for store in program.stores:
        value = sympy.sympify(store.value)
        if isinstance(value, sympy.Symbol) and value.name in floats:
            name = adjoint_name(value)
            seeds.append((name, store.array, store.index, name in defined))
            defined.add(name)
        clears.append((store.array, store.index))

    groups = []
    for statement in reversed(program.statements):
        name = adjoint_name(statement.target)
        if name not in defined:
            continue  # nothing depends on this statement
        adj = sympy.Symbol(name, real=True)
        if isinstance(statement, Load):
            if program.param(statement.array).differentiable:
                groups.append(Group(statement.origin, f"{statement.target} = {statement.array}[...]",
                                    scatter=(statement.array, statement.index, name, str(statement.target))))
            continue
        group = Group(statement.origin, f"{statement.target} = {statement.expr}")
        operands = sorted((s for s in statement.expr.free_symbols if s.name in floats), key=lambda s: s.name)
        for operand in operands:
            partial = sympy.diff(statement.expr, operand)
            if partial == 0:
                continue
            target = adjoint_name(operand)
            group.updates.append(Update(target, _times(adj, partial), target not in defined))
            defined.add(target)
        groups.append(group)
    keep = program.stores[0].keep if program.stores else None
    # per-cell contributions to the adjoints of floating-point scalar parameters (omega): the
    # runtime reduces them over the grid
    parameters = [(name, adjoint_name(name) if adjoint_name(name) in defined else None) for name in scalar_params]
    return Adjoint(seeds=seeds, clears=clears, groups=groups, keep=keep, parameters=parameters)
