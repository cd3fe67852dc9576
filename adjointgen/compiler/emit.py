"""Emission: turn the program and its adjoint into lists of code lines, and render the template.

All decisions are made here; ``templates/module.py.j2`` only loops over the prepared lists.
The forward kernel and the adjoint kernel share one prologue: thread index, grid sizes, the
loads the early-exit condition needs, and the exit itself. The branchless program keeps the old
value of every output element where the exit condition holds; the emitter renders that uniform
select as an early ``return`` (the same semantics, without evaluating the cell), which is safe
here because this is our explicit adjoint, not Warp's automatic one.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
import sympy

from adjointgen import __version__
from adjointgen.locations import templates_dir
from adjointgen.manifest import Manifest, adjoint_kernel_name, body_sha256
from adjointgen.compiler import guards
from adjointgen.compiler import naming
from adjointgen.compiler.access import Accesses
from adjointgen.config import Configuration
from adjointgen.compiler.ir import Load, Program
from adjointgen.compiler.printer import WarpPrinter
from adjointgen.compiler.reverse import Adjoint


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


class _Lines:
    def __init__(self, program: Program, accesses: Accesses):
        self.program = program
        self.accesses = accesses
        self.print = WarpPrinter(program.dtypes, program.compute_dtype)
        self.sizes = naming.AXIS_SIZES[: len(program.thread)]

    def axis_index(self, axis: int, shift: int) -> str:
        """The name of the neighbour coordinate ``(x - shift) mod n`` (defined in the prologue)."""
        x = self.program.thread[axis].name
        if shift == 0:
            return x
        return f"{x}_m{shift}" if shift > 0 else f"{x}_p{-shift}"

    def neighbour_definitions(self, accesses=None, negate: bool = False) -> list[str]:
        """Definitions of the neighbour coordinates the given reads use (``negate``: the
        coordinates of the readers, for the gather kernel)."""
        accesses = self.accesses.loads.values() if accesses is None else accesses
        sign = -1 if negate else 1
        shifts = sorted({(a, sign * s) for access in accesses for a, s in enumerate(access.shifts) if s != 0})
        out = []
        for axis, shift in shifts:
            x, n = self.program.thread[axis].name, self.sizes[axis]
            if shift > 0:
                wrapped = f"wp.where({x} < {shift}, {x} + {n} - {shift}, {x} - {shift})"
            else:
                wrapped = f"wp.where({x} + {-shift} >= {n}, {x} + {-shift} - {n}, {x} + {-shift})"
            out.append(f"{self.axis_index(axis, shift)} = {wrapped}")
        return out

    def index(self, symbol, array: str, index: tuple) -> str:
        access = self.accesses.loads.get(str(symbol)) if symbol is not None else None
        if access is not None:
            parts = [str(access.population)] + [self.axis_index(a, s) for a, s in enumerate(access.shifts)]
        else:
            parts = [self.print(e, "int32") for e in index]
        return f"{array}[{', '.join(parts)}]"

    def statement(self, statement) -> str:
        if isinstance(statement, Load):
            return f"{statement.target} = {self.index(statement.target, statement.array, statement.index)}"
        return f"{statement.target} = {self.print(statement.expr, self.program.dtypes[str(statement.target)])}"

    def store_index(self, index) -> str:
        return ", ".join(self.print(e, "int32") for e in index)


def _population_order(target: str):
    """Sort key of a written element ``adj_x[p, ...]``: array name, then population number."""
    array, _, rest = target.partition("[")
    population = rest.split(",")[0]
    return (array, int(population) if population.isdigit() else -1, target)


def _needed(program: Program, conditions) -> list:
    """The statements (in order) that the given conditions depend on."""
    needed = {s.name for condition in conditions if condition is not None for s in condition.free_symbols}
    found = []
    for statement in reversed(program.statements):
        if str(statement.target) in needed:
            found.append(statement)
            needed |= {s.name for s in statement.uses()}
    found.reverse()
    return found


def _split_prologue(program: Program, keep) -> tuple[list, list]:
    """Statements the exit condition needs (in order), and the rest."""
    prologue = _needed(program, [keep])
    ids = {id(s) for s in prologue}
    return prologue, [s for s in program.statements if id(s) not in ids]


def _convert(text: str, source: str, target: str) -> str:
    """``text`` (a value of type ``source``) as a ``target`` value: only mixed precision
    (FP64FP32: computed in float64, stored in float32) needs the conversion."""
    return text if source == target else f"wp.{target}({text})"


def _id_condition(print_, id_symbol, need) -> str:
    """``need`` (a finite set of boundary ids) as a test of ``id_symbol``."""
    return print_(sympy.Or(*[sympy.Eq(id_symbol, k) for k in sorted(need.ids)]), "bool")


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


def _merge_ifs(lines: list[str]) -> list[str]:
    """Adjacent one-level ``if`` blocks with the same test, as one block."""
    out: list[str] = []
    header = None
    for line in lines:
        if line.startswith("if ") and line == header:
            continue
        if not line.startswith("    "):
            header = line if line.startswith("if ") else None
        out.append(line)
    return out


def _load_of(program: Program, symbol):
    """The load statement that defines ``symbol`` (None if there is none)."""
    return next((s for s in program.statements if isinstance(s, Load) and s.target == symbol), None) if symbol is not None else None


def _guarded_body(program: Program, lines: "_Lines", statements: list, id_symbol, needs: dict) -> list[str]:
    """The lines of the cell program's statements (the forward's, replayed by the adjoint), with
    boundary-only work inside ``if`` blocks on the cell's boundary id ``id_symbol``; ``needs`` is
    :func:`adjointgen.compiler.guards.analyse`'s result. Each guarded variable gets a typed default first."""
    print_ = lines.print
    out, run, run_guard = [], [], None

    def close():
        if not run:
            return
        ids = sorted(run_guard.ids)
        out.append(f"# used only at cells with boundary id {', '.join(map(str, ids)) or '(none)'}")
        for statement in run:
            dtype = program.dtypes[str(statement.target)]
            out.append(f"{statement.target} = {'False' if dtype == 'bool' else print_.number(0, dtype)}")
        if ids:
            out.append(f"if {_id_condition(print_, id_symbol, run_guard)}:")
            out.extend(f"    {lines.statement(statement)}" for statement in run)
        run.clear()

    for statement in guards.schedule(statements, needs, id_symbol):
        guard = needs.get(str(statement.target))
        if run and guard != run_guard:
            close()
        if guard is None:
            out.append(lines.statement(statement))
        else:
            run.append(statement)
            run_guard = guard
    close()
    return out


