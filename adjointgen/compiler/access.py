"""Access analysis: what each array read and write touches, and why the adjoint needs no atomics.

Every load of a floating-point array must read population ``l`` (a constant) at, along each axis,
``(x - c) mod n`` for a constant shift ``c``: the periodic pull of XLB's stream. A plain ``x - c``
(an index XLB reads only where it lies inside the grid) is read wrapped the same way. The analysis
recovers ``c`` from the index expression (nested selects) and checks the expression equals
``(x - c) mod n`` for every ``n`` from 1 to ``_CHECK_UP_TO`` and every ``x`` in ``[0, n)``. The
expressions are piecewise linear in ``x`` and ``n`` with unit coefficients, their breakpoints lie
within ``|c| + 1`` of ``0`` or ``n``, and so grids larger than the checked ones behave as the
largest checked one does. An axis that has length 1 by construction (the third axis of a 2D
lattice) may be indexed by the constant 0.

The adjoint sends the adjoint of each load back to the element it read, without atomics:

- per (array, population) one shift (the *primary*, e.g. the streaming pull) is scattered
  straight back; a periodic shift is a bijection of the grid, so each element has one writer;
- every other shift of that population (e.g. bounce-back reading the cell's own pre-streaming
  value) is written to a temporary *slot* of the reading thread, and a second kernel lets each
  thread gather, for its own elements, what the readers left in their slots.

The ``proof`` text of the result says which is which; it is printed in each generated module.
Writes must touch the thread's own cell. An array written unconditionally and read only at the
thread's own cell (``f_1``) is an *output*: the adjoint takes the seeds of its stores straight from
its gradient. An array written conditionally or read at a neighbour (``f_0`` when a boundary
condition recovers its auxiliary data into it) is updated *in place*: a first kernel,
``adjoint_prepare``, moves the gradient of each element the cell overwrote into a seed array and
clears it there, touching only the cell's own elements; the adjoint then takes those seeds and
scatters its reads as above, so no element has two writers in any kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.ir import Load, Program, Select

_CHECK_UP_TO = 16


@dataclass(frozen=True)
class Access:
    array: str
    population: int
    shifts: tuple  # one integer per spatial axis: the load reads (x - shift) mod n


@dataclass
class Accesses:
    loads: dict = field(default_factory=dict)  # load symbol name -> Access
    proof: list = field(default_factory=list)
    primary: dict = field(default_factory=dict)  # (array, population) -> the shift scattered directly
    slots: list = field(default_factory=list)  # Access per temporary slot (the other shifts)
    in_place: list = field(default_factory=list)  # arrays whose stored elements go through adjoint_prepare

    def slot_of(self, access: Access) -> int | None:
        """The temporary slot of a read that is not scattered directly; None if it is."""
        return self.slots.index(access) if access in self.slots else None


def _raw_offset(expr, x) -> int | None:
    """``c`` when ``expr`` is exactly ``x - c`` (an index without a periodic wrap), else None.

    Expanded, not simplified: ``x - c`` expands to the integer c, and an index with a select or a
    modulo (a wrapped read) can never be one, so sympy's simplify (most of the access analysis's
    time) is tried only on what is left: a sum with no select and no modulo."""
    expr = sympy.sympify(expr)
    offset = sympy.expand(x - expr)
    if not offset.is_Integer and not expr.has(Select, sympy.Mod, sympy.Piecewise):
        offset = sympy.simplify(offset)
    return int(offset) if offset.is_Integer and offset != 0 else None


def _shift(expr, x, unit_axis: bool) -> int:
    expr = sympy.sympify(expr)
    if unit_axis:
        if expr == 0 or expr == x:
            return 0
        raise ValueError(f"{expr} on an axis of length 1")
    raw = _raw_offset(expr, x)
    if raw is not None:
        # x - c without a wrap (XLB's extrapolation outlet): XLB reads it only under a condition
        # that keeps it inside the grid; the branchless program reads it everywhere and discards
        # it elsewhere, so it is read wrapped: the same element where XLB reads it, no
        # out-of-bounds read anywhere
        return raw
    free = expr.free_symbols - {x}
    if len(free) > 1:
        raise ValueError(f"{expr} depends on more than the thread index and the axis length")
    n = next(iter(free)) if free else sympy.Symbol("_n_unused", integer=True, positive=True)
    function = sympy.lambdify((x, n), expr, [{"Select": lambda c, a, b: a if c else b}, "math"])
    for size in range(1, _CHECK_UP_TO + 1):
        for position in range(size):
            if not 0 <= int(function(position, size)) < size:
                raise ValueError(f"{expr} leaves the grid at x={position}, n={size}")
    # recover c from the largest grid, where no wrap happens in the middle, then check everywhere
    middle = _CHECK_UP_TO // 2
    shift = middle - int(function(middle, _CHECK_UP_TO))
    for size in range(1, _CHECK_UP_TO + 1):
        for position in range(size):
            if int(function(position, size)) != (position - shift) % size:
                raise ValueError(f"{expr} is not a periodic shift (x={position}, n={size})")
    return shift


def analyse(program: Program, unit_axes: tuple = (), guarded: frozenset = frozenset()) -> Accesses:
    """Classify loads; prove the scatter adjoint race-free. ``unit_axes`` lists the spatial axes
    (0-based) that have length 1 by construction. ``guarded``: the loads whose value matters only
    at some cells (the guard stage's ``needs``); a shift that some other load reads at every cell
    (the streaming pull) is preferred as the primary, so that the cells without the guarded
    conditions write no slots (:func:`_primary_first`)."""
    result = Accesses()
    differentiable = {p.name for p in program.params if p.differentiable}
    for statement in program.statements:
        if not isinstance(statement, Load):
            continue
        population, *spatial = statement.index
        if not sympy.sympify(population).is_Integer:
            raise UnsupportedConstruct(str(statement.origin), "a population index that is not a build-time constant",
                                       "read populations with constant indices (unroll the loop over q)")
        try:
            shifts = tuple(_shift(e, program.thread[a], a in unit_axes) for a, e in enumerate(spatial))
        except ValueError as exc:
            if statement.array in differentiable:
                raise UnsupportedConstruct(str(statement.origin), f"a read of {statement.array} that is not a periodic shift ({exc})",
                                           "read neighbours through XLB's periodic pull pattern") from None
            continue  # a non-differentiable read: printed as written
        result.loads[str(statement.target)] = Access(statement.array, int(population), shifts)
    # stores: own cell only
    for store in program.stores:
        population, *spatial = store.index
        own_cell = all(
            sympy.sympify(e) in ((0, program.thread[a]) if a in unit_axes else (program.thread[a],))
            for a, e in enumerate(spatial)
        )
        if not (sympy.sympify(population).is_Integer and own_cell):
            raise UnsupportedConstruct(str(store.origin), "a write to another cell than the thread's own",
                                       "write only to [l, i, j, k] of the thread; neighbour writes race")
    # race freedom of the adjoint's writes
    by_population: dict = {}
    everywhere = set()  # (array, population, shifts) read by a load that matters at every cell
    for name, access in result.loads.items():
        if access.array in differentiable:
            by_population.setdefault((access.array, access.population), set()).add(access.shifts)
            if name not in guarded:
                everywhere.add((access.array, access.population, access.shifts))
    stored = {s.array for s in program.stores}
    zero = (0,) * len(program.thread)
    in_place = {s.array for s in program.stores if s.when is not None}
    in_place |= {array for (array, _), shifts in by_population.items() if array in stored and shifts != {zero}}
    result.in_place = sorted(in_place)
    for array in result.in_place:
        result.proof.append(f"{array} is updated in place: adjoint_prepare moves the gradients of the elements a cell "
                            "overwrote into seed_" + array + " (own cell only)")
    for (array, population), shifts in sorted(by_population.items()):
        # one shift per population is scattered straight back (a bijection: one writer per
        # element); every other shift goes to a slot of the reading thread and is gathered by
        # the owning thread in a second kernel
        primary, *others = sorted(shifts, key=lambda shift: _primary_first(shift, (array, population, shift) in everywhere, zero))
        result.primary[(array, population)] = primary
        result.proof.append(f"{array}[{population}] read at x - {primary} (mod n): a bijection, scattered directly")
        for shift in others:
            slot = len(result.slots)
            result.slots.append(Access(array, population, shift))
            result.proof.append(f"{array}[{population}] read at x - {shift} (mod n): slot {slot} of the reader, "
                                "gathered by the owner in adjoint_gather")
    return result


def _primary_first(shift: tuple, everywhere: bool, zero: tuple) -> tuple:
    """The sort key of a population's shifts, the primary (scattered directly) first: a shift read
    at every cell (the streaming pull) before those read only under some boundary conditions;
    then a shift other than the own cell's (bounce-back reads the own pre-streaming value, the
    pull its neighbour's). With XLB's ExtrapolationOutflowBC, which reads six more shifts of
    every population at the outlet, the lowest shift was the primary before: every cell then
    wrote its streaming reads' adjoints into slots and the gather read 126 slots per cell
    (13x XLB's forward for the fresh adjoint, NOTES v57)."""
    return (not everywhere, shift == zero, shift)
