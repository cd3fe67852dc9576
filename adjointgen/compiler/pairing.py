"""Paired writes: a fresh adjoint without slots and without ``adjoint_gather``, where a mask pairs them.

A second read of a population (halfway bounce-back reading the cell's own pre-streaming value)
goes through a slot (:mod:`adjointgen.compiler.access`): the element it read, ``E = f[p, x]``, is
also the element that the population's primary read (the streaming pull) of another cell ``w =
x + shift`` read, and that cell writes E's gradient in a fresh adjoint. ``adjoint_gather`` adds
the slot afterwards: a second launch, and on the wall planes across the fastest axis one
scattered 32-byte sector per element (v32: 0.17 ms of the cavity's 0.71 ms).

Where XLB's masks mirror each other, only one of the two contributions is non-zero: a wall cell
x reflects population ``p`` only where its pull of ``opp(p)`` is missing, i.e. where the cell
``w`` it would have pulled from lies across the wall; and w, a wall or lid cell itself, misses
its pull of ``p`` from x there, so its primary read's adjoint is zero (select semantics). Paired
variants (``adjoint_fresh_paired``, ``adjoint_fresh_state_paired``) use this: for every slot, w
and x evaluate the same test,

    pair(w, p) = id(w) in skip  and  mask[p, w]  and  id(x) in readers(slot),

from the same array elements; where it holds x writes E (its slot's value), else w does (its
primary read's adjoint). So every element has exactly one writer by construction, whatever the
masks hold. What the test cannot know is whether the contribution left out is zero; each
thread checks that for the one it leaves out, and sets ``adj_pairing_error[0]`` where it is not.
A clear flag proves the result equal to the slot variant's, bit for bit (``0 + v`` is ``v``);
the runtime reads the flag and refuses a gradient computed with a set flag (see
:mod:`adjointgen.runtime.step`).

No pairing (``find`` returns None) where a slot's read is not at the reader's own cell, where a
slot is written at every id, where the program has no single boolean per-population mask, no
boundary id, arrays updated in place, design fields, or a split adjoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from adjointgen.compiler import guards
from adjointgen.compiler.access import Access, Accesses
from adjointgen.compiler.ir import Load, Program
from adjointgen.compiler.lines import Lines, convert, merge_ifs
from adjointgen.compiler.naming import Namer


@dataclass(frozen=True)
class PairedSlot:
    """A slot whose element the reader writes itself where the pair test holds."""

    slot: int
    array: str
    population: int
    primary: tuple  # the shift of the population's primary read: its writer is at reader + primary
    readers: guards.Need  # the ids at which a reader writes the slot


@dataclass(frozen=True)
class Pairing:
    """What the paired variants test: ``mask[p, w]`` and the boundary ids of ``w`` and ``x``."""

    mask: str  # the boolean per-population array (XLB's missing_mask)
    id_array: str  # the boundary id array (XLB's bc_mask) and the index of its one population
    id_population: str
    id_symbol: sympy.Symbol  # the cell's own id, as the program names it
    skip: guards.Need  # ids at which a cell may leave a primary write to the reader (every tested id)
    slots: tuple  # PairedSlot, in slot order

    def slot_of(self, access: Access) -> PairedSlot | None:
        """The paired slot whose element ``access`` (a primary read) reads; None if none."""
        return next((s for s in self.slots if (s.array, s.population, s.primary) ==
                     (access.array, access.population, access.shifts)), None)


def find(program: Program, accesses: Accesses, cell_guards: guards.CellGuards, slot_needs: dict,
         split: bool) -> Pairing | None:
    """The pairing of ``program``'s slots, or None where the paired variants cannot be built."""
    id_symbol = cell_guards.id_symbol
    masks = [p for p in program.params if p.dtype == "bool" and not p.differentiable]
    if (not accesses.slots or id_symbol is None or split or accesses.in_place or program.field_names
            or len(masks) != 1 or not masks[0].annotation().startswith(f"wp.array{len(program.thread) + 1}d")):
        return None
    id_load = next((s for s in program.statements if isinstance(s, Load) and s.target == id_symbol), None)
    if id_load is None:
        return None
    defined = {(a, s) for access in accesses.loads.values() for a, s in enumerate(access.shifts) if s}
    zero = (0,) * len(program.thread)
    if len(accesses.slots) > 31:  # one bit per slot in an int32 word (D3Q27: 26)
        return None
    slots = []
    for number, access in enumerate(accesses.slots):
        primary = accesses.primary[(access.array, access.population)]
        need = slot_needs.get(number)
        reaches = all((a, -s) in defined for a, s in enumerate(primary) if s)  # the writer's coordinates exist
        if access.shifts != zero or need is None or need.complement or not need.ids or not reaches:
            return None
        slots.append(PairedSlot(number, access.array, access.population, primary, need))
    skip = guards.Need(guards.tested_ids(program, id_symbol))  # every cell with a boundary condition
    if not skip.ids:
        return None
    return Pairing(masks[0].name, id_load.array, str(id_load.index[0]), id_symbol, skip, tuple(slots))


