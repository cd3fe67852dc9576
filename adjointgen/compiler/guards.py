"""Cell-kind guards: run boundary-only work only where a boundary is.

The branchless program evaluates every boundary condition at every cell and selects by the
cell's boundary id (``Select(Eq(bc_id, 3), zou_he_value, other)``). Its loads of the missing
mask, the own-cell reads of bounce-back and the reads of boundary data in ``f_1`` therefore run
at interior cells too, where nothing uses them: memory traffic the XLB stepper, with its real
branches, does not have.

:func:`analyse` finds, for every statement, the set of boundary ids at which its value can reach
an output (its *need*), by walking the program backwards: a store needs its value everywhere;
a store made only where ``Eq(bc_id, k)`` holds needs it only at ``k``;
``Select(Eq(bc_id, k), a, b)`` passes its need restricted to ``{k}`` to ``a`` and without ``k`` to
``b``; any other operation passes its need unchanged to its operands. A statement whose need is
a finite set of ids without 0 (the interior) gets that set as its guard.

:func:`schedule` orders the statements for emission so that statements with the same guard are
adjacent (a stable list scheduling that keeps every statement after what it uses), so
:func:`adjointgen.compiler.lines.guarded_body` can put each run of them in one
``if bc_id == ...:`` block, with a typed default assigned before the block.

The forward kernel and the adjoint's replay of it are guarded. The value a guarded statement has
outside its guard (a typed zero) is never selected into an output, so the forward result is
unchanged; in the adjoint, such a value can only meet an adjoint that is exactly zero there, and
the reverse sweep multiplies those zero-safely (:func:`adjointgen.compiler.reverse._times`), so a default
zero in a division cannot turn into NaN. The adjoint's slots take the same guards: a read whose
value matters only at some ids has an adjoint that is exactly zero elsewhere, so its slot is
written, and gathered, only there.

(:func:`adjointgen.compiler.reverse.always_used` is the coarser question for any select: which values are
real at every cell.)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import sympy

from adjointgen.compiler.ir import Assign, Load, Program, Select


@dataclass(frozen=True)
class Need:
    """A set of boundary ids: ``ids`` itself, or (``complement``) every id except ``ids``."""

    ids: frozenset = frozenset()
    complement: bool = False

    def union(self, other: "Need") -> "Need":
        if self.complement and other.complement:
            return Need(self.ids & other.ids, True)
        if self.complement:
            return Need(self.ids - other.ids, True)
        if other.complement:
            return Need(other.ids - self.ids, True)
        return Need(self.ids | other.ids)

    def only(self, k: int) -> "Need":
        """This set restricted to ``{k}``."""
        inside = (k not in self.ids) if self.complement else (k in self.ids)
        return Need(frozenset({k}) if inside else frozenset())

    def without(self, k: int) -> "Need":
        return Need(self.ids | {k}, True) if self.complement else Need(self.ids - {k})

    @property
    def guardable(self) -> bool:
        """A finite set that leaves out the interior (id 0): worth a guard."""
        return not self.complement and 0 not in self.ids


EVERYWHERE = Need(frozenset(), True)


def _id_test(condition, id_symbol):
    """``k`` if ``condition`` is ``Eq(id_symbol, k)`` (either order), else None."""
    if isinstance(condition, sympy.Eq):
        left, right = condition.args
        if left == id_symbol and right.is_Integer:
            return int(right)
        if right == id_symbol and left.is_Integer:
            return int(left)
    return None


def tested_ids(exprs, id_symbol) -> set:
    """The ids ``k`` of every test ``id_symbol == k`` (or ``!=``) anywhere in ``exprs``."""
    tests = [test for expr in exprs for test in sympy.sympify(expr).atoms(sympy.Eq, sympy.Ne)]
    return {k for k in (_id_test(sympy.Eq(*test.args), id_symbol) for test in tests) if k is not None}


def _id_set(condition, id_symbol) -> Need:
    """The ids where ``condition`` holds if it is a test of the id (``Eq`` or an ``Or`` of them);
    otherwise every id."""
    if isinstance(condition, sympy.Or):
        parts = [_id_set(c, id_symbol) for c in condition.args]
        if all(not p.complement for p in parts):
            return Need(frozenset().union(*(p.ids for p in parts)))
        return EVERYWHERE
    k = _id_test(condition, id_symbol)
    return Need(frozenset({k})) if k is not None else EVERYWHERE


def condition_ids(condition, id_symbol) -> Need | None:
    """The finite set of ids where ``condition`` holds, when it is built from tests of the id alone
    (``Eq`` against integers, ``Or`` of such sets, ``And`` of such sets and ``Ne`` tests); None
    otherwise or where the set is infinite."""
    if isinstance(condition, sympy.Or):
        parts = [condition_ids(c, id_symbol) for c in condition.args]
        return None if None in parts else Need(frozenset().union(*(p.ids for p in parts)))
    if isinstance(condition, sympy.And):
        finite = [condition_ids(c, id_symbol) for c in condition.args if not isinstance(c, sympy.Ne)]
        excluded = [_id_test(sympy.Eq(*c.args), id_symbol) for c in condition.args if isinstance(c, sympy.Ne)]
        if not finite or None in finite or None in excluded:
            return None
        return Need(frozenset.intersection(*(p.ids for p in finite)) - set(excluded))
    k = _id_test(condition, id_symbol)
    return Need(frozenset({k})) if k is not None else None


def _visit(expr, need: Need, id_symbol, needs: dict) -> None:
    if isinstance(expr, sympy.Symbol):
        needs[expr.name] = needs.get(expr.name, Need()).union(need)
        return
    if isinstance(expr, Select):
        condition, a, b = expr.args
        k = _id_test(condition, id_symbol)
        if k is not None:
            _visit(condition, need, id_symbol, needs)
            _visit(a, need.only(k), id_symbol, needs)
            _visit(b, need.without(k), id_symbol, needs)
            return
    for arg in expr.args:
        _visit(arg, need, id_symbol, needs)


def analyse(program: Program, id_symbol) -> dict:
    """{statement target name: guard (a :class:`Need`)} for the statements worth guarding, given
    the symbol of the cell's boundary id (None: nothing is guarded)."""
    if id_symbol is None:
        return {}
    needs: dict = {}
    for store in program.stores:
        # a store made only where the id is one of some values needs its value only there
        where = _id_set(store.when, id_symbol) if store.when is not None else EVERYWHERE
        _visit(sympy.sympify(store.value), where, id_symbol, needs)
        for expr in (store.keep, store.when, *store.index):
            if expr is not None:
                _visit(sympy.sympify(expr), EVERYWHERE, id_symbol, needs)
    for statement in reversed(program.statements):
        need = needs.get(statement.target.name, Need())
        for expr in statement.operands():
            _visit(sympy.sympify(expr), need, id_symbol, needs)
    return {name: need for name, need in needs.items() if need.guardable and name != id_symbol.name}


