"""Rollout plans: how many states a checkpointed rollout stores, and what that costs, before it runs.

:func:`plan_rollout` turns a memory budget (``"20GB"``, bytes, or ``"auto"``: the device's free
memory) into a :class:`RolloutPlan`: the number of stored states, the bytes they and the
rollout's fixed arrays take, the forward steps the schedule will run, and from measured step
times the expected seconds. :func:`storage` says what one stored state holds; the rollout itself
uses it, so plan and rollout cannot disagree. Two kinds of plan:

- binomial (Griewank and Walther's optimum for that memory, when a stored state is the adjoint's
  input: ``r T - C(s + r, r - 1)`` forward steps, plus the final step, whose result is the
  rollout's output);
- segments (where they fit: about ``2 sqrt(T S R)`` bytes for states of S and residuals of R
  bytes, else the binomial plan), for rollouts whose caller wants no gradient of a scalar parameter
  (``scalar_gradients=False``) on a module with residuals (``manifest.residuals``, a few values
  per cell that the state-only adjoint reads instead of the step's input,
  :mod:`adjointgen.compiler.residuals`): the forward sweep stores the state at the start of each
  of K segments but the last, whose residuals it keeps; the reverse sweep recomputes each
  earlier segment once from its state, keeping the residuals of its steps, and reverses it from
  them. The last segment is the longest the memory holds (L steps: the residual block), the
  earlier ones split the rest evenly: ``2 T - L - (K - 1)`` forward steps (the last step of a
  recomputed segment is reversed from the state the pair holds), against ``~r T`` for the
  binomial plan: a step's residuals (D3Q19 BGK: 4 values per cell) cost 4/19 of a state, so far
  more steps fit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from math import comb

import numpy as np
import warp as wp

from adjointgen.errors import RuntimeArgumentError

# memory a rollout must leave to others (the kernels' own scratch, the allocator's slack)
AUTO_FRACTION = 0.9
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def format_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def has_kept_cells(bc_mask) -> bool:
    """True when some cell is solid (``bc_mask == 255``: the step keeps its old content)."""
    return bool((bc_mask.numpy() == 255).any())


def f_1_cells(manifest, bc_mask):
    """The cells (flat indices, ascending) at which a stored state needs its ``f_1``: those where
    the step reads it (boundary ids ``manifest.f_1_read_ids``) and kept ones (bc_mask 255: the step
    keeps its old output there); everywhere else the next step overwrites ``f_1`` before anything
    reads it. None where a read of ``f_1`` is not limited to some ids (then all of it)."""
    if manifest.reads_f_1 and not manifest.f_1_read_ids:
        return None
    return cells_with_ids(bc_mask, (*manifest.f_1_read_ids, 255))


def cells_with_ids(bc_mask, ids) -> np.ndarray:
    """The flat indices (ascending, int32) of the cells of ``bc_mask`` whose boundary id is in ``ids``."""
    return np.flatnonzero(np.isin(bc_mask.numpy()[0].reshape(-1), ids)).astype(np.int32)


@dataclass(frozen=True)
class Storage:
    """What a rollout of one step on one mask keeps of a state."""

    reads_f_1: bool  # the adjoint reads the step's input f_1 (boundary data kept there)
    kept_cells: bool  # solid cells keep their old output in f_1
    in_place: bool  # the step updates f_0 in place
    f_1_fraction: float | None = None  # the share of cells at which a snapshot keeps f_1 (None: all)

    @property
    def snapshot_arrays(self) -> int:
        """Arrays per stored state: f_1 too only when a step reads it (else the next step overwrites
        every cell of f_1 before anything reads it)."""
        return 2 if self.reads_f_1 or self.kept_cells else 1

    def snapshot_bytes(self, array_bytes: int) -> int:
        """Bytes of one stored state: f_0, and f_1 (or only its cells that matter, :func:`f_1_cells`)."""
        if self.snapshot_arrays == 1:
            return array_bytes
        return array_bytes + (array_bytes if self.f_1_fraction is None else int(round(array_bytes * self.f_1_fraction)))

    @property
    def input_arrays(self) -> int:
        """Arrays per kept step input (what the adjoint reads)."""
        return 2 if self.reads_f_1 else 1

    @property
    def carry_arrays(self) -> int:
        """The carry of a fresh reverse sweep (or the accumulating adjoint's seed array): where the
        step updates f_0 in place or cells are kept."""
        return 1 if self.in_place or self.kept_cells else 0

    @property
    def step_from_stored(self) -> bool:
        """A step may run straight from a stored state, which it then only reads."""
        return self.snapshot_arrays == 1 and not self.in_place


def reverses_fresh(manifest, stored: Storage) -> bool:
    """Whether a rollout's reverse sweep runs ``adjoint_fresh`` (given a cotangent on the final
    ``f_0`` only): where the module has it, and, where cells are kept, ``adjoint_kept``; a step
    that keeps data in ``f_1`` without updating ``f_0`` in place has none that a sweep can chain."""
    return (manifest.has("adjoint_fresh") and (stored.in_place or not stored.reads_f_1)
            and (not stored.kept_cells or manifest.has("adjoint_kept")))


def storage(step, bc_mask) -> Storage:
    cells = f_1_cells(step.manifest, bc_mask)
    fraction = None if cells is None else len(cells) / (bc_mask.size // bc_mask.shape[0])
    return Storage(step.manifest.reads_f_1, has_kept_cells(bc_mask), bool(step.manifest.in_place), fraction)


def binomial_forward_steps(steps: int, snapshots: int) -> int:
    """Forward steps of a binomial reversal of ``steps`` steps with ``snapshots`` stored states
    (every step input kept when ``snapshots >= steps``), the final step included."""
    if snapshots >= steps:
        return steps
    repetitions = 1
    while comb(snapshots + repetitions, snapshots) < steps:
        repetitions += 1
    return repetitions * steps - comb(snapshots + repetitions, repetitions - 1) + 1


@dataclass(frozen=True)
class StepTimes:
    """Measured seconds per step of the kernels a plan runs (the residual ones for segment plans)."""

    forward: float
    adjoint: float
    forward_residuals: float = float("nan")
    adjoint_residuals: float = float("nan")


@dataclass(frozen=True)
class RolloutPlan:
    """A checkpointed rollout's plan; ``snapshots >= steps`` keeps every step's input (binomial
    plans); ``segment > 0``: a segment plan (see the module docstring)."""

    steps: int
    snapshots: int
    array_bytes: int  # one population array
    snapshot_bytes: int  # one stored state (or kept step input, when every input is kept)
    fixed_bytes: int  # work pair, final pair, adjoint pair, one step's kept input
    forward_steps: int
    storage: Storage  # what a stored state holds (the rollout follows it)
    segment: int = 0  # steps of the last segment, the longest (the residual block); 0: a binomial plan
    residual_bytes: int = 0  # one step's residuals (segment plans)

    @property
    def stores_every_input(self) -> bool:
        return not self.segment and self.snapshots >= self.steps

    @property
    def segments(self) -> int:
        """Segments of a segment plan (a stored state at the start of each but the last)."""
        return self.snapshots + 1 if self.segment else 0

    def segment_starts(self) -> list[int]:
        """The first step of each segment: the steps before the last segment split as evenly as
        possible among the others (each at most ``segment`` long)."""
        earlier, count = self.steps - self.segment, self.segments - 1
        lengths = [earlier // count + (index < earlier % count) for index in range(count)] if count else []
        return [sum(lengths[:index]) for index in range(count)] + [earlier]

    @property
    def memory_bytes(self) -> int:
        if self.segment:
            return self.fixed_bytes + self.snapshots * self.snapshot_bytes + self.segment * self.residual_bytes
        return self.fixed_bytes + min(self.snapshots, self.steps) * self.snapshot_bytes

    @property
    def residual_steps(self) -> int:
        """Steps reversed from residuals (the others from the state the pair holds): every step but
        the last of each recomputed segment."""
        return self.steps - (self.segments - 1) if self.segment else 0

    def expected_seconds(self, times: StepTimes) -> float:
        """The plan's time from measured step times: its forward steps (those that keep residuals
        at ``forward_residuals``) and one adjoint per step."""
        if not self.segment:
            return self.forward_steps * times.forward + self.steps * times.adjoint
        recomputed = self.forward_steps - self.steps
        plain, with_residuals = self.steps - self.segment, self.segment + recomputed  # the last segment's in the first sweep
        return (plain * times.forward + with_residuals * times.forward_residuals
                + self.residual_steps * times.adjoint_residuals + (self.steps - self.residual_steps) * times.adjoint)

    def __str__(self) -> str:
        if self.segment:
            kept = (f"{self.segments} segments (the last of {self.segment} steps), {self.snapshots} snapshots of "
                    f"{format_bytes(self.snapshot_bytes)} and the residuals of {self.segment} steps "
                    f"({format_bytes(self.residual_bytes)} each)")
        else:
            kept = ("every step's input" if self.stores_every_input else f"{self.snapshots} snapshots") + \
                f" of {format_bytes(self.snapshot_bytes)}"
        return (f"{self.steps} steps: {kept}, {format_bytes(self.memory_bytes)} in all, "
                f"{self.forward_steps} forward steps ({self.forward_steps / self.steps:.2f} per step)")


def parse_memory(memory) -> float:
    """Bytes from ``20e9``, ``"20GB"``, ``"16 GiB"``."""
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        return float(memory)
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([A-Za-z]*)\s*", str(memory))
    if not match or match.group(2).upper() not in _UNITS:
        raise RuntimeArgumentError(f"memory={memory!r}: write bytes, a size such as \"20GB\" or \"16GiB\", or \"auto\"")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def free_memory(device) -> float:
    """Bytes free on ``device`` now: the GPU's free memory, or the host's available memory."""
    if device.is_cuda:
        return float(device.free_memory)
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def fixed_bytes(array_bytes: int, stored: Storage) -> int:
    """Arrays a rollout holds whatever it stores: the work pair, the final pair, the adjoint pair
    (and the carry, :attr:`Storage.carry_arrays`), and the one step input the forward sweep keeps
    for the first reverse step."""
    return (6 + stored.carry_arrays + stored.input_arrays) * array_bytes


def array_bytes_of(f_0) -> int:
    """Bytes of one population array like ``f_0``."""
    return f_0.size * wp.types.type_size_in_bytes(f_0.dtype)


def plan_for_snapshots(steps: int, snapshots: int, array_bytes: int, stored: Storage) -> RolloutPlan:
    every = snapshots >= steps
    per_state = stored.input_arrays * array_bytes if every else stored.snapshot_bytes(array_bytes)
    fixed = (6 + stored.carry_arrays) * array_bytes if every else fixed_bytes(array_bytes, stored)
    return RolloutPlan(steps, snapshots, array_bytes, per_state, fixed, binomial_forward_steps(steps, snapshots), stored)


def residual_bytes_of(step, f_0) -> int:
    """Bytes of one step's residuals (``manifest.residual_count`` values per cell, compute precision)."""
    return step.manifest.residual_count * int(np.prod(f_0.shape[1:])) * wp.types.type_size_in_bytes(step.compute_dtype)