def _store_lines(print_, program: Program, lines: "_Lines", store) -> list[str]:
    line = f"{store.array}[{lines.store_index(store.index)}] = {print_(store.value, program.param(store.array).dtype)}"
    if store.when is None:
        return [line]
    return [f"if {print_(store.when, 'bool')}:", f"    {line}"]


def _read_and_overwritten(program: Program, accesses: Accesses) -> set:
    """Output arrays whose old content the cell program reads (their values are gone after the
    forward, so a recorded step keeps a copy)."""
    stored = {s.array for s in program.stores}
    return {access.array for access in accesses.loads.values() if access.array in stored}


_ADJOINT_COMMENT = (
    "One body, compiled per variant (wp.static flags; each variant its own module, compiled on first launch):",
    "fresh=False: overwritten outputs' gradients get 0 (plus what reads of their old content contributed),",
    "  the elements read get their adjoints added; fresh=True: for gradient arrays known to be zero where",
    "  written and outputs' gradients not needed, the elements read get their adjoints written, nothing",
    "  is cleared; state_only=True: without the per-cell adjoints of the scalar parameters (fewer registers).",
)


@dataclass(frozen=True)
class AdjointVariant:
    """One compiled variant of the adjoint body; its name comes from manifest.adjoint_kernel_name."""

    name: str
    fresh: bool
    state_only: bool


