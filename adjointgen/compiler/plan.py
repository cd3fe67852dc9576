"""Kernel plans: what each generated kernel is, as prepared lists of lines, between reverse mode
and the templates.

One frozen record per kernel: :class:`ForwardPlan` (``forward`` and, where its copy of ``f_0``
is provably exact, ``forward_save``: the same lines plus the stores of that copy); :class:`AdjointPlan`, the one adjoint body
and the ``wp.static`` variants compiled from it; :class:`PreparePlan` (``adjoint_prepare``,
arrays updated in place) and :class:`GatherPlan` (``adjoint_gather``, the slots); with the
shared :class:`CellPlan` (thread index, grid sizes, neighbour coordinates, the early exit, the
guarded cell program) and the :class:`~adjointgen.manifest.Manifest`, they make a
:class:`ModulePlan`, which :func:`adjointgen.compiler.emit.render_module` only prints.

Guarantees: every decision about generated code is made here or in :mod:`~adjointgen.compiler.lines`;
the forward kernel and the adjoint share one prologue; the branchless program keeps the old
value of every output element where the exit condition holds, and the plans render that
uniform select as an early ``return`` (the same semantics, without evaluating the cell), which is
safe because this is our explicit adjoint, not Warp's automatic one. A kernel whose plan has an
empty body is not generated and not listed in the manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from dataclasses import dataclass, field

import sympy

from adjointgen.compiler import guards
from adjointgen.compiler import pressure
from adjointgen.compiler import reciprocals
from adjointgen.compiler.access import Access, Accesses
from adjointgen.compiler.ir import Assign, Load, Origin, Program
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.lines import (Lines, convert, guarded_body, merge_ifs, needed, population_order, split_prologue,
                                       static_if, without_parameters)
from adjointgen.compiler.residuals import Residuals
from adjointgen.compiler.reverse import Adjoint
from adjointgen.config import Configuration
from adjointgen.manifest import Manifest, adjoint_kernel_name, forward_kernel_name


@dataclass(frozen=True)
class CellPlan:
    """What the forward kernel and the adjoint's replay share."""

    prologue: list  # thread index, grid sizes, neighbour coordinates, what the exit condition needs
    exit_condition: str | None  # where it holds, the cell keeps its old output
    lines: list  # the guarded cell program without its stores (the adjoint replays it)


@dataclass(frozen=True)
class ForwardVariant:
    """One compiled variant of the forward body; its name comes from manifest.forward_kernel_name."""

    name: str
    save: bool
    part: str = ""  # split steps: "" (every cell), "rest", "listed", "grid" (see plan._split, Manifest.listed_ids)
    device_omega: bool = False  # omega from a one-element array (see ParameterArguments)
    residuals: bool = False  # also stores the residuals (forward_residuals)

    @property
    def arguments(self) -> str:
        """The variant's arguments to the module's ``_forward_variant`` factory."""
        return (f"save={self.save}" + (f', part="{self.part}"' if self.part else "") + _device_argument(self.device_omega)
                + _residual_argument(self.residuals))


@dataclass(frozen=True)
class ForwardPlan:
    """The module's one forward body and the variants compiled from it: ``forward`` and, where a
    copy of the input made while reading it is provably exact, ``forward_save`` (the lines of that
    copy under ``wp.static(save)``). Every variant takes the copy's array as its last parameter;
    ``forward`` never writes it."""

    params: list
    body: list  # the cell program, the copy's stores (save variant only), the outputs' stores
    variants: list
    comment: tuple
    prologue: list  # the cell plan's, or a split step's (its listed part takes the cell from the list)
    skip: list  # a split step's rest part: the listed ids' cells return
    factory_params: str  # the parameters of the module's _forward_variant factory
    factory_lines: list  # the factory's lines before the kernel (ParameterArguments)


_ADJOINT_COMMENT = (
    "One body, compiled per variant (wp.static flags; each variant its own module, compiled on first launch):",
    "fresh=False: overwritten outputs' gradients get 0 (plus what reads of their old content contributed),",
    "  the elements read get their adjoints added; fresh=True: for gradient arrays known to be zero where",
    "  written and outputs' gradients not needed, the elements read get their adjoints written, nothing",
    "  is cleared; state_only=True: without the per-cell adjoints of the scalar parameters (fewer registers);",
    "device_omega=True: omega read from a one-element array (for callers that hold it on the device only).",
)

_RESIDUAL_COMMENT = (
    "with_residuals=True (state_only only): the replay starts from the values forward_residuals stored, not",
    "from the step's input (which these variants never read): the same sweep, the same values.",
)


@dataclass(frozen=True)
class AdjointVariant:
    """One compiled variant of the adjoint body; its name comes from manifest.adjoint_kernel_name."""

    name: str
    fresh: bool
    state_only: bool
    part: str = ""  # split steps: "" (every cell), "rest", "listed", "grid" (see plan._split, Manifest.listed_ids)
    device_omega: bool = False  # omega from a one-element array (see ParameterArguments)
    residuals: bool = False  # replays from forward_residuals' values (state only)

    @property
    def arguments(self) -> str:
        """The variant's arguments to the module's ``_adjoint_variant`` factory."""
        return (f"fresh={self.fresh}, state_only={self.state_only}" + (f', part="{self.part}"' if self.part else "")
                + _device_argument(self.device_omega) + _residual_argument(self.residuals))


def _device_argument(device_omega: bool) -> str:
    return ", device_omega=True" if device_omega else ""


def _residual_argument(residuals: bool) -> str:
    return ", with_residuals=True" if residuals else ""


#: the scalar parameter of XLB's call that a caller may hold only on the device (a traced JAX
#: value): the forward and the adjoints with omega's part get variants that read it from an array
DEVICE_PARAMETER = "omega"


@dataclass(frozen=True)
class ParameterArguments:
    """How the forward and adjoint variants take :data:`DEVICE_PARAMETER`: through a kernel
    parameter whose annotation the variant factory chooses (``factory_lines``), a number or, in
    the ``device_omega`` variants, a one-element array read at the top of the body (``prologue``),
    so that a caller with omega only on the device launches without reading it back. Empty where
    the program has no such parameter."""

    factory_lines: list
    prologue: list
    generated: bool  # the device_omega variants are compiled (not where adjoint_prepare reads omega)


@dataclass(frozen=True)
class SweepGroup:
    """The reverse sweep's lines for one run of forward statements from the same source line."""

    origin: str  # that line, with the unrolled loop variables' values of the run
    lines: list


@dataclass(frozen=True)
class AdjointPlan:
    """The module's one adjoint body, as the template prints it, and the variants compiled from it."""

    params: list
    kept: list  # a kept cell's writes before its early return
    seeds: list  # adjoints of the values the cell stored, from the outputs' gradients
    reads: list  # gradients read before any write (not fresh)
    reads_late: bool  # those reads after the reverse sweep, not up front (compiler.pressure)
    replay: list  # the cell program again (CellPlan.lines)
    in_place_seeds: list  # seeds of elements updated in place, from the seed arrays
    groups: list  # SweepGroup: the reverse sweep
    writes: list
    parameter_lines: list  # per-cell adjoints of scalar parameters (not state_only)
    variants: list
    prologue: list  # the cell plan's prologue; a split step's listed part takes its cell from the list
    skip: list  # a split step's rest part: the listed ids' cells return (compiled without their code)
    factory_params: str  # the parameters of the module's _adjoint_variant factory
    factory_lines: list  # the factory's lines before the kernel (ParameterArguments)
    comment: tuple = _ADJOINT_COMMENT


@dataclass(frozen=True)
class PreparePlan:
    """``adjoint_prepare`` (arrays updated in place; empty body: not generated)."""

    params: list = field(default_factory=list)
    body: list = field(default_factory=list)


@dataclass(frozen=True)
class GatherVariant:
    name: str
    arguments: str  # the factory's arguments after the name


@dataclass(frozen=True)
class GatherPlan:
    """``adjoint_gather`` (reads through slots; empty body: not generated), and where every slot is
    gathered only at some readers' boundary ids, ``adjoint_gather_listed`` (the cells of a list)
    and ``adjoint_gather_marks`` (marks the cells that list holds), all from one body."""

    params: list = field(default_factory=list)
    body: list = field(default_factory=list)
    variants: list = field(default_factory=list)  # GatherVariant