def uses_residuals(step, scalar_gradients: bool) -> bool:
    """Whether a rollout of ``step`` gets a segment plan: its caller wants no scalar parameter's
    gradient and the module has residuals."""
    return not scalar_gradients and step.manifest.residuals


def segment_fixed_bytes(array_bytes: int, stored: Storage) -> int:
    """A segment plan's arrays besides snapshots and residuals: the work, final and adjoint pairs
    and the carry (no step input is kept: the last segment's residuals stand in for it)."""
    return (6 + stored.carry_arrays) * array_bytes


def plan_for_segments(steps: int, segments: int, array_bytes: int, residual_bytes: int, stored: Storage,
                      last: int | None = None) -> RolloutPlan:
    """The segment plan with ``segments`` segments, the last of ``last`` steps (default: as even a
    split as there is, the last the longest); the others split the rest evenly."""
    segments = max(1, min(segments, steps))
    last = -(-steps // segments) if last is None else last
    if not (1 <= last <= steps and (segments == 1) == (last == steps) and steps - last >= segments - 1
            and (segments == 1 or -(-(steps - last) // (segments - 1)) <= last)):
        raise ValueError(f"no plan of {segments} segments, the last of {last} steps, for {steps} steps")
    forward_steps = 2 * steps - last - (segments - 1)
    return RolloutPlan(steps, segments - 1, array_bytes, stored.snapshot_bytes(array_bytes),
                       segment_fixed_bytes(array_bytes, stored), forward_steps, stored, last, residual_bytes)


def _segment_plan(steps: int, budget: float, array_bytes: int, residual_bytes: int, stored: Storage) -> RolloutPlan | None:
    """The segment plan with the fewest recomputed steps within ``budget``: the fewest segments,
    the last as long as the memory left by their snapshots holds."""
    room = budget - segment_fixed_bytes(array_bytes, stored)
    for segments in range(1, steps + 1):
        last = min(steps, int((room - (segments - 1) * stored.snapshot_bytes(array_bytes)) // residual_bytes))
        if segments == 1 and last < steps:
            continue
        if last < 1 or steps - last < segments - 1:
            return None  # more segments only leave less room
        if segments == 1 or -(-(steps - last) // (segments - 1)) <= last:
            return plan_for_segments(steps, segments, array_bytes, residual_bytes, stored, last)
    return None


def plan_rollout(step, f_0, bc_mask, steps: int, memory="auto", scalar_gradients: bool = True) -> RolloutPlan:
    """The plan that stores the most states within ``memory`` (bytes, ``"20GB"``, or ``"auto"``:
    ``AUTO_FRACTION`` of what the device has free now) for ``steps`` steps of ``step`` on
    ``f_0``'s grid and ``bc_mask``'s cells; with ``scalar_gradients=False`` on a module with
    residuals, the segment plan with the fewest recomputed steps (see the module docstring)."""
    budget = AUTO_FRACTION * free_memory(f_0.device) if memory == "auto" else parse_memory(memory)
    stored = storage(step, bc_mask)
    array_bytes = array_bytes_of(f_0)
    if uses_residuals(step, scalar_gradients):
        plan = _segment_plan(steps, budget, array_bytes, residual_bytes_of(step, f_0), stored)
        if plan is not None:
            return plan
        # segments need about 2 sqrt(T x state x residuals) of memory; below that, the binomial plan
    every = plan_for_snapshots(steps, steps, array_bytes, stored)
    if every.memory_bytes <= budget:
        return every
    snapshots = int((budget - fixed_bytes(array_bytes, stored)) // stored.snapshot_bytes(array_bytes))
    if snapshots < 1:
        least = plan_for_snapshots(steps, 1, array_bytes, stored).memory_bytes
        raise RuntimeArgumentError(f"memory={memory!r} ({format_bytes(budget)}) is less than a rollout on this grid needs "
                                   f"with one snapshot ({format_bytes(least)})")
    return plan_for_snapshots(steps, min(snapshots, steps - 1), array_bytes, stored)


def plan_for(step, f_0, bc_mask, steps: int, snapshots: int | None = None, memory=None,
             scalar_gradients: bool = True) -> RolloutPlan:
    """The plan a rollout with these arguments follows (``snapshots`` or ``memory``, see
    :func:`adjointgen.runtime.rollout.checkpointed_rollout`): from the budget, else the segment
    plan with ``snapshots + 1`` segments where residuals serve, else the binomial plan."""
    if memory is not None:
        return plan_rollout(step, f_0, bc_mask, steps, memory, scalar_gradients)
    if uses_residuals(step, scalar_gradients):
        return plan_for_segments(steps, snapshots + 1, array_bytes_of(f_0), residual_bytes_of(step, f_0), storage(step, bc_mask))
    return plan_for_snapshots(steps, snapshots, array_bytes_of(f_0), storage(step, bc_mask))