@dataclass(frozen=True)
class AdjointPlan:
    """The module's one adjoint body, as the template prints it, and the variants compiled from it."""

    params: list
    kept: list  # a kept cell's writes before its early return
    reads: list  # gradients read up front (not fresh)
    groups: list  # {"origin", "lines"}: the reverse sweep
    writes: list
    parameter_lines: list  # per-cell adjoints of scalar parameters (not state_only)
    variants: list
    comment: tuple = _ADJOINT_COMMENT


def _static_if(flag: str, lines: list, otherwise: list | None = None) -> list:
    """``lines`` compiled only where the variant flag expression ``flag`` holds (``otherwise`` else)."""
    if not lines and not otherwise:
        return []
    out = [f"if wp.static({flag}):"] + [f"    {line}" for line in lines or ["pass"]]
    if otherwise:
        out += ["else:"] + [f"    {line}" for line in otherwise]
    return out


def _without_parameters(flagged: list, has_parameters: bool) -> list:
    """(line, parameter-only) pairs as lines; runs of parameter-only lines compiled only where
    the variant keeps parameter adjoints."""
    out, run = [], []
    for line, parameter_only in flagged + [(None, False)]:
        if parameter_only and has_parameters:
            run.append(line)
            continue
        if run:
            out += _static_if("not state_only", run)
            run = []
        if line is not None:
            out.append(line)
    return out


def _collapsed_reads(reads: list) -> list:
    """The up-front reads, with one ``# adj of:`` comment per run of reads of the same origin."""
    out, origin = [], None
    for read in reads:
        if read["origin"] != origin:
            origin = read["origin"]
            out.append(f"# adj of: {origin}")
        out.append(read["line"])
    return out


def _adjoint_plan(fresh: bool, has_parameters: bool, params: list, kept: list, parameter_kept: list, reads: list,
                  write_back: list, fresh_writes: list, slot_lines: list, groups: list, parameter_lines: list) -> AdjointPlan:
    """The adjoint body and its variants: ``adjoint`` (accumulating) and, where nothing is updated
    in place, ``adjoint_fresh``; where the program has scalar parameters also ``adjoint_state`` and
    ``adjoint_fresh_state``, the same without the parameters' per-cell adjoints. Those keep the
    replayed non-equilibrium parts (for BGK: what ``d/d omega`` needs) out of the registers: D3Q19
    FP32 ``adjoint_fresh`` needs 72 registers instead of 120."""
    variants = [AdjointVariant(adjoint_kernel_name(is_fresh, state_only), is_fresh, state_only)
                for state_only in (False, True)[: 1 + has_parameters] for is_fresh in (False, True)[: 1 + fresh]]
    guard = (lambda flag, lines: _static_if(flag, lines)) if has_parameters else (lambda flag, lines: lines)
    return AdjointPlan(
        params=params,
        kept=kept + guard("not state_only", parameter_kept),
        reads=_static_if("not fresh", _collapsed_reads(reads)) if fresh else _collapsed_reads(reads),
        groups=groups,
        writes=(_static_if("fresh", fresh_writes, write_back) if fresh else write_back) + slot_lines,
        parameter_lines=guard("not state_only", parameter_lines),
        variants=variants)