@dataclass(frozen=True)
class KeptPlan:
    """``adjoint_kept`` (completes a fresh adjoint where cells are kept; empty body: not generated)."""

    params: list = field(default_factory=list)
    body: list = field(default_factory=list)


@dataclass(frozen=True)
class ModulePlan:
    config: Configuration
    identity: str  # pipeline.program_identity
    sources: list  # the functionals read (frontend.Functional), sorted by symbol
    proof: list  # the access proof, for the header
    statement_count: int
    adjoint_update_count: int
    cell: CellPlan
    forward: ForwardPlan
    adjoint: AdjointPlan
    prepare: PreparePlan
    gather: GatherPlan
    kept: KeptPlan
    manifest: Manifest


@dataclass
class _Destination:
    """An element the adjoint writes (one writer, by the access proof)."""

    cleared: bool  # an output element: its old content was overwritten
    dtype: str
    origin: Origin | None
    terms: list = field(default_factory=list)  # adjoint variables added to it
    added_to: bool = False  # a design field's gradient: added to in every variant, fresh ones too
    loads: list = field(default_factory=list)  # the loads (symbol names) whose adjoints are the terms


@dataclass(frozen=True)
class _Sweep:
    groups: list  # SweepGroup
    destinations: dict  # written element -> _Destination
    slot_terms: dict  # slot -> adjoint variables of the reads through it


@dataclass(frozen=True)
class _WriteBack:
    reads: list  # (Origin, line): gradients read up front
    writes: list  # accumulating writes
    fresh_writes: list  # the writes of the fresh variant
    fresh_outputs: list  # those of them that write an output's (cleared) element
    field_reads: list  # (Origin, line): the design fields' gradients, read up front in every variant


@dataclass(frozen=True)
class AdjointParts:
    """What :func:`_adjoint_plan` assembles into the one adjoint body."""

    fresh: bool  # an adjoint_fresh variant exists (nothing updated in place)
    has_parameters: bool  # state_only variants exist
    params: list
    kept: list
    parameter_kept: list
    seeds: list
    in_place_seeds: list
    replay: list
    sweep: _Sweep
    carry: list | None  # the fresh variant's writes into the seed array (steps updating f_0 in place)
    prologue: list  # the adjoint's prologue (the cell plan's, or a split step's)
    skip: list  # the rest part's early return (a split step)
    parts: tuple  # ("",) or, for a split step, ("", "rest", "listed_K", ..., "grid_K", ...): see _split
    write_back: _WriteBack
    reads_late: bool  # the write-back's reads after the sweep (compiler.pressure)
    slot_lines: list
    parameter_lines: list
    arguments: ParameterArguments
    residual_replay: list | None = None  # the _residuals variants' replay (None: no such variants)


class _Context:
    """The inputs every plan builder reads (stage results and the line printer)."""

    def __init__(self, program: Program, adjoint: Adjoint, accesses: Accesses, cell_guards: guards.CellGuards, names: Namer,
                 residuals: Residuals | None = None):
        self.program, self.adjoint, self.accesses, self.guards, self.names = program, adjoint, accesses, cell_guards, names
        # plain: for kernels without parts (adjoint_prepare, adjoint_kept, the gathers) and the
        # split's own tests; lines (the adjoint's body) and forward_lines (the forward's): a split
        # step's tests of the boundary id printed as the flags defined after its early return
        self.plain = Lines(program, accesses, names)
        self.lines, self.print = self.plain, self.plain.print
        self.forward_lines = self.plain  # the forward's body (split steps: fewer flags, see _id_flags)
        self.grads = {p.name: names.gradient(p.name) for p in program.params if p.differentiable}
        self.reference = next(p.name for p in program.params if p.differentiable)
        self.forward_params = [f"{p.name}: {p.annotation()}" for p in program.params]  # adjoint_prepare's
        # the forward and adjoint variants': DEVICE_PARAMETER through its argument (ParameterArguments)
        self.variant_params = [f"{names.parameter_argument(p.name)}: {names.parameter_type(p.name)}"
                               if self.takes_device_parameter(p) else f"{p.name}: {p.annotation()}" for p in program.params]
        self.seed_params = [f"{names.seed(a)}: {program.param(a).annotation()}" for a in accesses.in_place]
        self.slot_needs = _slot_needs(accesses, cell_guards.needs)
        # the residual variants run over the whole grid only (a split step's parts: not served)
        self.residuals = residuals if residuals is not None and not self.listed_ids else None
        if self.listed_ids:
            self.lines = self.plain.aliased(_flag_aliases(self, forward=False))
            self.print = self.lines.print
            self.forward_lines = self.plain.aliased(_flag_aliases(self, forward=True))

    @staticmethod
    def takes_device_parameter(param) -> bool:
        return param.name == DEVICE_PARAMETER and param.kind == "scalar"

    @functools.cached_property
    def parameter_arguments(self) -> ParameterArguments:
        """:func:`_parameter_arguments` of the program, computed once."""
        return _parameter_arguments(self)

    @functools.cached_property
    def listed_ids(self) -> tuple:
        """:func:`_listed_ids` of the program, computed once (the plans, the bodies and the manifest read it)."""
        return _listed_ids(self)

    def dtype(self, name: str) -> str:
        return self.program.param(name).dtype

    def zero(self, dtype: str) -> str:
        return self.print.number(0, dtype)


def _slot_needs(accesses: Accesses, needs: dict) -> dict:
    """{slot: the boundary ids at which its reads can have a non-zero adjoint} for the slots whose
    every read is guarded (see :mod:`adjointgen.compiler.guards`); elsewhere their adjoint is exactly zero
    (select semantics), so the slot is neither written nor gathered there."""
    found: dict = {}
    unguarded = set()
    for name, access in accesses.loads.items():
        slot = accesses.slot_of(access)
        if slot is None:
            continue
        if name not in needs:
            unguarded.add(slot)
        else:
            found[slot] = found[slot].union(needs[name]) if slot in found else needs[name]
    return {slot: need for slot, need in found.items() if slot not in unguarded}


def _cell_plan(c: _Context) -> CellPlan:
    prologue_statements, body_statements = split_prologue(c.program, c.adjoint.keep)
    prologue = c.plain.grid_lines(c.reference) + c.plain.neighbour_definitions()
    prologue += [c.plain.statement(s) for s in prologue_statements]
    exit_condition = c.plain.print(c.adjoint.keep, "bool") if c.adjoint.keep is not None else None
    return CellPlan(prologue, exit_condition, guarded_body(c.lines, body_statements, c.guards, frozenset(c.listed_ids)))


def _save_lines(c: _Context, q: int) -> list:
    """``forward_save``'s stores into the copy of its input, or [] where a copy made that way is
    not provably complete and exact.

    The copy is complete when every element of the input ``f_0`` (c.reference) is loaded by
    exactly one thread, unconditionally: for each population ``0 <= l < q`` a load at the primary
    shift (a periodic shift, a bijection of the grid: the access proof) that is printed outside
    every guard and after the early exit; the copy stores that load's value at the same index.
    Refused where the array is stored by the step (in place or an output: the copy must be of the
    input), a population has no such load, a load of the array is in the prologue, or the exit
    condition is other than ``bc_mask[0, own cell] == 255``. Cells that return early load nothing,
    so their neighbours' elements are not copied: the runtime uses forward_save only on masks
    without such cells (as for adjoint_fresh).

    The stores come after the whole cell program, not after each load: the compiler cannot prove
    the copy distinct from the input, so a store between two loads would hold the second back
    until the first returned (every loaded value is top-level, unguarded, so still defined)."""
    array = c.reference
    if array in c.accesses.in_place or array in {s.array for s in c.program.stores}:
        return []
    prologue, body = split_prologue(c.program, c.adjoint.keep)
    if any(isinstance(s, Load) and s.array == array for s in prologue):
        return []
    if c.adjoint.keep is not None and _kept_id_load(c) is None:
        return []
    saved, found = c.names.saved(array), {}
    for statement in body:
        if not isinstance(statement, Load) or statement.array != array or str(statement.target) in c.guards.needs:
            continue
        access = c.accesses.loads.get(str(statement.target))
        if access is None or access.population in found or c.accesses.primary.get((array, access.population)) != access.shifts:
            continue
        found[access.population] = f"{c.lines.index(statement.target, saved, statement.index)} = {statement.target}"
    if set(found) != set(range(q)):
        return []
    return [found[population] for population in range(q)]