class PairedLines:
    """The paired variants' writes and the ``adjoint_pairs`` kernel, printed with the module's lines
    and names. ``adjoint_pairs`` evaluates the pair test once per mask, for both sides: bit ``s``
    of ``pairs[0, w]`` says that w leaves slot s's element to its reader, bit ``s`` of ``pairs[1,
    x]`` that x writes it; both bits come from the same test of the same elements, so every
    element has one writer. The adjoint then reads one word per side at boundary cells (instead
    of two neighbour elements per slot, which cost 32 registers where the compiler hoisted them)."""

    def __init__(self, pairing: Pairing, lines: Lines, names: Namer, flag: str, pairs: str):
        self.pairing, self.lines, self.names, self.flag, self.pairs = pairing, lines, names, flag, pairs

    def _id_at(self, role: str, cell: str) -> tuple[str, sympy.Symbol]:
        """A line reading the boundary id of the cell at ``cell``, and the variable it defines."""
        p = self.pairing
        name = self.names.paired_id(str(p.id_symbol), role, cell)
        self.lines.print.dtypes[name] = self.lines.program.dtypes[str(p.id_symbol)]
        return f"{name} = {p.id_array}[{p.id_population}, {cell}]", sympy.Symbol(name)

    def _readers(self) -> guards.Need:
        return guards.Need(frozenset().union(*(slot.readers.ids for slot in self.pairing.slots)))

    def pairs_body(self, grid: list) -> list[str]:
        """``adjoint_pairs``: each cell's two words of pair bits (``grid``: the thread index, the
        grid sizes and the neighbour coordinates)."""
        p, thread = self.pairing, self.lines.thread
        own, own_id = self._id_at("own", thread)
        writer, reader = [], []
        for slot in p.slots:
            x = ", ".join(self.lines.axis_index(a, s) for a, s in enumerate(slot.primary))
            w = ", ".join(self.lines.axis_index(a, -s) for a, s in enumerate(slot.primary))
            x_line, x_id = self._id_at("reader", x)
            w_line, w_id = self._id_at("writer", w)
            writer += [x_line, f"if {p.mask}[{slot.population}, {thread}] and ({self.lines.id_condition(x_id, slot.readers)}):",
                       f"    writes = writes | wp.int32({1 << slot.slot})"]
            reader += [f"if {self.lines.id_condition(own_id, slot.readers)}:", f"    {w_line}",
                       f"    if ({self.lines.id_condition(w_id, p.skip)}) and {p.mask}[{slot.population}, {w}]:",
                       f"        reads = reads | wp.int32({1 << slot.slot})"]
        writes, reads = self.names.pair_bits("writes"), self.names.pair_bits("reads")
        writer = [line.replace("writes = writes", f"{writes} = {writes}") for line in writer]
        reader = [line.replace("reads = reads", f"{reads} = {reads}") for line in reader]
        return (grid + [own, f"{writes} = wp.int32(0)  # bit s: this cell leaves slot s's element to its reader",
                        f"{reads} = wp.int32(0)  # bit s: this cell writes slot s's element (its own) itself",
                        f"if {self.lines.id_condition(own_id, p.skip)}:"] + [f"    {line}" for line in writer]
                + merge_ifs(reader) + [f"{self.pairs}[0, {thread}] = {writes}", f"{self.pairs}[1, {thread}] = {reads}"])

    def _bits(self, role: str, row: int, ids: guards.Need) -> list[str]:
        """The cell's word of pair bits for ``role``, read where its id is one of ``ids`` (0 elsewhere)."""
        bits = self.names.pair_bits(role)
        return [f"{bits} = wp.int32(0)", f"if {self.lines.id_condition(self.pairing.id_symbol, ids)}:",
                f"    {bits} = {self.pairs}[{row}, {self.lines.thread}]"]

    def writer(self, writes: list) -> list[str]:
        """The fresh writes ``(target, value, access of the primary read or None)``: a paired
        element is left to its reader where this cell's bit says so (its value checked zero).
        One conditional write per element, no branch around them all: the compiler keeps each
        value live only until its own write, as in the fresh variant."""
        bits = self.names.pair_bits("writes")
        out = self._bits("writes", 0, self.pairing.skip)
        for target, value, access in writes:
            slot = self.pairing.slot_of(access) if access is not None else None
            if slot is None:
                out.append(f"{target} = {value}")
                continue
            zero = self.lines.print.number(0, self.lines.program.param(slot.array).dtype)
            out += [f"if ({bits} & wp.int32({1 << slot.slot})) == wp.int32(0):", f"    {target} = {value}",
                    f"elif {value} != {zero}:", f"    {self.flag}[0] = 1  # not zero: the reader's write loses it"]
        return out

    def reader(self, slot_terms: dict, gradients: dict, compute: str) -> list[str]:
        """Each slot's element, written by its reader where its bit says so (its slot's value),
        else checked to be zero."""
        p, thread = self.pairing, self.lines.thread
        bits = self.names.pair_bits("reads")
        out = self._bits("reads", 1, self._readers())
        for slot in p.slots:
            dtype = self.lines.program.param(slot.array).dtype
            terms = slot_terms.get(slot.slot, [])
            value = convert(" + ".join(terms), compute, dtype) if terms else self.lines.print.number(0, dtype)
            out += [f"if ({bits} & wp.int32({1 << slot.slot})) != wp.int32(0):",
                    f"    {gradients[slot.array]}[{slot.population}, {thread}] = {value}"]
            if terms:
                out += [f"elif {' + '.join(terms)} != {self.lines.print.number(0, compute)}:",
                        f"    {self.flag}[0] = 1  # not zero: the writer's write loses it"]
        return out
