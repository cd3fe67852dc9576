"""Lines of Warp code from the per-cell program: statements, indices, neighbour coordinates,
guarded runs and ``wp.static`` blocks. The kernel plans (:mod:`adjointgen.compiler.plan`) are
built from these; nothing here decides which kernel a line belongs to.

Guarantees: every line is a complete Warp statement (an ``if`` header followed by its indented
block), printed by :class:`~adjointgen.compiler.printer.WarpPrinter` with typed constants; the
same statement always prints the same text.
"""

from __future__ import annotations

import sympy

from adjointgen.compiler import guards
from adjointgen.compiler.access import Accesses
from adjointgen.compiler.ir import Load, Program
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.printer import WarpPrinter


class Lines:
    """Prints the program's statements, indices and neighbour coordinates."""

    def __init__(self, program: Program, accesses: Accesses, names: Namer, aliases: dict | None = None):
        self.program = program
        self.accesses = accesses
        self.names = names
        self.print = WarpPrinter(program.dtypes, program.compute_dtype, aliases)
        self.sizes = tuple(names.axis_size(axis) for axis in range(len(program.thread)))

    def aliased(self, aliases: dict) -> "Lines":
        """Lines that print the name a kernel gave a subexpression in its place (``aliases``:
        sympy expression -> text), for code after the definitions of those names only."""
        return Lines(self.program, self.accesses, self.names, aliases)

    @property
    def thread(self) -> str:
        """The thread's own coordinates, ``i, j, k``."""
        return ", ".join(t.name for t in self.program.thread)

    def axis_index(self, axis: int, shift: int) -> str:
        """The name of the neighbour coordinate ``(x - shift) mod n`` (defined in the prologue)."""
        return self.names.neighbour(self.program.thread[axis].name, shift)

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

    def grid_lines(self, reference: str) -> list[str]:
        """The thread index and the grid sizes, read from the array ``reference``."""
        return [f"{self.thread} = wp.tid()"] + [f"{n} = {reference}.shape[{a + 1}]" for a, n in enumerate(self.sizes)]

    def index(self, symbol, array: str, index: tuple) -> str:
        access = self.accesses.loads.get(str(symbol)) if symbol is not None else None
        if access is not None:
            parts = [str(access.population)] + [self.axis_index(a, s) for a, s in enumerate(access.shifts)]
        else:
            parts = [self.print(e, "int32") for e in index]
        return f"{array}[{', '.join(parts)}]"

    def statement(self, statement, source: bool = False) -> str:
        """The statement as a line; ``source``: with the file and line it came from as a comment."""
        if isinstance(statement, Load):
            line = f"{statement.target} = {self.index(statement.target, statement.array, statement.index)}"
        else:
            line = f"{statement.target} = {self.print(statement.expr, self.program.dtypes[str(statement.target)])}"
        return f"{line}  # {statement.origin.site.split('  ')[0]}" if source else line

    def store_index(self, index) -> str:
        return ", ".join(self.print(e, "int32") for e in index)

    def store(self, store) -> list[str]:
        """A store (inside an ``if`` where it is conditional)."""
        line = f"{store.array}[{self.store_index(store.index)}] = {self.print(store.value, self.program.param(store.array).dtype)}"
        if store.when is None:
            return [line]
        return [f"if {self.print(store.when, 'bool')}:", f"    {line}"]

    def id_condition(self, id_symbol, need: guards.Need) -> str:
        """``need`` (a finite set of boundary ids) as a test of ``id_symbol``."""
        return self.print(sympy.Or(*[sympy.Eq(id_symbol, k) for k in sorted(need.ids)]), "bool")


def needed(program: Program, conditions) -> list:
    """The statements (in order) that the given conditions depend on."""
    wanted = {s.name for condition in conditions if condition is not None for s in condition.free_symbols}
    found = []
    for statement in reversed(program.statements):
        if str(statement.target) in wanted:
            found.append(statement)
            wanted |= {s.name for s in statement.uses()}
    found.reverse()
    return found