_FORWARD_COMMENT = (
    "One body, compiled per variant (wp.static flag; each variant its own module, compiled on first launch).",
    "save=True (forward_save, where listed): each element of {array} is loaded by exactly one thread, at its",
    "primary read (a periodic shift of the grid, unguarded), and stored from there into {saved}, a copy",
    "complete where no cell is kept (bc_mask 255: such a cell returns before its loads); save=False",
    "leaves {saved} alone (callers pass any array of its type). device_omega=True: omega read from a",
    "one-element array (for callers that hold it on the device only).",
)


def _forward_body(c: _Context) -> list:
    """The forward's cell program: the adjoint's replay (``cell.lines``), except that loads of the
    cell's own elements shared by several guarded runs are issued again in each run that uses
    them (:func:`guards.reload_loads`), so that they are not live across the other runs. The
    replay keeps them once: its reverse sweep reads them (at every cell) anyway."""
    _, body = split_prologue(c.program, c.adjoint.keep)
    own = {str(s.target) for s in body if isinstance(s, Load) and _own_cell(c, s.index)}
    stores = {s.name for store in c.program.stores for e in (store.value, store.keep, store.when, *store.index)
              if e is not None for s in sympy.sympify(e).free_symbols}
    scheduled = guards.schedule(body, c.guards.needs, c.guards.id_symbol)

    def reload_name(name: str, run: int) -> str:  # a reload is typed like its load
        again = c.names.reload(name, run)
        c.program.dtypes[again] = c.program.dtypes[name]
        return again

    statements, needs = guards.reload_loads(scheduled, c.guards.needs, own, reload_name, stores)
    return guarded_body(c.forward_lines, statements, guards.CellGuards(c.guards.id_symbol, needs), frozenset(c.listed_ids))


def _own_cell(c: _Context, index) -> bool:
    """``index`` is ``[population, the thread's own cell]`` (unit axes may be written as 0)."""
    return all(sympy.sympify(e) in (c.program.thread[a], 0) for a, e in enumerate(index[1:]))


def _forward_plan(c: _Context, cell: CellPlan, q: int, split: Split) -> ForwardPlan:
    stores = [line for store in c.program.stores for line in c.forward_lines.store(store)]
    saves = _save_lines(c, q)
    saved = c.names.saved(c.reference)
    params = c.variant_params + [f"{saved}: {c.program.param(c.reference).annotation()}"] + _listed_param(c) + _residual_param(c)
    arguments = c.parameter_arguments
    variants = [ForwardVariant(forward_kernel_name(save, part), save, part)
                for part in split.forward_parts for save in (False, True)[: 1 + bool(saves)]]
    # for callers with omega on the device only (a JAX trace): the whole grid, and a split's parts
    variants += [ForwardVariant(forward_kernel_name(False, part, True), False, part, True)
                 for part in split.forward_parts] * arguments.generated
    variants += [ForwardVariant(forward_kernel_name(False, residuals=True), False, residuals=True)] * bool(c.residuals)
    copy = ["if wp.static(save):", "    # the copy of the input"] + [f"    {line}" for line in saves] if saves else []
    comment = tuple(line.format(array=c.reference, saved=saved) for line in _FORWARD_COMMENT)
    comment += _FORWARD_RESIDUAL_COMMENT if c.residuals else ()
    factory = ("name: str, save: bool" + (', part: str = ""' if len(split.forward_parts) > 1 else "") + _device_parameter(arguments)
               + (", with_residuals: bool = False" if c.residuals else ""))
    return ForwardPlan(params, _forward_body(c) + copy + _residual_stores(c) + stores, variants, comment,
                       arguments.prologue + split.prologue, split.forward_skip, factory, arguments.factory_lines)


_FORWARD_RESIDUAL_COMMENT = (
    "with_residuals=True (forward_residuals): also stores, per cell, the values from which the state-only",
    "adjoint's _residuals variants recompute what their reverse sweep reads (adjointgen.compiler.residuals).",
)


def _residual_param(c: _Context) -> list:
    """The residuals' array (every forward and adjoint variant takes it where the module has
    residuals; only forward_residuals and the _residuals adjoints touch it)."""
    if not c.residuals:
        return []
    return [f"{c.names.residuals()}: wp.array{len(c.program.thread) + 1}d(dtype=wp.{c.program.compute_dtype})"]


def _residual_element(c: _Context, slot: int) -> str:
    return f"{c.names.residuals()}[{slot}, {c.lines.thread}]"


def _residual_stores(c: _Context) -> list:
    """forward_residuals' stores, after the cell program (each value is computed at every cell)."""
    if not c.residuals:
        return []
    stores = [f"{_residual_element(c, slot)} = {symbol}" for slot, symbol in enumerate(c.residuals.symbols)]
    return static_if("with_residuals", ["# the residuals: what the state-only adjoint recomputes its sweep's values from"] + stores)


def _residual_replay(c: _Context) -> list:
    """The _residuals adjoints' replay: the stored values, then what the sweep reads computed from them."""
    loads = [f"{symbol} = {_residual_element(c, slot)}" for slot, symbol in enumerate(c.residuals.symbols)]
    return ["# from the residuals forward_residuals stored (the step's input is not read)"] + loads + guarded_body(
        c.lines, list(c.residuals.statements), c.guards, frozenset(c.listed_ids))


def _device_parameter(arguments: ParameterArguments) -> str:
    """The variant factories' ``device_omega`` parameter, where the program takes omega."""
    return ", device_omega: bool = False" if arguments.factory_lines else ""


def _parameter_arguments(c: _Context) -> ParameterArguments:
    """See :class:`ParameterArguments`. The ``device_omega`` variants are left out where
    ``adjoint_prepare`` (one kernel, omega as a number) reads omega: a caller with omega only on
    the device could not launch it."""
    param = next((p for p in c.program.params if c.takes_device_parameter(p)), None)
    if param is None:
        return ParameterArguments([], [], False)
    argument, annotation = c.names.parameter_argument(param.name), c.names.parameter_type(param.name)
    factory_lines = [f"{annotation} = wp.array(dtype={param.annotation()}) if device_omega else {param.annotation()}"]
    prologue = static_if("device_omega", [f"{param.name} = {argument}[0]  # a caller's omega on the device: no read-back"],
                         [f"{param.name} = {argument}"])
    prepared = needed(c.program, [c.adjoint.keep] + [condition for _, _, condition in c.adjoint.prepared])
    prepare_reads = bool(c.accesses.in_place) and any(param.name in {str(u) for u in s.uses()} for s in prepared)
    return ParameterArguments(factory_lines, prologue, not prepare_reads)


def _seed_lines(c: _Context) -> tuple[list, list]:
    """The seeds from the outputs' gradients, and those from the seed arrays (in place). A seed of
    an element overwritten only where a condition holds is loaded inside an ``if`` block on it (its
    variable zero before), so the seed array is read only where the cell overwrote the element."""
    seeds, defaults, in_place_seeds = [], [], []
    compute = c.program.compute_dtype
    for seed in c.adjoint.seeds:
        source = c.names.seed(seed.array) if seed.in_place else c.grads[seed.array]
        read = f"{source}[{c.lines.store_index(seed.index)}]"
        dtype = c.dtype(seed.array)
        if seed.in_place and seed.condition is not None:
            read = convert(read, dtype, compute)  # adjoints live in the compute precision
            defaults += [] if seed.accumulate else [f"{seed.variable} = {c.zero(compute)}"]
            value = f"{seed.variable} + {read}" if seed.accumulate else read
            in_place_seeds += [f"if {c.print(seed.condition, 'bool')}:", f"    {seed.variable} = {value}"]
            continue
        if seed.condition is not None:
            read = f"wp.where({c.print(seed.condition, 'bool')}, {read}, {c.zero(dtype)})"
        read = convert(read, dtype, compute)  # adjoints live in the compute precision
        line = f"{seed.variable} = {seed.variable} + {read}" if seed.accumulate else f"{seed.variable} = {read}"
        (in_place_seeds if seed.in_place else seeds).append(line)
    return seeds, defaults + merge_ifs(in_place_seeds)


def _update_line(c: _Context, update) -> str:
    compute = c.program.compute_dtype
    if update.first:
        return f"{update.target} = {c.print(update.expr, compute)}"
    if update.expr.could_extract_minus_sign():
        return f"{update.target} = {update.target} - {c.print.atom(-update.expr, compute)}"
    return f"{update.target} = {update.target} + {c.print(update.expr, compute)}"