def render_module(config: Configuration, program: Program, adjoint: Adjoint, accesses: Accesses,
                  cell_guards: guards.CellGuards, sources: list, identity: str) -> str:
    lines = _Lines(program, accesses)
    print_ = lines.print
    prologue_statements, body_statements = _split_prologue(program, adjoint.keep)
    reference = next(p.name for p in program.params if p.differentiable)
    prologue = [f"{', '.join(t.name for t in program.thread)} = wp.tid()"]
    prologue += [f"{n} = {reference}.shape[{a + 1}]" for a, n in enumerate(lines.sizes)]
    prologue += lines.neighbour_definitions()
    prologue += [lines.statement(s) for s in prologue_statements]
    exit_condition = print_(adjoint.keep, "bool") if adjoint.keep is not None else None

    id_symbol, needs = cell_guards.id_symbol, cell_guards.needs  # boundary ids at which each value matters
    cell_lines = _guarded_body(program, lines, body_statements, id_symbol, needs)  # forward and replay
    forward_body = cell_lines + [line for store in program.stores for line in _store_lines(print_, program, lines, store)]

    grads = {p.name: naming.grad_param(p.name) for p in program.params if p.differentiable}
    seeds, in_place_seeds = [], []
    for seed in adjoint.seeds:
        source = naming.seed_array(seed.array) if seed.in_place else grads[seed.array]
        read = f"{source}[{lines.store_index(seed.index)}]"
        dtype = program.param(seed.array).dtype
        if seed.condition is not None:
            read = f"wp.where({print_(seed.condition, 'bool')}, {read}, {print_.number(0, dtype)})"
        read = _convert(read, dtype, program.compute_dtype)  # adjoints live in the compute precision
        line = f"{seed.variable} = {seed.variable} + {read}" if seed.accumulate else f"{seed.variable} = {read}"
        (in_place_seeds if seed.in_place else seeds).append(line)
    zero = print_.number(0, program.param(program.stores[0].array).dtype) if program.stores else "0"
    # Write-back: every element the adjoint writes has exactly one writer (the access proof), so
    # all reads of gradient arrays can come before any write. Emitting them that way lets the
    # compiler issue them together; interleaved read-modify-writes would each wait a full
    # memory round trip, since it cannot prove the addresses distinct.
    destinations: dict = {}  # written element -> {"cleared", "terms", "origin"}
    for array, index in adjoint.clears:
        destinations[f"{grads[array]}[{lines.store_index(index)}]"] = {"cleared": True, "terms": [], "origin": None,
                                                                       "dtype": program.param(array).dtype}
    slot_terms: dict = {}  # slot -> adjoints of the reads that use it (one element read through two index expressions shares it)
    groups = []
    parameter_adjoints = {variable for _, variable in adjoint.parameters if variable}
    for group in adjoint.groups:
        body = []  # (line, whether it updates a parameter's adjoint)
        for update in group.updates:
            if update.first:
                line = f"{update.target} = {print_(update.expr, program.compute_dtype)}"
            elif update.expr.could_extract_minus_sign():
                line = f"{update.target} = {update.target} - {print_.atom(-update.expr, program.compute_dtype)}"
            else:
                line = f"{update.target} = {update.target} + {print_(update.expr, program.compute_dtype)}"
            body.append((line, update.target in parameter_adjoints))
        if group.scatter is not None:
            array, index, name, symbol = group.scatter
            slot = accesses.slot_of(accesses.loads[symbol])
            if slot is None:  # the primary read of this population: scattered straight back
                target = lines.index(symbol, grads[array], index)
                entry = destinations.setdefault(target, {"cleared": False, "terms": [], "origin": group.origin,
                                                         "dtype": program.param(array).dtype})
                entry["terms"].append(name)
                entry["origin"] = entry["origin"] or group.origin
            else:  # another read of it: the reader's own slot, gathered in adjoint_gather
                slot_terms.setdefault(slot, []).append(name)
            continue
        repeated = bool(groups) and groups[-1]["source"] == group.origin  # one comment per run of groups
        groups.append({"source": group.origin, "origin": None if repeated else group.origin,
                       "lines": _without_parameters(body, bool(adjoint.parameters))})
    write_back_reads, write_back_writes, fresh_writes = [], [], []
    for target, entry in sorted(destinations.items(), key=lambda item: _population_order(item[0])):
        # the terms are adjoints (compute precision); the element is in the array's precision
        added = _convert(" + ".join(entry["terms"]), program.compute_dtype, entry["dtype"]) if entry["terms"] else None
        if added is not None or not entry["cleared"]:
            fresh_writes.append(f"{target} = {added or zero}")
        if not entry["cleared"]:
            old = f"old_{len(write_back_reads)}"
            write_back_reads.append({"origin": entry["origin"], "line": f"{old} = {target}"})
            added = f"{old} + {added}" if added else old
        write_back_writes.append(f"{target} = {added or zero}")
    # adjoint_fresh: for callers that know the gradients the adjoint would add to are zero and do
    # not need the outputs' gradients cleared (a rollout's reverse sweep of a step that writes
    # every cell and keeps no data in place): 3 state arrays of traffic instead of 5. Only where
    # every element of a gradient array has exactly one writer among the cells, its primary read
    # (nothing in place; other reads go through slots, which adjoint_gather adds afterwards);
    # kept cells (bc_mask 255) must also be absent, which only the caller can know.
    fresh = not accesses.in_place
    thread = ", ".join(t.name for t in program.thread)
    slot_needs = _slot_needs(accesses, needs)
    slot_lines = []
    for slot, terms in sorted(slot_terms.items()):
        line = f"{naming.SLOTS}[{slot}, {thread}] = {' + '.join(terms)}"
        if slot not in slot_needs:
            slot_lines.append(line)
        elif slot_needs[slot].ids:  # written (and gathered) only where the read can matter
            slot_lines += [f"if {_id_condition(print_, id_symbol, slot_needs[slot])}:", f"    {line}"]
    written_slots = {str(slot) for slot in slot_terms}
    compute_zero = print_.number(0, program.compute_dtype)
    slot_lines += [f"{naming.SLOTS}[{slot}, {thread}] = {compute_zero}"
                   for slot in range(len(accesses.slots)) if str(slot) not in written_slots]
    slot_lines = _merge_ifs(slot_lines)
    # a kept cell returns early, but still owns its slots and parameter cells: it writes zeros
    # there, so the runtime never has to clear these scratch arrays
    kept_lines = [f"{naming.SLOTS}[{slot}, {thread}] = {compute_zero}" for slot in range(len(accesses.slots))]
    parameter_kept_lines = [f"{naming.parameter_cells(name)}[{thread}] = {print_.number(0, program.param(name).dtype)}"
                            for name, _ in adjoint.parameters]
    forward_params = [f"{p.name}: {p.annotation()}" for p in program.params]
    adjoint_params = forward_params + [f"{grads[p.name]}: {p.annotation()}" for p in program.params if p.differentiable]
    seed_params = [f"{naming.seed_array(a)}: {program.param(a).annotation()}" for a in accesses.in_place]
    adjoint_params += seed_params
    # adjoint_prepare: for arrays updated in place, move the gradient of each element the cell
    # overwrote into the seed array and clear it (own elements only, so no races)
    prepare_params, prepare_body = [], []
    if accesses.in_place:
        prepare_params = forward_params + [f"{grads[a]}: {program.param(a).annotation()}" for a in accesses.in_place] + seed_params
        prepare_body = prologue[: 1 + len(lines.sizes)] + [lines.statement(s) for s in _needed(
            program, [adjoint.keep] + [condition for _, _, condition in adjoint.prepared])]
        if exit_condition:
            prepare_body += [f"if {exit_condition}:", "    return  # a kept cell overwrote nothing"]
        for number, (array, index, condition) in enumerate(adjoint.prepared):
            element = f"[{lines.store_index(index)}]"
            zero_value = print_.number(0, program.param(array).dtype)
            moved = f"moved_{number}"
            prepare_body.append(f"{moved} = {print_(condition, 'bool')}")
            prepare_body.append(f"{naming.seed_array(array)}{element} = wp.where({moved}, {grads[array]}{element}, {zero_value})")
            prepare_body.append(f"{grads[array]}{element} = wp.where({moved}, {zero_value}, {grads[array]}{element})")
    parameter_lines = []
    for name, adjoint_variable in adjoint.parameters:
        cells = naming.parameter_cells(name)
        adjoint_params.append(f"{cells}: wp.array{len(program.thread)}d(dtype=wp.{program.param(name).dtype})")
        value = adjoint_variable or print_.number(0, program.param(name).dtype)
        parameter_lines.append(f"{cells}[{', '.join(t.name for t in program.thread)}] = {value}")
    gather_params, gather_body = [], []
    if accesses.slots:
        slot_param = f"{naming.SLOTS}: wp.array4d(dtype=wp.{program.compute_dtype})"
        adjoint_params.append(slot_param)
        reference_param = program.param(reference)
        id_param = program.param(id_symbol_load.array) if (id_symbol_load := _load_of(program, id_symbol)) else None
        gather_params = [f"{reference}: {reference_param.annotation()}", slot_param]
        gather_params += [f"{id_param.name}: {id_param.annotation()}"] if id_param is not None else []
        gather_params += [f"{grads[a]}: {program.param(a).annotation()}" for a in sorted({s.array for s in accesses.slots})]
        gather_body = [f"{', '.join(t.name for t in program.thread)} = wp.tid()"]
        gather_body += [f"{n} = {reference}.shape[{a + 1}]" for a, n in enumerate(lines.sizes)]
        gather_body += lines.neighbour_definitions(accesses.slots, negate=True)
        reader_ids: dict = {}  # reader coordinates -> the variable holding that cell's boundary id
        for slot, access in enumerate(accesses.slots):
            target = f"{grads[access.array]}[{access.population}, {', '.join(t.name for t in program.thread)}]"
            reader = ", ".join(lines.axis_index(a, -s) for a, s in enumerate(access.shifts))
            slot_value = _convert(f"{naming.SLOTS}[{slot}, {reader}]", program.compute_dtype, program.param(access.array).dtype)
            if slot not in slot_needs:
                gather_body.append(f"{target} = {target} + {slot_value}")
            elif slot_needs[slot].ids:  # the reader's id says whether it wrote the slot
                if reader not in reader_ids:
                    reader_ids[reader] = sympy.Symbol(f"{id_symbol}_reader_{len(reader_ids)}")
                    print_.dtypes[reader_ids[reader].name] = program.dtypes[str(id_symbol)]
                    gather_body.append(f"{reader_ids[reader]} = {id_symbol_load.array}"
                                       f"[{lines.store_index(id_symbol_load.index[:1])}, {reader}]")
                reader_id = reader_ids[reader]
                gather_body += [f"if {_id_condition(print_, reader_id, slot_needs[slot])}:", f"    {target} = {target} + {slot_value}"]
    gather_body = _merge_ifs(gather_body)
    adjoint_body = _adjoint_plan(fresh, bool(adjoint.parameters), adjoint_params, kept_lines, parameter_kept_lines,
                                 write_back_reads, write_back_writes, fresh_writes, slot_lines, groups, parameter_lines)
    manifest = Manifest(
        configuration=config.label,
        program_sha256=identity,
        source_sha256={f.symbol: f.sha256 for f in sorted(sources, key=lambda f: f.symbol)},
        kernels=tuple(["forward"] + [variant.name for variant in adjoint_body.variants] + ["adjoint_prepare"] * bool(prepare_body)
                      + ["adjoint_gather"] * bool(gather_body)),
        parameters=tuple(name for name, _ in adjoint.parameters),
        slot_count=len(accesses.slots),
        gather_into=tuple(sorted({s.array for s in accesses.slots})),
        in_place=tuple(accesses.in_place),
        overwritten_inputs=tuple(sorted(set(accesses.in_place) | _read_and_overwritten(program, accesses))),
    )
    sources_info = [
        {"symbol": f.symbol, "path": f"{naming.relative_source_path(f.filename)}:{f.first_line}", "sha": f.sha256}
        for f in sorted(sources, key=lambda f: f.symbol)
    ]
    from adjointgen.xlb.support import xlb_version

    context = {
        "version": __version__,
        "xlb_version": xlb_version(),
        "config": config,
        "sources": sources_info,
        "identity": identity,
        "proof": accesses.proof,
        "forward_params": forward_params,
        "prologue": prologue,
        "exit_condition": exit_condition,
        "forward_body": forward_body,
        "replay": cell_lines,
        "seeds": seeds,
        "in_place_seeds": in_place_seeds,
        "prepare_params": prepare_params,
        "prepare_body": prepare_body,
        "adjoint": adjoint_body,
        "manifest": manifest.to_source(),
        "gather_params": gather_params,
        "gather_body": gather_body,
        "statement_count": len(program.statements),
        "adjoint_update_count": sum(not line.startswith("if wp.static") for g in groups for line in g["lines"])
        + len(write_back_writes) + len(slot_lines),
    }
    environment = _environment()
    body = environment.get_template("module_body.py.j2").render(context)
    header = environment.get_template("module_header.py.j2").render(context, body_sha256=body_sha256(body))
    return header + body

