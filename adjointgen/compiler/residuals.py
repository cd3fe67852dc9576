"""Residuals: the fewest forward values from which the state-only reverse sweep can run.

A recorded step (a ``wp.Tape``) keeps what its adjoint reads: today a copy of its input ``f_0``,
``q`` values per cell, from which the adjoint replays the whole cell program. The state-only
reverse sweep (no parameter adjoints) reads far less of that program: for BGK only the density
and the velocity, since ``d f_out / d f_in = (1 - omega) I + omega d f_eq(rho, u) / d f_in``
involves the input only through its moments (``d/d omega`` is what needs the non-equilibrium
parts). This stage finds a smallest set of the program's values that separates the loads of the
state from everything the sweep uses (a minimum vertex cut of the program's dependency graph,
by maximum flow), and the statements that recompute the rest of what the sweep uses from them.
A forward variant then stores those values per cell (``forward_residuals``), and adjoint variants
read them instead of replaying from the input (``adjoint_state_residuals``,
``adjoint_fresh_state_residuals``): D3Q19 BGK keeps 4 values per cell instead of 19.

Which values may be cut (stored): floating-point values of the compute precision assigned by the
program (not its loads, which the forward may issue again inside guarded runs), computed at
every cell (not under a boundary-id guard: the forward stores them after its cell program), and
computed by the adjoint's replay exactly as by the forward (not a division the replay writes
through a reciprocal, :func:`adjointgen.compiler.reciprocals.in_replay`, nor anything computed
from one). So the residual variants compute bit for bit what the replaying ones do, given the
same compiled arithmetic. Of the smallest cuts, the one nearest the loads is taken.

Nothing is generated (:func:`choose` gives None) where the step updates an array in place, the
sweep reads no state, or the cut would store no fewer values than the copy; the plans leave the
variants out of split steps too (:mod:`adjointgen.compiler.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from adjointgen.compiler import reciprocals
from adjointgen.compiler.access import Accesses
from adjointgen.compiler.guards import CellGuards
from adjointgen.compiler.ir import Assign, Load, Program
from adjointgen.compiler.lines import split_prologue
from adjointgen.compiler.reverse import Adjoint

# a capacity no cut can reach (the graph has far fewer vertices than this)
_UNCUTTABLE = 1 << 20


@dataclass(frozen=True)
class Residuals:
    """What ``forward_residuals`` stores and the residual adjoint variants replay.

    ``symbols``: the stored values, one slot each, in program order. ``statements``: the replay
    from them, in program order, replay form (reciprocals): the statements that compute what the
    state-only sweep uses and is not stored; none of them loads the state."""

    symbols: tuple[str, ...]
    statements: tuple


def choose(program: Program, adjoint: Adjoint, accesses: Accesses, cell_guards: CellGuards,
           stored_values: int) -> Residuals | None:
    """The residuals of the state-only adjoint, or None where none pay (see the module docstring).
    The state is the program's differentiable arrays other than design fields (``f_0``, ``f_1``);
    ``stored_values`` is what a copy of the input keeps per cell (q), the count to beat."""
    if accesses.in_place:
        return None
    _, body = split_prologue(program, adjoint.keep)  # what the adjoint replays
    state_arrays = {p.name for p in program.params if p.differentiable and p.name not in program.field_names}
    replayed = reciprocals.in_replay(body, adjoint.reciprocals)
    used = _used_by_state_sweep(adjoint, {str(s.target) for s in body})
    cuttable = _cuttable(program, body, replayed, set(cell_guards.needs))
    cut = _minimum_cut(body, used, state_arrays, cuttable)
    if cut is None or not cut or len(cut) >= stored_values:
        return None
    statements = _replay_from(replayed, used, cut)
    if any(isinstance(s, Load) and s.array in state_arrays for s in statements):
        raise AssertionError("the residual replay loads the state: the cut is wrong")
    order = [str(s.target) for s in body if str(s.target) in cut]
    return Residuals(tuple(order), tuple(statements))


def _used_by_state_sweep(adjoint: Adjoint, defined: set) -> set:
    """The replayed values the state-only sweep reads: every update's but the parameter adjoints'
    (those are compiled only into the variants with ``d/d omega``)."""
    parameter_adjoints = {variable for _, variable in adjoint.parameters if variable}
    used = set()
    for group in adjoint.groups:
        for update in group.updates:
            if update.target not in parameter_adjoints:
                used |= {s.name for s in update.expr.free_symbols} & defined
    return used


def _cuttable(program: Program, body: list, replayed: list, guarded: set) -> set:
    """Values that may be stored: see the module docstring."""
    changed: set = set()
    for before, after in zip(body, replayed):
        name = str(before.target)
        rewritten = isinstance(before, Assign) and after.expr != before.expr
        if rewritten or {s.name for s in before.uses()} & changed:
            changed.add(name)
    return {str(s.target) for s in body
            if isinstance(s, Assign) and program.dtypes.get(str(s.target)) == program.compute_dtype
            and str(s.target) not in guarded and str(s.target) not in changed}


def _minimum_cut(body: list, used: set, state_arrays: set, cuttable: set) -> set | None:
    """A smallest set of values through which every path from a load of the state to a used
    value passes (the one nearest the loads), or None where no cut of cuttable values exists.

    Maximum flow on the split graph: each value ``v`` is an edge ``v_in -> v_out`` of capacity 1
    (cuttable) or more than any cut; each use ``u -> v`` an edge ``u_out -> v_in``; the state's
    loads hang from a source, the used values from a sink. The values whose ``v_in`` the
    residual graph still reaches from the source, and whose ``v_out`` it does not, are the cut."""
    names = [str(s.target) for s in body]
    position = {name: n for n, name in enumerate(names)}
    source, sink = 2 * len(names), 2 * len(names) + 1
    rows, cols, caps = [], [], []

    def edge(a: int, b: int, capacity: int) -> None:
        rows.append(a)
        cols.append(b)
        caps.append(capacity)

    for n, statement in enumerate(body):
        name = names[n]
        edge(2 * n, 2 * n + 1, 1 if name in cuttable else _UNCUTTABLE)
        for operand in statement.uses():
            if operand.name in position:
                edge(2 * position[operand.name] + 1, 2 * n, _UNCUTTABLE)
        if isinstance(statement, Load) and statement.array in state_arrays:
            edge(source, 2 * n, _UNCUTTABLE)
        if name in used:
            edge(2 * n + 1, sink, _UNCUTTABLE)
    size = sink + 1
    capacity = csr_matrix((np.asarray(caps, dtype=np.int32), (rows, cols)), shape=(size, size))
    capacity.sum_duplicates()
    flow = maximum_flow(capacity, source, sink)
    if flow.flow_value >= _UNCUTTABLE:
        return None
    residual = capacity - flow.flow
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int32)
    residual.eliminate_zeros()
    reached = set(breadth_first_order(residual, source, directed=True, return_predecessors=False).tolist())
    return {names[n] for n in range(len(names)) if 2 * n in reached and 2 * n + 1 not in reached}


def _replay_from(replayed: list, used: set, cut: set) -> list:
    """The statements that compute the used values from the cut (and from what is not state:
    masks, constants), in program order, without the cut's own statements."""
    wanted, found = set(used), []
    for statement in reversed(replayed):
        name = str(statement.target)
        if name in wanted and name not in cut:
            found.append(statement)
            wanted |= {s.name for s in statement.uses()}
    found.reverse()
    return found