def _sweep(c: _Context) -> _Sweep:
    """The reverse sweep's groups, and where the adjoints of the reads go: straight back to the
    element read (primary reads), or into the reader's slot."""
    destinations = {f"{c.grads[array]}[{c.lines.store_index(index)}]": _Destination(True, c.dtype(array), None)
                    for array, index in c.adjoint.clears}
    slot_terms: dict = {}  # one element read through two index expressions shares a slot
    updating = []  # the groups with updates (a load's group only adds a term to a destination)
    for group in c.adjoint.groups:
        if group.scatter is not None:
            array, index, name, symbol = group.scatter
            slot = c.accesses.slot_of(c.accesses.loads[symbol])
            if slot is None:  # the primary read of this population: scattered straight back
                target = c.lines.index(symbol, c.grads[array], index)
                entry = destinations.setdefault(target, _Destination(False, c.dtype(array), group.origin,
                                                                     added_to=array in c.program.field_names))
                entry.terms.append(name)
                entry.loads.append(str(symbol))
                entry.origin = entry.origin or group.origin
            else:  # another read of it: the reader's own slot, gathered in adjoint_gather
                slot_terms.setdefault(slot, []).append(name)
            continue
        updating.append(group)
    runs = [list(run) for _, run in itertools.groupby(updating, key=lambda group: group.origin.site)]
    last = {update.target: index for index, run in enumerate(runs) for group in run for update in group.updates}
    stores = [[_parameter_store(c, name, variable) for name, variable in c.adjoint.parameters if last.get(variable) == index]
              for index in range(len(runs))]
    return _Sweep([_sweep_group(c, run, store) for run, store in zip(runs, stores)], destinations, slot_terms)


def _sweep_group(c: _Context, run: list, stores: list) -> SweepGroup:
    """One comment for a run of groups from one source line, and their updates with the
    parameter-only ones (``adj_omega``) last, in one ``wp.static`` block, where that order
    computes the same values; then the stores of the per-cell parameter adjoints that this run
    completes (``stores``)."""
    parameter_adjoints = {variable for _, variable in c.adjoint.parameters if variable}
    updates = parameters_last([update for group in run for update in group.updates], parameter_adjoints)
    body = [(_update_line(c, update), update.target in parameter_adjoints) for update in updates]
    if stores:
        body += [("# the per-cell adjoints complete here, stored now (summed over the grid by the runtime)", True)]
        body += [(line, True) for line in stores]
    return SweepGroup(describe_origins([group.origin for group in run]), without_parameters(body, bool(c.adjoint.parameters)))


def _parameter_store(c: _Context, name: str, variable: str | None) -> str:
    """The store of a scalar parameter's per-cell adjoint (zero where nothing depends on it)."""
    return f"{c.names.parameter_cells(name)}[{c.lines.thread}] = {variable or c.zero(c.dtype(name))}"


def parameters_last(updates: list, parameter_adjoints: set) -> list:
    """``updates`` with those of the parameter adjoints moved after the others, or unchanged where
    a moved update would pass one that writes a value it reads or reads the value it writes."""
    for position, update in enumerate(updates):
        if update.target in parameter_adjoints:
            passed = [u for u in updates[position + 1:] if u.target not in parameter_adjoints]
            if any(u.target in update.reads() or update.target in u.reads() for u in passed):
                return updates
    return ([u for u in updates if u.target not in parameter_adjoints]
            + [u for u in updates if u.target in parameter_adjoints])


def describe_origins(origins: list) -> str:
    """A run of statements from one source line as one comment text: the line, then the loop
    variables' values of each statement (``[l=18..1]`` where one variable counts by one)."""
    bindings = [o.bindings for o in origins if o.bindings]
    if not bindings:
        return origins[0].site
    keys = {tuple(b.split("=")[0] for b in binding) for binding in bindings}
    if len(bindings) > 1 and len(keys) == 1 and len(next(iter(keys))) == 1:
        key = next(iter(keys))[0]
        values = [binding[0].split("=", 1)[1] for binding in bindings]
        return f"{origins[0].site}  [{key}={_value_runs(values)}]"
    return f"{origins[0].site}  [{'; '.join(', '.join(binding) for binding in bindings)}]"


def _value_runs(values: list) -> str:
    """Integer values, with runs of three or more that count up or down by one written ``a..b``."""
    if not all(v.lstrip("-").isdigit() for v in values):
        return ", ".join(values)
    numbers, out, start = [int(v) for v in values], [], 0
    while start < len(numbers):
        end = start + 1
        step = numbers[end] - numbers[start] if end < len(numbers) else 0
        while abs(step) == 1 and end < len(numbers) and numbers[end] - numbers[end - 1] == step:
            end += 1
        run = numbers[start:end] if end - start > 2 else numbers[start:start + 1]
        out.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else str(run[0]))
        start += len(run)
    return ", ".join(out)


def _write_back(c: _Context, sweep: _Sweep) -> _WriteBack:
    """Every element the adjoint writes has exactly one writer (the access proof), so all reads of
    gradient arrays can come before any write. Emitting them that way lets the compiler issue them
    together; interleaved read-modify-writes would each wait a full memory round trip, since it
    cannot prove the addresses distinct. Whether they come up front or after the sweep is
    :func:`adjointgen.compiler.pressure.reads_after_sweep`'s choice."""
    zero = c.zero(c.dtype(c.program.stores[0].array)) if c.program.stores else "0"
    reads, writes, fresh_writes, fresh_outputs, field_reads = [], [], [], [], []
    for target, entry in sorted(sweep.destinations.items(), key=lambda item: population_order(item[0])):
        # the terms are adjoints (compute precision); the element is in the array's precision
        added = convert(" + ".join(entry.terms), c.program.compute_dtype, entry.dtype) if entry.terms else None
        if entry.added_to:  # the caller's array, also for fresh variants: no scratch, no addition launch
            old = c.names.old(target)
            field_reads.append((entry.origin, f"{old} = {target}"))
            writes.append(f"{target} = {old} + {added}")
            fresh_writes.append(writes[-1])
            continue
        if added is not None or not entry.cleared:
            fresh_writes.append(f"{target} = {added or zero}")
            if entry.cleared:
                fresh_outputs.append(fresh_writes[-1])
        if not entry.cleared:
            old = c.names.old(target)
            reads.append((entry.origin, f"{old} = {target}"))
            added = f"{old} + {added}" if added else old
        writes.append(f"{target} = {added or zero}")
    return _WriteBack(reads, writes, fresh_writes, fresh_outputs, field_reads)


def _looped_clears(c: _Context, sweep: _Sweep, writes: list) -> list:
    """``writes`` with each output array's clears of the cell's own elements (``adj_f_1[l, i, j, k]
    = 0`` for every population l from 0 up) as one loop whose count the compiler cannot fold.

    For modules whose sweep needs every register (:mod:`adjointgen.compiler.pressure`): unrolled,
    the clears are addressed like the seeds' loads at the top, and the compiler kept those
    addresses live through the sweep to the end, where it spilled them (D3Q27 KBC's accumulating
    adjoints: 68-104 bytes, NOTES v56). In the loop each address is computed where it is stored.
    The clears stay after every read (moving them up made the kernels twice as slow, v47). The
    count is ``wp.min(shape[0], populations)``: the same elements as the unrolled lines."""
    own: dict = {}  # (array, the index past the population) -> {population: the cleared line's target}
    for array, index in c.adjoint.clears:
        target = f"{c.grads[array]}[{c.lines.store_index(index)}]"  # as _sweep keys the destinations
        entry, population = sweep.destinations[target], c.lines.store_index(index[:1])
        if population.isdigit() and not entry.terms and not entry.added_to:
            own.setdefault((c.grads[array], c.lines.store_index(index[1:])), {})[int(population)] = target
    loops = {}  # the first cleared line of each loop -> the loop's lines; the other lines dropped
    dropped = set()
    for (gradient, rest), targets in sorted(own.items()):
        if sorted(targets) != list(range(len(targets))) or len(targets) < 2:
            continue
        zero = c.zero(sweep.destinations[targets[0]].dtype)
        population = c.names.population()
        lines = ["# cleared in a loop the compiler does not unroll (unrolled, their addresses stay live: spills)",
                 f"for {population} in range(wp.min({gradient}.shape[0], {len(targets)})):",
                 f"    {gradient}[{population}, {rest}] = {zero}"]
        loops[f"{targets[0]} = {zero}"] = lines
        dropped |= {f"{target} = {zero}" for target in targets.values()}
    out = []
    for line in writes:
        out += loops.get(line, []) if line in dropped else [line]
    return out