@dataclass(frozen=True)
class CellGuards:
    """The guard stage's result: the symbol of the cell's own boundary id (None where the program
    reads none) and ``needs``, :func:`analyse`'s {statement target name: :class:`Need`}."""

    id_symbol: sympy.Symbol | None
    needs: dict


def cell_guards(program: Program) -> CellGuards:
    """The guard analysis of ``program``, the pipeline's guards stage."""
    id_symbol = cell_id_symbol(program)
    return CellGuards(id_symbol, analyse(program, id_symbol))


def cell_id_symbol(program: Program, array: str = "bc_mask"):
    """The symbol of the cell's own boundary id: the load of ``array`` at the thread's cell."""
    own = tuple(program.thread)
    for statement in program.statements:
        if isinstance(statement, Load) and statement.array == array and tuple(statement.index[1:]) == own:
            return statement.target
    return None


def reload_loads(statements: list, needs: dict, reloadable, name_of, kept_names: set) -> tuple[list, dict]:
    """``statements`` (scheduled) with the guarded loads named in ``reloadable`` issued again inside
    every run with a narrower guard that uses them, under new names (``name_of(load name)``), and
    the ``needs`` of the result. A load shared by several boundary conditions (the own cell's
    populations, ``f_1``'s data, the missing mask, loaded where any of them is) is then live only
    inside each condition's block, not from its own block across all the others, which is what
    kept the forward of a ZouHe channel at 252 registers. Loads none of whose uses remain (and not
    in ``kept_names``: used by a store or the exit condition) are dropped. Only for programs that
    do not store into a reloaded element before its reload (the stores come after the cell
    program, as the plans print them)."""
    loads = {s.target.name: s for s in statements
             if isinstance(s, Load) and s.target.name in needs and s.target.name in reloadable}
    out, new_needs, reloaded, run, previous = [], dict(needs), {}, 0, object()
    for statement in statements:
        guard = needs.get(statement.target.name)
        if guard != previous:
            run, previous = run + 1, guard
        if guard is None or isinstance(statement, Load):
            out.append(statement)
            continue
        substitutions = {}
        for symbol in sorted(statement.uses(), key=lambda s: s.name):
            if symbol.name not in loads or needs[symbol.name] == guard:
                continue
            if (symbol.name, run) not in reloaded:
                load = loads[symbol.name]
                again = sympy.Symbol(name_of(symbol.name, run))
                reloaded[(symbol.name, run)] = again
                out.append(Load(again, load.array, load.index, load.origin))
                new_needs[again.name] = guard
            substitutions[symbol] = reloaded[(symbol.name, run)]
        out.append(Assign(statement.target, statement.expr.xreplace(substitutions), statement.origin)
                   if substitutions else statement)
    used = set(kept_names) | {s.name for statement in out for s in statement.uses()}
    out = [s for s in out if not (s.target.name in loads and s.target.name not in used)]
    return out, new_needs


def schedule(statements: list, guards: dict, id_symbol=None) -> list:
    """``statements`` reordered so that runs with the same guard are adjacent; every statement
    still comes after the statements it uses (and a guarded one after the load of its id)."""
    position = {s.target.name: n for n, s in enumerate(statements)}
    users: dict = {n: [] for n in range(len(statements))}
    waiting = []
    for n, statement in enumerate(statements):
        used = {position[s.name] for s in statement.uses() if s.name in position}
        if statement.target.name in guards and id_symbol is not None and id_symbol.name in position:
            used.add(position[id_symbol.name])
        for u in used:
            users[u].append(n)
        waiting.append(len(used))
    key = [guards.get(s.target.name) for s in statements]
    ready: dict = {}  # guard -> heap of statement numbers

    def push(n):
        heapq.heappush(ready.setdefault(key[n], []), n)

    for n, count in enumerate(waiting):
        if count == 0:
            push(n)
    order, current = [], None
    while ready:
        if current not in ready:  # the run ends: continue with the earliest ready statement
            current = min(ready, key=lambda g: ready[g][0])
        n = heapq.heappop(ready[current])
        if not ready[current]:
            del ready[current]
        order.append(statements[n])
        for user in users[n]:
            waiting[user] -= 1
            if waiting[user] == 0:
                push(user)
    return order
