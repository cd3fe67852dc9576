"""Register pressure of the adjoint body, estimated from the IR before anything is printed.

The accumulating adjoints add to the gradients of the elements a cell read (``old + adjoint``).
All those reads come before any write (one writer per element, see ``plan._write_back``), and
where in the body they go is a trade:

- up front, before the replay, their loads overlap the whole computation, but every value they
  bring stays live through the reverse sweep;
- after the sweep, just before the writes, they cost no register during it, and their loads
  still issue together.

Which one is faster depends on whether the sweep leaves room for them. Measured on an H200
(``benchmarks/NOTES.md`` v46; ptxas 13.5, sm_90): D3Q27 KBC's accumulating adjoints spilled
420-456 bytes with the reads up front and 64-72 after the sweep, and ran 13-14 % faster; D3Q19
BGK's, which do not spill either way, ran 7-10 % slower after the sweep (FP32 and FP64). The
estimate here is the most values the body keeps live at once (the seeds, the replayed cell
program and the sweep, in the order the template prints them); the reads move after the sweep
where that plus the reads exceeds what a thread's registers hold beside addresses and
temporaries.

The outputs' gradients these variants clear stay cleared at the end. Clearing them right after
their seeds removed KBC's last 64-72 bytes of spills, but made those adjoints twice as slow (v47).
"""

from __future__ import annotations

from collections.abc import Iterable

from adjointgen.compiler.ir import Assign, Load, Program
from adjointgen.compiler.reverse import Adjoint

# A thread's registers (the limit ptxas works to) and those it needs beside the values: indices,
# element addresses and temporaries. v46's calibration: KBC's fresh state-only adjoint (nothing
# read to add to) needs 251 registers for a peak of 204 live values.
REGISTERS = 255
OTHER_REGISTERS = 50


def peak_live(steps: Iterable[tuple[str | None, set]]) -> int:
    """The most values live at once in a straight-line sequence of (name defined or None, names
    read); a name is live from its definition to its last read."""
    live: set = set()
    peak = 0
    for target, reads in reversed(list(steps)):
        live.discard(target)
        live |= reads
        peak = max(peak, len(live))
    return peak


def adjoint_steps(program: Program, adjoint: Adjoint) -> list:
    """The adjoint body as (defined, read) pairs: the seeds (defined first), the replayed cell
    program, the reverse sweep's updates, and the write-back, which reads every scattered adjoint."""
    steps = [(seed.variable, set()) for seed in adjoint.seeds]
    steps += [(str(s.target), {str(u) for u in s.uses()}) for s in program.statements if isinstance(s, (Assign, Load))]
    steps += [(update.target, update.reads()) for group in adjoint.groups for update in group.updates]
    steps.append((None, {group.scatter[2] for group in adjoint.groups if group.scatter is not None}))
    return steps


def reads_after_sweep(program: Program, adjoint: Adjoint, read_count: int) -> bool:
    """Whether the accumulating variants read the gradients they add to after the reverse sweep
    (not up front): where the sweep's peak of live values and those reads would not fit."""
    return peak_live(adjoint_steps(program, adjoint)) + read_count > REGISTERS - OTHER_REGISTERS