def _other_state(c: _Context) -> str | None:
    """The state's second array (``f_1``), where the program has exactly two differentiable arrays."""
    others = [p.name for p in c.program.params if p.differentiable and p.name != c.reference]
    return others[0] if len(others) == 1 and c.program.param(others[0]).annotation() == c.program.param(
        c.reference).annotation() else None


def _carry_lines(c: _Context, sweep: _Sweep) -> list | None:
    """``adjoint_fresh``'s writes for a step that updates ``f_0`` in place, or None where it has none.

    Such a step leaves the new state in ``f_1`` and ``f_0`` with the elements its boundary
    conditions overwrote. Its fresh variant reads the adjoints of those elements from the seed
    array, here the caller's *carry* (adjoint_prepare does not run), and writes into the same
    elements the adjoints of its reads of the input ``f_1``, which the accumulating variant writes
    into ``adj_f_1`` (the fresh variant leaves that array, its seeds, as it was). Exact where every
    read of ``f_1`` with an adjoint is at the element of the cell's own that the cell overwrites in
    ``f_0``, and has a non-zero adjoint (the guard analysis) only at boundary ids where the cell
    overwrites it: then the carry holds nothing outside the overwritten elements (and kept cells,
    see :func:`_kept_plan`), before and after, as a rollout needs. Every overwritten element is
    written: its read's adjoint, or zero."""
    other = _other_state(c)
    if list(c.accesses.in_place) != [c.reference] or other is None or c.guards.id_symbol is None:
        return None
    overwritten = {}  # element index -> (ids where the cell overwrites it, that condition printed)
    for array, index, condition in c.adjoint.prepared:
        ids = guards.condition_ids(condition, c.guards.id_symbol)
        if array != c.reference or ids is None:
            return None
        overwritten[c.lines.store_index(index)] = (ids, c.print(condition, "bool"))
    values, prefix = {}, f"{c.grads[other]}["
    for target, entry in sweep.destinations.items():
        if not entry.cleared or not entry.terms:
            continue
        index = target[len(prefix):-1] if target.startswith(prefix) else None
        if index not in overwritten:
            return None
        needs = [c.guards.needs.get(load) for load in entry.loads]
        if any(need is None or need.complement or not need.ids <= overwritten[index][0].ids for need in needs):
            return None
        values[index] = convert(" + ".join(entry.terms), c.program.compute_dtype, entry.dtype)
    seed, zero = c.names.seed(c.reference), c.zero(c.dtype(c.reference))
    order = sorted(overwritten, key=lambda index: (overwritten[index][1], population_order(f"{seed}[{index}]")))
    lines = []
    for index in order:
        lines += [f"if {overwritten[index][1]}:", f"    {seed}[{index}] = {values.get(index, zero)}"]
    return merge_ifs(lines)


def _slot_lines(c: _Context, slot_terms: dict) -> list:
    """Each slot written: the reads' adjoints where the read can matter, zero where none used it."""
    lines = []
    for slot, terms in sorted(slot_terms.items()):
        line = f"{_slot_element(c, slot, c.lines.thread)} = {' + '.join(terms)}"
        if slot not in c.slot_needs:
            lines.append(line)
        elif c.slot_needs[slot].ids:  # written (and gathered) only where the read can matter
            lines += [f"if {c.lines.id_condition(c.guards.id_symbol, c.slot_needs[slot])}:", f"    {line}"]
    written = {str(slot) for slot in slot_terms}
    zero = c.zero(c.program.compute_dtype)
    lines += [f"{_slot_element(c, slot, c.lines.thread)} = {zero}"
              for slot in range(len(c.accesses.slots)) if str(slot) not in written]
    return merge_ifs(lines)


def _slot_element(c: _Context, slot: int, cell: str) -> str:
    """Slot ``slot`` of the thread at ``cell``. Cell-major (the slot index last): a wall cell's
    slots share 32-byte sectors also on the planes across the fastest axis, where one cell per warp
    writes them and the gather reads them back (slot-major, each was a sector of its own)."""
    return f"{c.names.slots()}[{cell}, {slot}]"


def _kept_lines(c: _Context) -> tuple[list, list]:
    """A kept cell returns early, but still owns its slots and parameter cells: it writes zeros
    there, so the runtime never has to clear these scratch arrays."""
    zero = c.zero(c.program.compute_dtype)
    slots = [f"{_slot_element(c, slot, c.lines.thread)} = {zero}" for slot in range(len(c.accesses.slots))]
    parameters = [f"{c.names.parameter_cells(name)}[{c.lines.thread}] = {c.zero(c.dtype(name))}"
                  for name, _ in c.adjoint.parameters]
    return slots, parameters


def _listed_ids(c: _Context) -> tuple:
    """The boundary ids whose cells a split step runs in launches of their own: those whose
    condition keeps data in ``f_1`` (ZouHe, Regularized), and, in a step that has such ids, those
    whose condition reads a neighbourhood (:func:`_neighbourhood_ids`: extrapolation): the
    heaviest code of the step, at few cells, on planes that a list in grid order keeps coalesced;
    () where the step reads no such data, or keeps cells through an exit that is not XLB's
    (bc_mask 255)."""
    ids = _read_ids(c)
    if not ids or c.guards.id_symbol is None or (c.adjoint.keep is not None and _kept_id_load(c) is None):
        return ()
    return tuple(sorted(set(ids) | _neighbourhood_ids(c)))


def _neighbourhood_ids(c: _Context) -> set:
    """The ids whose condition alone loads more than twice as many state values as a cell streams
    in: XLB's ExtrapolationOutflowBC reads its neighbours' populations (126 loads in D3Q19), a
    bounce-back wall at most one per population (19). Left in the rest part, such code kept the
    registers of every cell: the extrapolation channel's rest adjoints spilled 72-96 bytes and its
    forward_rest 16 (ptxas, NOTES v56)."""
    loads = {name: c.guards.needs.get(name) for name, found in c.accesses.loads.items() if found.array == c.reference}
    streamed = sum(need is None for need in loads.values())
    alone = collections.Counter(min(need.ids) for need in loads.values()
                                if need is not None and not need.complement and len(need.ids) == 1)
    return {k for k, count in alone.items() if count > 2 * streamed}


@dataclass(frozen=True)
class IdFlag:
    """A split step's flag that the cell has the boundary id ``value``, constant False outside
    the parts whose cells may have it (``parts``), so that the compiler drops the code that id
    selects there."""

    name: str
    value: int
    parts: tuple


def _id_flags(c: _Context, forward: bool) -> list:
    """The flags of the boundary ids the cell program tests (a split step): the adjoint's of
    every id, the forward's of the listed ids only. The forward's listed part does not spill
    without the others, and its rest part kept them as registers across the body (forward_rest
    80 -> 86 registers on an H200, one block of 256 threads less per SM, 11 % slower: NOTES v51).
    The adjoint's parts of one listed id each (:func:`_split`) have the other listed ids False too."""
    listed = set(c.listed_ids)

    def parts(k: int) -> tuple:
        if forward:
            return ("", "listed", "grid")
        return ("", f"listed_{k}", f"grid_{k}") if k in listed else ("", "rest")

    return [IdFlag(c.names.id_flag(str(c.guards.id_symbol), k), k, parts(k))
            for k in sorted(_tested_ids(c)) if k in listed or not forward]


def _tested_ids(c: _Context) -> set:
    """The ids ``k`` of the tests ``id == k`` in the cell program and its stores, but those of
    the exit condition (every part has returned at those cells before the flags)."""
    exprs = [s.expr for s in c.program.statements if isinstance(s, Assign)]
    exprs += [e for store in c.program.stores for e in (store.value, store.when, store.keep) if e is not None]
    exits = [c.adjoint.keep] if c.adjoint.keep is not None else []
    return guards.tested_ids(exprs, c.guards.id_symbol) - guards.tested_ids(exits, c.guards.id_symbol)


