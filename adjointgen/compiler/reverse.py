"""Reverse mode over the per-cell program, one statement at a time.

For a statement ``t = e(s1, ..., sn)`` visited in reverse order, each floating-point operand
``s`` receives ``adj_t * de/ds``, where ``de/ds`` is sympy's derivative of that one small
right-hand side (no expression swell: nothing is substituted across statements). Adjoints of
stored values are seeded from the output array's gradient; the output gradient at a written
element is then cleared (the old content was overwritten); for arrays updated in place (see
:mod:`~adjointgen.compiler.access`) the seeds come from the seed array ``adjoint_prepare`` fills, under the
condition that the store was the last one to define its element. Adjoints of loads go back to the
element each load read (the transposed pull), race-free by :mod:`~adjointgen.compiler.access`.
Partials that are identically zero are dropped. Floating-point scalar parameters (``omega``)
get per-cell adjoints, which the runtime sums over the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from adjointgen.compiler.access import Accesses
from adjointgen.compiler.naming import Namer
from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.ir import FLOAT_TYPES, Load, Origin, Program, Select


@dataclass
class Update:
    target: str  # adjoint variable name
    expr: sympy.Expr  # the contribution
    first: bool  # the first contribution defines the variable

    def reads(self) -> set:
        """The variables the update reads: its contribution's symbols, and its target when it adds."""
        names = {str(symbol) for symbol in self.expr.free_symbols}
        return names if self.first else names | {self.target}


@dataclass
class Group:
    origin: Origin
    forward: str  # the forward statement, as "t = e"
    updates: list = field(default_factory=list)
    scatter: tuple | None = None  # (array, index, adjoint variable, load symbol name) for a load


@dataclass
class Seed:
    variable: str  # the adjoint variable of a stored value
    array: str
    index: tuple
    accumulate: bool  # the variable was seeded before (one value stored twice)
    in_place: bool = False  # read from the seed array adjoint_prepare filled, not from the gradient
    condition: object = None  # in place: where this store is the one that defined the element


@dataclass
class Adjoint:
    seeds: list  # Seed
    clears: list  # (array, index) of output arrays: their old content was overwritten
    groups: list  # Group, in execution order
    keep: object  # the common keep condition of all stores (or None)
    parameters: list = field(default_factory=list)  # (scalar parameter, its adjoint variable or None)
    prepared: list = field(default_factory=list)  # (array, index, condition): elements adjoint_prepare moves
    reciprocals: tuple = ()  # divisors whose reciprocal the sweep defines (compiler.reciprocals)


def _times(adj, partial, guarded_symbols=frozenset()):
    """``adj * partial`` with the product moved inside selects, so the branch not taken is
    discarded rather than multiplied (select semantics for the adjoint too).

    Where the partial depends on a value in ``guarded_symbols`` (values that a select may have
    discarded: computed in a branch not taken, e.g. a boundary condition evaluated where no
    boundary is, with a division by an absent density), a zero adjoint gives a zero product:
    ``0 * inf`` or ``0 * NaN`` from discarded values never turns into NaN upstream."""
    if isinstance(partial, Select):
        condition, a, b = partial.args
        return Select(condition, _times(adj, a, guarded_symbols), _times(adj, b, guarded_symbols))
    if partial.free_symbols & guarded_symbols:
        return Select(sympy.Eq(adj, 0), sympy.Integer(0), adj * partial)
    return adj * partial


def _used_outside_branches(expr, found: set) -> None:
    """Names ``expr`` uses other than inside a branch of a select (conditions count as used)."""
    if isinstance(expr, sympy.Symbol):
        found.add(expr.name)
    elif isinstance(expr, Select):
        _used_outside_branches(expr.args[0], found)
    else:
        for arg in expr.args:
            _used_outside_branches(arg, found)


def always_used(program: Program) -> set:
    """Names of the statements whose value reaches an output at every cell: along some chain of
    uses none of which is a branch of a select. Only the others can hold garbage (a value
    computed where its branch is not taken, or a guard's default, see :mod:`adjointgen.compiler.guards`)."""
    always: set = set()
    for store in program.stores:
        # a store made only where ``when`` holds uses its value like a select's branch
        for expr in ((store.value,) if store.when is None else ()) + (store.keep, store.when, *store.index):
            if expr is not None:
                _used_outside_branches(sympy.sympify(expr), always)
    for statement in reversed(program.statements):
        if statement.target.name in always:
            for expr in statement.operands():
                _used_outside_branches(sympy.sympify(expr), always)
    return always