def split_prologue(program: Program, keep) -> tuple[list, list]:
    """Statements the exit condition needs (in order), and the rest."""
    prologue = needed(program, [keep])
    ids = {id(s) for s in prologue}
    return prologue, [s for s in program.statements if id(s) not in ids]


def convert(text: str, source: str, target: str) -> str:
    """``text`` (a value of type ``source``) as a ``target`` value: only mixed precision
    (FP64FP32: computed in float64, stored in float32) needs the conversion."""
    return text if source == target else f"wp.{target}({text})"


def population_order(target: str):
    """Sort key of a written element ``adj_x[p, ...]``: array name, then population number."""
    array, _, rest = target.partition("[")
    population = rest.split(",")[0]
    return (array, int(population) if population.isdigit() else -1, target)


def merge_ifs(lines: list[str]) -> list[str]:
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


def guarded_body(lines: Lines, statements: list, cell_guards: guards.CellGuards, listed: frozenset = frozenset()) -> list[str]:
    """The lines of the cell program's statements (the forward's, replayed by the adjoint), with
    boundary-only work inside ``if`` blocks on the cell's boundary id; each guarded variable gets
    a typed default first. A block needed only at ``listed`` ids (a split step's) is compiled only
    in the variants other than the rest part (``if wp.static(part != "rest")``): the rest part
    never runs at those ids, and the compiler does not prove that by itself.

    The first statement of each run from one source line carries that line's file and number as
    a comment."""
    out, run, run_guard = [], [], None
    id_symbol, needs = cell_guards.id_symbol, cell_guards.needs
    scheduled = guards.schedule(statements, needs, id_symbol)
    sourced = {id(s) for before, s in zip([None] + scheduled, scheduled) if before is None or before.origin.site != s.origin.site}

    def close():
        if run:
            out.extend(_guarded_run(lines, run, run_guard, id_symbol, sourced, listed))
            run.clear()

    for statement in scheduled:
        guard = needs.get(str(statement.target))
        if run and guard != run_guard:
            close()
        if guard is None:
            out.append(lines.statement(statement, id(statement) in sourced))
        else:
            run.append(statement)
            run_guard = guard
    close()
    return out


def _guarded_run(lines: Lines, run: list, guard: guards.Need, id_symbol, sourced: set, listed: frozenset) -> list[str]:
    """One run of statements with the same guard: typed defaults, then the ``if`` block."""
    ids = sorted(guard.ids)
    out = [f"# used only at cells with boundary id {', '.join(map(str, ids)) or '(none)'}"]
    for statement in run:
        dtype = lines.program.dtypes[str(statement.target)]
        out.append(f"{statement.target} = {'False' if dtype == 'bool' else lines.print.number(0, dtype)}")
    if ids:
        block = [f"if {lines.id_condition(id_symbol, guard)}:"]
        block += [f"    {lines.statement(statement, id(statement) in sourced)}" for statement in run]
        out += static_if('part != "rest"', block) if listed and set(ids) <= listed else block
    return out


def static_if(flag: str, lines: list, otherwise: list | None = None) -> list:
    """``lines`` compiled only where the variant flag expression ``flag`` holds (``otherwise`` else)."""
    if not lines and not otherwise:
        return []
    out = [f"if wp.static({flag}):"] + [f"    {line}" for line in lines or ["pass"]]
    if otherwise:
        out += ["else:"] + [f"    {line}" for line in otherwise]
    return out


def without_parameters(flagged: list, has_parameters: bool) -> list:
    """(line, parameter-only) pairs as lines; runs of parameter-only lines compiled only where
    the variant keeps parameter adjoints."""
    out, run = [], []
    for line, parameter_only in flagged + [(None, False)]:
        if parameter_only and has_parameters:
            run.append(line)
            continue
        if run:
            out += static_if("not state_only", run)
            run = []
        if line is not None:
            out.append(line)
    return out