def _flag_aliases(c: _Context, forward: bool) -> dict:
    """The tests of the cell's id, printed in the split bodies as their flags."""
    aliases = {}
    for flag in _id_flags(c, forward):
        for left, right in ((c.guards.id_symbol, sympy.Integer(flag.value)), (sympy.Integer(flag.value), c.guards.id_symbol)):
            aliases[sympy.Eq(left, right)] = flag.name
            aliases[sympy.Ne(left, right)] = f"(not {flag.name})"
    return aliases


@dataclass(frozen=True)
class Split:
    """How a step's kernels are split (:func:`_split`): the prologue, the lines after the exit
    (the parts' early returns, then the id flags: the adjoint's in ``skip``, the forward's in
    ``forward_skip``), the parts compiled (``("",)`` for one launch): the adjoint's ``parts``, the
    forward's ``forward_parts``."""

    prologue: list
    skip: list
    forward_skip: list
    parts: tuple
    forward_parts: tuple


def _split(c: _Context, cell: CellPlan) -> Split:
    """The prologue, the parts' early returns and the parts compiled, for a split step
    (:func:`_listed_ids`), else the cell plan's prologue alone. The rest part returns at the
    listed ids' cells, which the compiler can then leave out of its code: the step's registers
    are those of the other conditions. The forward runs those cells in one part over a list
    (``listed``: its thread is a position in the list) or over the grid (``grid``: returns at the
    others); the adjoint in one part per listed id (``listed_K``, ``grid_K``: each returns at the
    other ids, and its body has no code of theirs; with every listed id in one body, the obstacle
    channel's listed adjoints spilled 64-216 bytes, NOTES v56). The grid parts serve callers
    without a list (the JAX and PyTorch faces): the whole-grid kernels spill 300-500 bytes."""
    ids = c.listed_ids
    if not ids:
        return Split(cell.prologue, [], [], ("",), ("",))
    position, cells = c.names.listed_position(), c.names.listed_cells()
    # the cell plan's prologue starts with grid_lines: the thread index, then the grid sizes
    own, rest_of_prologue = cell.prologue[:1], cell.prologue[1:]
    listed = [f"{position} = wp.tid()"] + [f"{axis} = {cells}[{position}, {n}]" for n, axis in enumerate(c.lines.thread.split(", "))]
    prologue = static_if('part.startswith("listed")', listed, own) + rest_of_prologue
    id_symbol = c.guards.id_symbol
    condition = c.plain.id_condition(id_symbol, guards.Need(frozenset(ids)))
    rest = static_if('part == "rest"', [f"if {condition}:", "    return  # run by the listed parts"])
    forward_grid = static_if('part == "grid"', [f"if not ({condition}):", "    return  # run by the rest part"])
    skip = list(rest)
    for k in ids:
        test = c.plain.id_condition(id_symbol, guards.Need(frozenset({k})))
        skip += static_if(f'part in ("listed_{k}", "grid_{k}")', [f"if not ({test}):", "    return  # another part's cell"])
    adjoint_parts = ("", "rest") + tuple(f"{launch}_{k}" for launch in ("listed", "grid") for k in ids)
    return Split(prologue, skip + _flag_lines(c, forward=False), rest + forward_grid + _flag_lines(c, forward=True),
                 adjoint_parts, ("", "rest", "listed", "grid"))


def _flag_lines(c: _Context, forward: bool) -> list:
    """The definitions of the id flags (:func:`_id_flags`): the bodies test the ids through
    flags constant False in the parts that never have them, so that their compiler drops their
    code (it does not infer that from the early returns above them)."""
    lines = []
    for flag in _id_flags(c, forward):
        parts = ", ".join('"' + part + '"' for part in flag.parts)
        test = c.plain.id_condition(c.guards.id_symbol, guards.Need(frozenset({flag.value})))
        lines.append(f"{flag.name} = wp.static(part in ({parts})) and ({test})")
    return lines


def _adjoint_params(c: _Context) -> list:
    params = c.variant_params + [f"{c.grads[p.name]}: {p.annotation()}" for p in c.program.params if p.differentiable]
    params += c.seed_params
    params += [f"{c.names.parameter_cells(name)}: wp.array{len(c.program.thread)}d(dtype=wp.{c.dtype(name)})"
               for name, _ in c.adjoint.parameters]
    if c.accesses.slots:
        params.append(_slot_param(c))
    return params + _listed_param(c) + _residual_param(c)


def _listed_param(c: _Context) -> list:
    """A split step's cells to run (every variant takes them; the listed part reads them)."""
    return [f"{c.names.listed_cells()}: wp.array2d(dtype=wp.int32)"] if c.listed_ids else []


def _slot_param(c: _Context) -> str:
    return f"{c.names.slots()}: wp.array4d(dtype=wp.{c.program.compute_dtype})"


def _parameter_lines(c: _Context) -> list:
    """The per-cell adjoints of the scalar parameters that nothing depends on (zero). The others
    are stored in the sweep, right after their last update (:func:`_sweep`): kept to the end
    instead, the obstacle channel's adjoints with omega's spilled 40-104 bytes (NOTES v50)."""
    return [_parameter_store(c, name, None) for name, variable in c.adjoint.parameters if not variable]


def _collapsed_reads(reads: list) -> list:
    """The up-front reads, with one ``# adj of:`` comment per run of reads from one source line."""
    out = []
    for _, run in itertools.groupby(reads, key=lambda read: read[0].site):
        origins, lines = zip(*run)
        out += [f"# adj of: {describe_origins(list(origins))}", *lines]
    return out


def _adjoint_plan(parts: AdjointParts) -> AdjointPlan:
    """The adjoint body and its variants: ``adjoint`` (accumulating) and ``adjoint_fresh`` (where
    nothing is updated in place, or where the in-place updates can go through a carry, see
    :func:`_carry_lines`); where the program has scalar parameters also ``adjoint_state`` and
    ``adjoint_fresh_state``, the same without the parameters' per-cell adjoints. Those keep the
    replayed non-equilibrium parts (for BGK: what ``d/d omega`` needs) out of the registers: D3Q19
    FP32 ``adjoint_fresh`` needs 72 registers instead of 120.

    adjoint_fresh is for callers that know the gradients the adjoint would add to are zero and do
    not need the outputs' gradients cleared (a rollout's reverse sweep): 3 state arrays of traffic
    instead of 5. Only where every element of a gradient array has exactly one writer among the
    cells, its primary read (other reads go through slots, which adjoint_gather adds afterwards);
    where cells are kept (bc_mask 255), which only the caller knows, adjoint_kept completes it.
    Design fields' gradients are added to in every variant: a rollout sums them over its steps in
    the caller's array, which the fresh variants then update directly."""
    fresh, has_parameters = parts.fresh, parts.has_parameters
    variants = [AdjointVariant(adjoint_kernel_name(is_fresh, state_only, part), is_fresh, state_only, part)
                for part in parts.parts
                for state_only in (False, True)[: 1 + has_parameters] for is_fresh in (False, True)[: 1 + fresh]]
    # for callers with omega on the device only (a JAX trace), with omega's adjoints: the whole
    # grid, and a split's parts
    variants += [AdjointVariant(adjoint_kernel_name(is_fresh, False, part, True), is_fresh, False, part, True)
                 for part in parts.parts for is_fresh in (False, True)[: 1 + fresh]] * parts.arguments.generated
    # for callers that kept forward_residuals' values instead of the input (a recorded step)
    residuals = parts.residual_replay is not None
    variants += [AdjointVariant(adjoint_kernel_name(is_fresh, has_parameters, residuals=True), is_fresh, has_parameters,
                                residuals=True) for is_fresh in (False, True)[: 1 + fresh]] * residuals
    factory = ("name: str, fresh: bool, state_only: bool" + (', part: str = ""' if len(parts.parts) > 1 else "")
               + _device_parameter(parts.arguments) + (", with_residuals: bool = False" if residuals else ""))
    guard = (lambda flag, lines: static_if(flag, lines)) if has_parameters else (lambda flag, lines: lines)
    reads = _collapsed_reads(parts.write_back.reads)
    write_back = parts.write_back.writes
    fresh_writes = parts.write_back.fresh_writes
    if parts.carry is not None:  # the outputs' read adjoints go to the carry (see _carry_lines)
        outputs = set(parts.write_back.fresh_outputs)
        fresh_writes = [line for line in fresh_writes if line not in outputs]
        fresh_writes += ["# the carry: the adjoints of the elements of f_1 this cell read, where it overwrote f_0"]
        fresh_writes += parts.carry
    return AdjointPlan(
        params=parts.params,
        kept=parts.kept + guard("not state_only", parts.parameter_kept),
        seeds=parts.seeds,
        reads=(static_if("not fresh", reads) if fresh else reads) + _collapsed_reads(parts.write_back.field_reads),
        reads_late=parts.reads_late,
        replay=static_if("with_residuals", parts.residual_replay, parts.replay) if residuals else parts.replay,
        in_place_seeds=parts.in_place_seeds,
        groups=parts.sweep.groups,
        writes=(static_if("fresh", fresh_writes, write_back) if fresh else write_back) + parts.slot_lines,
        parameter_lines=guard("not state_only", parts.parameter_lines),
        variants=variants, prologue=parts.arguments.prologue + parts.prologue, skip=parts.skip, factory_params=factory,
        factory_lines=parts.arguments.factory_lines, comment=_ADJOINT_COMMENT + _RESIDUAL_COMMENT * residuals)