def differentiate(program: Program, accesses: Accesses, names: Namer | None = None) -> Adjoint:
    """The adjoint of ``program``, statement by statement.

    Guarantees: every floating-point value the stores depend on gets an adjoint variable (named
    by ``names``, the module's :class:`~adjointgen.compiler.naming.Namer`) defined by its first
    update, before any use, in the reverse of the forward order; each differentiable load yields
    one scatter of its adjoint to the element it read; partials that are identically zero are
    dropped; products with partials that may involve discarded select branches are zero-safe
    (:func:`_times`); ``seeds``, ``clears`` and ``prepared`` together say how the output
    gradients enter and are cleared (in place: through adjoint_prepare's seed arrays).
    Raises :class:`~adjointgen.errors.UnsupportedConstruct` for stores under different early
    exits."""
    names = names or Namer.for_program(program)
    keeps = {str(s.keep) for s in program.stores}
    if len(keeps) > 1:
        raise UnsupportedConstruct(program.name, "stores guarded by different early-exit conditions",
                                   "one early return per kernel is supported")
    scalar_params = [p.name for p in program.params if p.kind == "scalar" and p.dtype in FLOAT_TYPES]
    floats = {str(s.target) for s in program.statements if program.is_float(s.target)} | set(scalar_params)
    defined: set[str] = set()  # the variables whose adjoint is defined so far
    seeds, clears, prepared = _seeds(program, accesses, floats, names, defined)
    groups = _reverse_sweep(program, floats - set(scalar_params), names, defined)
    keep = program.stores[0].keep if program.stores else None
    # per-cell contributions to the adjoints of floating-point scalar parameters (omega): the
    # runtime reduces them over the grid
    parameters = [(name, names.adjoint(name) if name in defined else None) for name in scalar_params]
    return Adjoint(seeds=seeds, clears=clears, groups=groups, keep=keep, parameters=parameters,
                   prepared=[(array, index, condition) for (array, index), condition in prepared.items()])


def _seeds(program: Program, accesses: Accesses, floats: set, names: Namer, defined: set) -> tuple[list, list, dict]:
    """The seeds of the stored values' adjoints, the output elements cleared, and (in place) the
    elements adjoint_prepare moves, with the condition under which each moves."""
    seeds, clears, prepared = [], [], {}
    for position, store in enumerate(program.stores):
        in_place = store.array in accesses.in_place
        condition = None
        if in_place:
            # the element ends up holding this store's value where its condition holds and no
            # later store to the same element happens
            later = [t.when for t in program.stores[position + 1:] if (t.array, t.index) == (store.array, store.index)]
            condition = sympy.And(store.when if store.when is not None else sympy.true,
                                  *[sympy.Not(w) if w is not None else sympy.false for w in later])
            key = (store.array, store.index)
            before = prepared.get(key, sympy.false)
            prepared[key] = sympy.Or(before, store.when if store.when is not None else sympy.true)
        else:
            clears.append((store.array, store.index))
        value = sympy.sympify(store.value)
        if isinstance(value, sympy.Symbol) and value.name in floats and condition is not sympy.false:
            seeds.append(Seed(names.adjoint(value), store.array, store.index, value.name in defined, in_place,
                              None if condition is sympy.true else condition))
            defined.add(value.name)
    return seeds, clears, prepared


def _reverse_sweep(program: Program, variables: set, names: Namer, defined: set) -> list:
    """The groups of the reverse sweep, last statement first, for the statements whose adjoint
    is defined (something stored depends on them). ``variables``: the floating-point program
    variables (the scalar parameters are in ``defined`` once they get an update)."""
    floats = variables | {p.name for p in program.params if p.kind == "scalar" and p.dtype in FLOAT_TYPES}
    # a value that only reaches the outputs through a branch of a select may be garbage where that
    # branch is not taken, and its adjoint is then exactly zero: its statement's partials (finite
    # or not) and any partial that involves such a value get zero-safe products (see _times)
    always = always_used(program)
    symbols = frozenset(sympy.Symbol(name, real=True) for name in variables)
    discardable = frozenset(v for v in symbols if v.name not in always)
    groups = []
    for statement in reversed(program.statements):
        if statement.target.name not in defined:
            continue  # nothing depends on this statement
        name = names.adjoint(statement.target)
        if isinstance(statement, Load):
            if program.param(statement.array).differentiable:
                groups.append(Group(statement.origin, f"{statement.target} = {statement.array}[...]",
                                    scatter=(statement.array, statement.index, name, str(statement.target))))
            continue
        adj = sympy.Symbol(name, real=True)
        group = Group(statement.origin, f"{statement.target} = {statement.expr}")
        for operand in sorted((s for s in statement.uses() if s.name in floats), key=lambda s: s.name):
            partial = sympy.diff(statement.expr, operand)
            if partial == 0:
                continue
            target = names.adjoint(operand)
            guarded = discardable if statement.target.name in always else symbols
            group.updates.append(Update(target, _times(adj, partial, guarded), operand.name not in defined))
            defined.add(operand.name)
        groups.append(group)
    return groups