def _adjoint(c: _Context, cell: CellPlan, split: Split) -> tuple[AdjointPlan, int]:
    """The adjoint plan, and its count of updates per cell (for the header)."""
    seeds, in_place_seeds = _seed_lines(c)
    sweep = _sweep(c)
    write_back = _write_back(c, sweep)
    reads_late = pressure.reads_after_sweep(c.program, c.adjoint, len(write_back.reads) + len(write_back.field_reads))
    writes = _looped_clears(c, sweep, write_back.writes) if reads_late else write_back.writes
    slot_lines = _slot_lines(c, sweep.slot_terms)
    kept, parameter_kept = _kept_lines(c)
    carry = _carry_lines(c, sweep) if c.accesses.in_place else None
    plan = _adjoint_plan(AdjointParts(
        prologue=split.prologue, skip=split.skip, parts=split.parts,
        fresh=not c.accesses.in_place or carry is not None, carry=carry, has_parameters=bool(c.adjoint.parameters),
        params=_adjoint_params(c), kept=kept, parameter_kept=parameter_kept, seeds=seeds, in_place_seeds=in_place_seeds,
        replay=_replay_lines(c, cell), sweep=sweep, write_back=dataclasses.replace(write_back, writes=writes),
        slot_lines=slot_lines, reads_late=reads_late,
        parameter_lines=_parameter_lines(c), arguments=c.parameter_arguments,
        residual_replay=_residual_replay(c) if c.residuals else None))
    updates = sum(not line.startswith("if wp.static") for g in sweep.groups for line in g.lines)
    return plan, updates + len(write_back.writes) + len(slot_lines)


def _replay_lines(c: _Context, cell: CellPlan) -> list:
    """The adjoint's replay of the cell program: the forward's lines, with its divisions by the
    values the reverse sweep inverts written through the same reciprocals
    (:func:`adjointgen.compiler.reciprocals.in_replay`)."""
    if not c.adjoint.reciprocals:
        return cell.lines
    _, body_statements = split_prologue(c.program, c.adjoint.keep)
    return guarded_body(c.lines, reciprocals.in_replay(body_statements, c.adjoint.reciprocals), c.guards,
                        frozenset(c.listed_ids))


def _prepare_plan(c: _Context, cell: CellPlan) -> PreparePlan:
    """For arrays updated in place: move the gradient of each element the cell overwrote into the
    seed array and clear it (own elements only, so no races)."""
    if not c.accesses.in_place:
        return PreparePlan()
    params = c.forward_params + [f"{c.grads[a]}: {c.program.param(a).annotation()}" for a in c.accesses.in_place]
    body = c.plain.grid_lines(c.reference) + [c.plain.statement(s) for s in needed(
        c.program, [c.adjoint.keep] + [condition for _, _, condition in c.adjoint.prepared])]
    if cell.exit_condition:
        body += [f"if {cell.exit_condition}:", "    return  # a kept cell overwrote nothing"]
    for array, index, condition in c.adjoint.prepared:
        element, zero, grad = f"[{c.plain.store_index(index)}]", c.zero(c.dtype(array)), c.grads[array]
        moved = c.names.moved(f"{array}{element}")
        body.append(f"{moved} = {c.plain.print(condition, 'bool')}")
        body.append(f"{c.names.seed(array)}{element} = wp.where({moved}, {grad}{element}, {zero})")
        body.append(f"{grad}{element} = wp.where({moved}, {zero}, {grad}{element})")
    return PreparePlan(params + c.seed_params, body)


def _kept_id_load(c: _Context) -> Load | None:
    """The load of the cell's boundary id where the exit condition is ``bc_mask[0, own cell] ==
    255`` (XLB's kept cells), else None."""
    id_load = _load_of(c.program, c.guards.id_symbol)
    if (c.adjoint.keep is None or id_load is None or id_load.array != "bc_mask"
            or c.plain.store_index(id_load.index) != f"0, {c.plain.thread}"
            or c.plain.print(c.adjoint.keep, "bool") != f"{id_load.target} == wp.uint8(255)"):
        return None
    return id_load


def _kept_plan(c: _Context, fresh: bool, q: int) -> KeptPlan:
    """``adjoint_kept``: what a fresh adjoint leaves undone where cells are kept (bc_mask 255; the
    runtime launches it after adjoint_fresh, before adjoint_gather, on masks that may have such
    cells).

    A kept cell's step is the identity on its elements: it keeps its old output in ``f_1`` and
    overwrites nothing in ``f_0``. With the carry (the seed array) holding the adjoint of ``f_0``
    as the step left it, which is zero outside kept cells and overwritten elements: a kept cell's
    elements of ``adj_f_0`` get the carry added (and, where their reader, the cell whose primary
    read loads them, is kept too, only the carry: the fresh variant did not write them); elements
    of other cells whose reader is kept get zero; and at a kept cell the carry becomes the
    adjoint of its ``f_1``, which is the seeds' array there.

    Written from the kept cell's side: every other cell reads its own mask and returns, so the
    launch costs little where few cells are kept. A kept cell writes its own elements and those
    it would have read that belong to cells not kept; each element has one writer (its own cell
    where that is kept, else its reader), so there are no races, and a thread reads no other
    cell's carry."""
    id_load, other = _kept_id_load(c), _other_state(c)
    shifts = [c.accesses.primary.get((c.reference, p)) for p in range(q)]
    if not fresh or id_load is None or other is None or None in shifts:
        return KeptPlan()
    annotation = c.program.param(c.reference).annotation()
    grad, seeds, carry = c.grads[c.reference], c.grads[other], c.names.seed(c.reference)
    params = [f"{c.reference}: {annotation}", f"bc_mask: {c.program.param('bc_mask').annotation()}",
              f"{grad}: {annotation}", f"{seeds}: {annotation}", f"{carry}: {annotation}"]
    reads = [Access(c.reference, p, shift) for p, shift in enumerate(shifts)]
    readers = [Access(c.reference, p, tuple(-v for v in shift)) for p, shift in enumerate(shifts)]
    body = c.plain.grid_lines(c.reference) + [c.plain.statement(id_load), f"kept = {c.plain.print(c.adjoint.keep, 'bool')}",
                                              "if not kept:", "    return  # not kept: its elements that a kept cell read are that cell's to write"]
    body += c.plain.neighbour_definitions(reads + readers)
    flags: dict = {c.plain.thread: "kept"}  # cell coordinates -> the variable saying whether that cell is kept

    def kept_flag(cell: str) -> str:
        if cell not in flags:
            flags[cell] = c.names.reader_id("kept", cell)
            body.append(f"{flags[cell]} = bc_mask[0, {cell}] == wp.uint8(255)")
        return flags[cell]

    zero = c.zero(c.dtype(c.reference))
    updates = []
    for read, reader in zip(reads, readers):
        own = f"[{read.population}, {c.plain.thread}]"
        reader_cell = ", ".join(c.plain.axis_index(a, s) for a, s in enumerate(reader.shifts))
        if reader_cell == c.plain.thread:  # read by its own cell: written by nobody but the carry
            updates.append(f"{grad}{own} = {carry}{own}")
            continue
        updates.append(f"{grad}{own} = wp.where({kept_flag(reader_cell)}, {zero}, {grad}{own}) + {carry}{own}")
        source = ", ".join(c.plain.axis_index(a, s) for a, s in enumerate(read.shifts))
        updates += [f"if not {kept_flag(source)}:  # read by this kept cell only: the fresh variant skipped it",
                    f"    {grad}[{read.population}, {source}] = {zero}"]
    body += updates + [f"{carry}[{p}, {c.plain.thread}] = {seeds}[{p}, {c.plain.thread}]" for p in range(q)]
    return KeptPlan(params, body)


def _load_of(program: Program, symbol) -> Load | None:
    """The load statement that defines ``symbol`` (None if there is none)."""
    if symbol is None:
        return None
    return next((s for s in program.statements if isinstance(s, Load) and s.target == symbol), None)


def _gather_plan(c: _Context) -> GatherPlan:
    """Each thread adds to its own elements what the readers left in their slots; a slot written
    only at some boundary ids is gathered only where the reader's id is one of them. Where every
    slot is, the cells with anything to gather are few (next to walls), and a GPU runs the gather
    over a list of them (``adjoint_gather_listed``, the list from ``adjoint_gather_marks``, once
    per mask) instead of over every cell, most of which only test their neighbours' ids."""
    if not c.accesses.slots:
        return GatherPlan()
    id_symbol = c.guards.id_symbol
    id_load = _load_of(c.program, id_symbol)
    params = [f"{c.reference}: {c.program.param(c.reference).annotation()}", _slot_param(c)]
    params += [f"{id_load.array}: {c.program.param(id_load.array).annotation()}"] if id_load is not None else []
    params += [f"{c.grads[a]}: {c.program.param(a).annotation()}" for a in sorted({s.array for s in c.accesses.slots})]
    grid = c.plain.grid_lines(c.reference)  # the thread index first, then the grid sizes
    body = grid[1:] + c.plain.neighbour_definitions(c.accesses.slots, negate=True)
    gather, marks, mark = [], [], c.names.gather_mark()
    reader_ids: dict = {}  # reader coordinates -> the variable holding that cell's boundary id
    for slot, access in enumerate(c.accesses.slots):
        target = f"{c.grads[access.array]}[{access.population}, {c.plain.thread}]"
        reader = ", ".join(c.plain.axis_index(a, -s) for a, s in enumerate(access.shifts))
        value = convert(_slot_element(c, slot, reader), c.program.compute_dtype, c.dtype(access.array))
        if slot not in c.slot_needs:
            gather.append(f"{target} = {target} + {value}")
            marks = None  # gathered at every cell: nothing to list
        elif c.slot_needs[slot].ids:  # the reader's id says whether it wrote the slot
            if reader not in reader_ids:
                reader_ids[reader] = sympy.Symbol(c.names.reader_id(str(id_symbol), reader))
                c.plain.print.dtypes[reader_ids[reader].name] = c.program.dtypes[str(id_symbol)]
                body.append(f"{reader_ids[reader]} = {id_load.array}[{c.plain.store_index(id_load.index[:1])}, {reader}]")
            condition = c.plain.id_condition(reader_ids[reader], c.slot_needs[slot])
            gather += [f"if {condition}:", f"    {target} = {target} + {value}"]
            if marks is not None and f"if {condition}:" not in marks:
                marks += [f"if {condition}:", f"    {mark} = wp.int32(1)"]
    if not marks:  # one launch over the grid, as before
        return GatherPlan(params, grid[:1] + body + merge_ifs(gather), [GatherVariant("adjoint_gather", "")])
    position, cells = c.names.listed_position(), c.names.listed_cells()
    listed = [f"{position} = wp.tid()"] + [f"{axis} = {cells}[{position}, {n}]" for n, axis in enumerate(c.plain.thread.split(", "))]
    params += [f"{cells}: wp.array2d(dtype=wp.int32)",
               f"{c.names.gather_marks()}: wp.array{len(c.program.thread)}d(dtype=wp.int32)"]
    marks_body = [f"{mark} = wp.int32(0)"] + merge_ifs(marks) + [f"{c.names.gather_marks()}[{c.plain.thread}] = {mark}"]
    return GatherPlan(params, static_if('part == "listed"', listed, grid[:1]) + body
                      + static_if('part == "marks"', marks_body, merge_ifs(gather)),
                      [GatherVariant(name, argument) for name, argument in
                       (("adjoint_gather", ""), ("adjoint_gather_listed", ', "listed"'), ("adjoint_gather_marks", ', "marks"'))])


def _read_and_overwritten(program: Program, accesses: Accesses) -> set:
    """Output arrays whose old content the cell program reads (their values are gone after the
    forward, so a recorded step keeps a copy)."""
    stored = {s.array for s in program.stores}
    return {access.array for access in accesses.loads.values() if access.array in stored}


def _manifest(config: Configuration, c: _Context, identity: str, sources: list, kernels: list) -> Manifest:
    accesses = c.accesses
    return Manifest(
        configuration=config.label,
        program_sha256=identity,
        source_sha256={f.symbol: f.sha256 for f in sources},
        kernels=tuple(kernels),
        parameters=tuple(name for name, _ in c.adjoint.parameters),
        slot_count=len(accesses.slots),
        gather_into=tuple(sorted({s.array for s in accesses.slots})),
        in_place=tuple(accesses.in_place),
        overwritten_inputs=tuple(sorted(set(accesses.in_place) | _read_and_overwritten(c.program, accesses))),
        fields=c.program.field_names,
        field_components=tuple(spec.components for spec in c.program.fields)
        if any(spec.components > 1 for spec in c.program.fields) else (),
        f_1_read_ids=_read_ids(c),
        listed_ids=c.listed_ids,
        overwritten_ids=_overwritten_ids(c),
        residual_count=len(c.residuals.symbols) if c.residuals else 0,
    )


def _overwritten_ids(c: _Context) -> tuple:
    """The boundary ids at which the step overwrites elements of an array in place (the union of
    adjoint_prepare's conditions, where each is a test of the id); () where none or unknown."""
    if not c.adjoint.prepared or c.guards.id_symbol is None:
        return ()
    sets = [guards.condition_ids(condition, c.guards.id_symbol) for _, _, condition in c.adjoint.prepared]
    return () if None in sets else tuple(sorted(set().union(*(s.ids for s in sets))))


def _read_ids(c: _Context) -> tuple:
    """The boundary ids at which the step reads the state's second array (``f_1``), where every
    load of it is guarded (its value matters only at those ids: the guard analysis); () where it
    is not read or some load of it matters at every cell."""
    other = _other_state(c)
    loads = [name for name, found in c.accesses.loads.items() if found.array == other]
    needs = [c.guards.needs.get(name) for name in loads]
    if not loads or any(need is None or need.complement for need in needs):
        return ()
    return tuple(sorted(set().union(*(need.ids for need in needs))))


def plan_module(config: Configuration, program: Program, adjoint: Adjoint, accesses: Accesses,
                cell_guards: guards.CellGuards, names: Namer, sources: list, identity: str,
                residuals: Residuals | None = None) -> ModulePlan:
    """The plans of every kernel of the module, and its manifest (which lists exactly the kernels
    planned with a body); ``names`` is the module's namer, the one reverse mode used;
    ``residuals``: the residuals stage's result (None: no residual variants)."""
    c = _Context(program, adjoint, accesses, cell_guards, names, residuals)
    cell = _cell_plan(c)
    split = _split(c, cell)
    adjoint_plan, update_count = _adjoint(c, cell, split)
    q = config.q
    prepare, gather = _prepare_plan(c, cell), _gather_plan(c)
    kept = _kept_plan(c, any(variant.fresh for variant in adjoint_plan.variants), q)
    forward = _forward_plan(c, cell, q, split)
    kernels = ([variant.name for variant in forward.variants] + [variant.name for variant in adjoint_plan.variants]
               + ["adjoint_prepare"] * bool(prepare.body) + [variant.name for variant in gather.variants]
               + ["adjoint_kept"] * bool(kept.body))
    sources = sorted(sources, key=lambda f: f.symbol)
    return ModulePlan(config=config, identity=identity, sources=sources, proof=accesses.proof,
                      statement_count=len(program.statements), adjoint_update_count=update_count, cell=cell,
                      forward=forward, adjoint=adjoint_plan, prepare=prepare, gather=gather, kept=kept,
                      manifest=_manifest(config, c, identity, sources, kernels))
