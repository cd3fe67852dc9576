"""Rollouts: T steps of a differentiable stepper, differentiated in memory bounded by snapshots.

    result = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, omega,
                                             steps=1000, snapshots=8)
    result.f_0, result.f_1                       # the state after T steps (f_0 the newest)
    grads = result.backward(adj_f_0=dL_dfinal)   # d L / d (initial f_0, f_1, omega, parameters)

The state of XLB's loop is the pair ``(f_0, f_1)``: each step reads ``f_0`` (and, for ZouHe and
Regularized conditions, prescribed values in ``f_1``), writes the new state into ``f_1`` and its
boundary data back into ``f_0``, and the loop swaps the two. A rollout keeps that convention, so
what ``f_1`` carries into a step is part of the differentiated function.

The forward sweep stores at most ``snapshots`` states (pairs of arrays); the reverse sweep
recomputes the steps in between from them, following the binomial schedule of Griewank and
Walther (Revolve) as the ``checkpoint_schedules`` package computes it, which minimises
recomputation for that memory. Besides the snapshots, a rollout holds a working pair, the inputs of the step being
differentiated and two adjoint arrays: memory grows with ``snapshots``, not with ``steps``.

With ``scalar_gradients=False`` (no gradient of omega or of a lifted parameter will be asked
for) on a module with residuals, the plan is one of segments instead (:mod:`adjointgen.runtime.plan`,
:class:`adjointgen.runtime.schedules.ResidualSegments`): the steps of a segment keep their
residuals, a few values per cell, and the state-only adjoint runs from them; each step is
recomputed at most once. The gradients are bit for bit those of the binomial plan.

Inside a ``wp.Tape``, :func:`checkpointed_rollout` records itself as one operation: the tape's
backward pass takes the gradients of ``result.f_0``/``result.f_1`` and adds the pulled-back
gradients to ``f_0.grad``/``f_1.grad`` (and ``omega.grad``, and the step's parameters' ``.grad``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import warp as wp
from checkpoint_schedules import Copy, EndForward, EndReverse, Forward, Move, Reverse, StorageType

from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime.plan import (RolloutPlan, cells_with_ids, f_1_cells, plan_for, plan_rollout, reverses_fresh,
                                     uses_residuals)
from adjointgen.runtime.schedules import schedule_for
from adjointgen.runtime import launches
from adjointgen.runtime.launches import PackedForward
from adjointgen.runtime.step import check_like_state
from adjointgen.runtime.step import paused_tape

__all__ = ["checkpointed_rollout", "RolloutResult", "plan_rollout", "RolloutPlan"]


def _progress(total: int, description: str, enabled: bool | None):
    """A tqdm bar on a terminal (or when asked), else a no-op with the same interface."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, unit="step", leave=False)

    class _Quiet:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return _Quiet()


@dataclass
class _Stats:
    forward_steps: int = 0  # steps advanced, recomputation included
    stored_states: int = 0  # snapshots + adjoint inputs held now
    peak_stored_states: int = 0
    snapshots_written: int = 0  # states stored by the schedule (Forward.write_ics)
    borrowed_inputs: int = 0  # steps whose adjoint read the state held, not a copy of it
    snapshots_in_forward: int = 0  # of snapshots_written, those forward_save wrote while stepping (no copy)
    peak_residuals: int = 0  # steps' residuals held at once (segment plans)

    def hold(self, count: int):
        self.stored_states += count
        self.peak_stored_states = max(self.peak_stored_states, self.stored_states)


@dataclass
class RolloutResult:
    """The state after the rollout, and the means to pull gradients back through it."""

    f_0: wp.array
    f_1: wp.array
    stats: _Stats = field(default_factory=_Stats)
    plan: RolloutPlan | None = None  # what was planned (memory, forward steps); stats: what ran
    _backward: Callable | None = None

    def backward(self, adj_f_0=None, adj_f_1=None, observe=None, adj_omega=None, adj_parameters=None, adj_fields=None):
        """Pull back cotangents of the final state (``adj_f_0`` for ``f_0``, the newest state,
        ``adj_f_1`` for ``f_1``; arrays or None for zero). ``observe(t, f_0, f_1, adj_f_0,
        adj_f_1)`` is called for every earlier state ``t = steps - 1, ..., 0`` with the state and
        the adjoint arrays, to which it may add the gradient of a loss on that state. Returns the
        adjoints of the initial ``f_0`` and ``f_1`` (new arrays); ``adj_omega`` (a one-element
        array) and ``adj_parameters`` ({name: array}) are accumulated into, and so is ``adj_fields``
        ({design field name: array shaped like ``step.fields[name]``})."""
        if self._backward is None:
            raise RuntimeArgumentError("this rollout can be run backward only once")
        for name, given in (("adj_f_0", adj_f_0), ("adj_f_1", adj_f_1)):
            if given is not None:
                check_like_state(name, given, self.f_0)
        run, self._backward = self._backward, None
        return run(adj_f_0, adj_f_1, observe, adj_omega, adj_parameters, adj_fields)


def checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, omega, steps: int, snapshots: int | None = None,
                         start_timestep: int = 0, progress: bool | None = None, memory=None,
                         scalar_gradients: bool = True) -> RolloutResult:
    """Run ``steps`` steps of ``step`` (an :func:`adjointgen.differentiable` step) from the pair
    ``(f_0, f_1)``, which is left unchanged, storing at most ``snapshots`` intermediate states for
    the reverse sweep, or as many as ``memory`` allows (bytes, ``"20GB"``, or ``"auto"``: see
    :func:`adjointgen.runtime.plan.plan_rollout`; ``result.plan`` says what was chosen). ``omega``
    is a float or a one-element array (then, inside a tape, its gradient is filled).
    ``progress``: a progress bar for the sweeps (default: on a terminal).

    ``scalar_gradients=False``: the caller will ask ``backward`` for no gradient of omega or of a
    lifted parameter (nor ``observe`` intermediate states); where the module has residuals the
    rollout then follows a segment plan (the module docstring), faster and in less memory, and
    ``backward`` refuses those requests. ``snapshots`` then counts the stored states of that plan
    (segments less one). Design fields' gradients are available either way."""

    if (snapshots is None) == (memory is None):
        raise RuntimeArgumentError("give a rollout either snapshots= (stored states) or memory= (a budget such as \"20GB\" or \"auto\")")
    least = 0 if uses_residuals(step, scalar_gradients) else 1  # a segment plan may store no state (one segment)
    if steps < 1 or (snapshots is not None and snapshots < least):
        raise RuntimeArgumentError(f"a rollout needs steps >= 1 and snapshots >= {least}; got steps={steps}, "
                                   f"snapshots={snapshots}")
    step.check_arrays(f_0, f_1, bc_mask, missing_mask)
    plan = plan_for(step, f_0, bc_mask, steps, snapshots, memory, scalar_gradients)
    with paused_tape() as tape:
        if tape is not None and not scalar_gradients:
            _refuse_scalar_gradients_on_a_tape(step, omega)
        result = _rollout(step, f_0, f_1, bc_mask, missing_mask, omega, steps, plan, start_timestep, progress,
                          scalar_gradients)
        result.plan = plan
    if tape is not None:
        _record(tape, step, result, f_0, f_1, omega, scalar_gradients)
    return result


def _rollout(step, f_0, f_1, bc_mask, missing_mask, omega, steps, plan: RolloutPlan, start_timestep, progress,
             scalar_gradients: bool = True) -> RolloutResult:
    sweep = _Sweep(step, f_0, f_1, bc_mask, missing_mask, omega, steps, plan, start_timestep, progress, scalar_gradients)
    return sweep.forward_sweep()


class _Sweep:
    """One rollout: the forward sweep, then (once) the reverse sweep, following the plan's schedule.

    The state at ``position`` is held by ``current``: the work pair, or after a restore the stored
    pair itself (read only; copied into the work pair only when a step must run from it). The
    adjoint of a step reads its input f_0, and its input f_1 only when a boundary condition keeps
    data there: otherwise a step's inputs are kept without f_1 (half the copying). What a stored
    state holds follows ``plan.storage``: f_1 only when a step reads it (a boundary condition keeps
    data there, or a solid cell keeps its old output), and then only at those cells where it can
    (:class:`_Cells`); a step may run straight from a stored state that holds f_0 alone when it
    updates nothing in place."""

    def __init__(self, step, f_0, f_1, bc_mask, missing_mask, omega, steps, plan: RolloutPlan, start_timestep, progress,
                 scalar_gradients: bool = True):
        self.step, self.bc_mask, self.missing_mask, self.steps = step, bc_mask, missing_mask, steps
        self.start_timestep, self.progress = start_timestep, progress
        self.schedule = schedule_for(plan)
        self.omega_value = step.kernel_omega(omega)
        self.lifted_values = step.parameter_values()
        self.field_values = step.field_arrays()  # the design fields, as they are when the rollout starts
        self.stats = _Stats()
        self.ram: dict[int, tuple] = {}  # step -> stored state pair
        self.adj_deps: dict[int, tuple] = {}  # step -> the state pair that step reads (for its adjoint)
        self.borrowed: set[int] = set()  # steps whose adj_deps entry is the pair holding the state, not a copy
        self.work = [wp.clone(f_0, requires_grad=False), wp.clone(f_1, requires_grad=False)]
        cells = f_1_cells(step.manifest, bc_mask) if plan.storage.snapshot_arrays == 2 else None
        self.f_1_cells = None if cells is None else wp.array(cells, dtype=wp.int32, device=f_0.device)
        # where a step updates f_0 in place at known ids, a step from a stored state runs on the
        # stored f_0 itself and puts back the few elements it overwrote (no copy of the state)
        self.overwritten_cells = None
        if self.f_1_cells is not None and step.manifest.overwritten_ids:
            self.overwritten_cells = wp.array(cells_with_ids(bc_mask, step.manifest.overwritten_ids), dtype=wp.int32,
                                              device=f_0.device)
        self.current = self.work
        self.position = 0
        self.stored = plan.storage
        self.actions = iter(self.schedule) if self.schedule is not None else iter(())
        self.shapes = (f_0, f_1)  # arrays shaped and typed like the adjoints
        # the forward and adjoint launches, packed once (runtime.launches; CUDA graphs for runs of steps)
        self.forwards = PackedForward(step, tuple(self.work), bc_mask, missing_mask, self.omega_value, self.lifted_values,
                                      launches.GRAPHS)
        self.adjoint_step = None  # a PackedAdjoint, from the first reverse step
        # a segment plan: steps that keep their residuals (forward_residuals), reversed from them
        self.residuals = _ResidualPool(step, plan, f_0, bc_mask, missing_mask, self.omega_value, self.lifted_values) \
            if plan.segment else None
        self.residual_adjoint = None  # a PackedAdjoint of the _residuals variant, from the first step reversed from them
        self.scalar_gradients = scalar_gradients  # False: backward refuses scalar parameters' gradients and observe
        self.popped: tuple = ()  # a stored state restored for the last time: released once the sweep has left it
        # a snapshot of f_0 alone, taken where a step then runs from it, is written by that step's
        # forward_save (one extra write, no extra read) instead of a copy (a read and a write):
        # where the copy is exact (periodic pull streaming, nothing in place, no kept cell)
        self.saving = None
        if self.stored.snapshot_arrays == 1 and not self.stored.in_place and step.saves_in_forward(bc_mask):
            self.saving = step.forward_save_launch(self.work[0], self.work[1], bc_mask, missing_mask, self.omega_value,
                                                   self.lifted_values, self.work[0])
        self.owned: dict = {}  # step -> a popped stored state its borrowed adjoint input reads (released after it)

    # ------------------------------------------------------------------ forward
    def copy(self, array):
        """A copy of ``array`` in an array of the step's pool (``step.saved_buffers``, shared with
        its tape records): a stored state goes back there once nothing reads it (:meth:`release`),
        so later stores and the next rollout of the same grid allocate nothing (on a GPU, fresh
        device memory cost 0.1-0.15 s per 50 GB, 15 % of a 1000-step gradient)."""
        copy = self.step.saved_buffers.take(array)
        wp.copy(copy, array)
        return copy

    def release(self, pair) -> None:
        """A stored state's arrays back to the pool (the launches that read them are queued before
        any that could write them again: one stream). Each pooled array has one owner at a time:
        an entry of ``ram`` or of ``adj_deps`` (``owned`` for a borrowed one), or ``popped``."""
        self.step.saved_buffers.give([array for array in pair if isinstance(array, wp.array)
                                      and all(array is not mine for mine in self.work)])

    def release_popped(self) -> None:
        self.release(self.popped)
        self.popped = ()

    def store(self, pair, with_f_1: bool = True) -> tuple:
        self.stats.hold(1)
        return self.copy(pair[0]), self.copy(pair[1]) if with_f_1 else None

    def snapshot(self, pair) -> tuple:
        """A stored state: f_0, and f_1 where a step reads it (only at the cells that matter, when
        those are known)."""
        if self.stored.snapshot_arrays == 1 or self.f_1_cells is None:
            return self.store(pair, with_f_1=self.stored.snapshot_arrays == 2)
        self.stats.hold(1)
        return self.copy(pair[0]), _Cells.gather(pair[1], self.f_1_cells)

    def advance(self, n0: int, n1: int, keep_inputs: bool, bar):
        if self.position != n0:
            raise AssertionError(f"schedule asks to advance from {n0}, the work state is at {self.position}")
        work = self.work
        if n1 > n0 and self.current is not work and self.current[1] is work[1] and not keep_inputs and (
                self.overwritten_cells is not None):
            self.step_from_snapshot(n0, bar)  # f_0 stored, f_1 rebuilt in the work pair at its cells (restore)
            n0 += 1
        if n1 > n0 and self.current is not work and not self.stored.step_from_stored:
            wp.copy(work[0], self.current[0])
            if self.current[1] is not None and self.current[1] is not work[1]:
                wp.copy(work[1], self.current[1])
            self.current = work
        n = n0
        while n < n1:
            if not keep_inputs and self.current is work:  # a run on the work pair: graphs of two steps where there are
                pairs = self.forwards.pairs(work[0], (n1 - n) // 2)  # (after a pair, work[0] holds the state again)
                if pairs:
                    n = self._ran(n, 2 * pairs, bar)
                    continue
            if keep_inputs and self.residuals is not None:  # the step keeps its residuals, not its input
                self.adj_deps[n] = self.residuals.forward(self.current[0], work[1], self.start_timestep + n)
                self.stats.peak_residuals = max(self.stats.peak_residuals, self.residuals.held)
            else:
                if keep_inputs:
                    self.adj_deps[n] = self.store(self.current, with_f_1=self.stored.reads_f_1)
                # from a stored state (step_from_stored), the first step reads it where it is and writes
                # the new state into the work pair: no copy; the pair's other array is then stale,
                # which nothing reads
                self.forwards.step(self.current[0], work[1], self.start_timestep + n)
            work[0], work[1] = work[1], work[0]  # XLB's swap: f_0 holds the new state
            self.current = work
            n = self._ran(n, 1, bar)
        self.position = n1
        if self.popped and self.current is work:  # the sweep has left the state restored for the last time
            self.release_popped()

    def step_from_snapshot(self, n: int, bar) -> None:
        """Step ``n`` from a restored state whose ``f_0`` is the stored array itself (and whose
        ``f_1`` is the work pair's, rebuilt at the cells that matter): the step writes the new state
        into the work pair and overwrites the stored ``f_0`` at its in-place cells; what the next
        step reads of that array (its ``f_1``) is gathered into the work pair, and the stored
        elements are put back. Sparse copies only, instead of a copy of the whole state."""
        stored_f_0, work = self.current[0], self.work
        saved = _Cells.gather(stored_f_0, self.overwritten_cells)
        self.forwards.step(stored_f_0, work[1], self.start_timestep + n)
        _Cells.gather(stored_f_0, self.f_1_cells).scatter(work[0])  # f_0 as the step left it, where it is read
        saved.scatter(stored_f_0)
        work[0], work[1] = work[1], work[0]  # XLB's swap: f_0 holds the new state
        self.current = work
        self._ran(n, 1, bar)

    def _ran(self, n: int, count: int, bar) -> int:
        self.stats.forward_steps += count
        bar.update(count)
        return n + count

    def restore(self, n: int, delete: bool):
        self.release_popped()
        self.current = self.ram.pop(n) if delete else self.ram[n]
        if delete:
            self.stats.hold(-1)
            self.popped = self.current
        if isinstance(self.current[1], _Cells):  # f_1 kept at some cells: rebuilt in the work pair, f_0 used in place
            self.current[1].scatter(self.work[1])
            self.current = (self.current[0], self.work[1])
        self.position = n

    def forward_action(self, action, following, bar):
        """Run a schedule's ``Forward``. Where it ends in the step that the ``following`` action
        reverses, that last step is not run: its adjoint replays it from its input, which is the
        state the pair already holds, so that pair is handed to the adjoint as it is (no forward
        step whose result nothing reads, no copy of a state already held)."""
        n0, n1 = action.n0, min(action.n1, self.steps)
        borrow = action.write_adj_deps and isinstance(following, Reverse) and following.n1 == n1
        if action.write_ics:
            steps_run = (n1 - 1 if borrow else n1) - n0
            if self.saving is not None and steps_run > 0 and not action.write_adj_deps:
                self.snapshot_while_stepping(n0, bar)  # the action's first step writes the snapshot
                n0 += 1
            else:
                self.ram[n0] = self.snapshot(self.current)
            self.stats.snapshots_written += 1
        if borrow:
            self.advance(n0, n1 - 1, True, bar)
            self.adj_deps[n1 - 1] = (self.current[0], self.current[1])
            self.borrowed.add(n1 - 1)
            if self.popped and self.current[0] is self.popped[0]:  # the adjoint owns it now
                self.owned[n1 - 1], self.popped = self.popped, ()
            self.stats.borrowed_inputs += 1
        else:
            self.advance(n0, n1, action.write_adj_deps, bar)

    def snapshot_while_stepping(self, n: int, bar) -> None:
        """Step ``n`` from the state held (the work pair or a stored ``f_0``, read where it is) with
        ``forward_save``, which stores its input into a snapshot array as it reads it."""
        if self.position != n:
            raise AssertionError(f"schedule asks to advance from {n}, the work state is at {self.position}")
        self.stats.hold(1)
        saved, work = self.step.saved_buffers.take(self.current[0]), self.work
        for index, value in ((0, self.current[0]), (1, work[1]), (5, self.start_timestep + n)):
            self.saving.set_param_at_index(index, value)
        self.saving.set_param_by_name("saved_f_0", saved)
        self.saving.launch()
        self.ram[n] = (saved, None)
        self.stats.snapshots_in_forward += 1
        work[0], work[1] = work[1], work[0]  # XLB's swap: f_0 holds the new state
        self.current = work
        self.position = n + 1
        self._ran(n, 1, bar)
        if self.popped:  # (a state restored for the last time, left now)
            self.release_popped()

    def forward_sweep(self) -> RolloutResult:
        bar = _progress(self.steps, "forward", self.progress)
        if self.schedule is None:
            self.advance(0, self.steps, True, bar)
        for action in self.actions:
            if isinstance(action, Forward):
                self.forward_action(action, None, bar)  # the forward sweep: every step runs (its end is the result)
            elif isinstance(action, EndForward):
                break
            else:
                raise AssertionError(f"unexpected action before the end of the forward sweep: {action}")
        bar.close()
        result = RolloutResult(wp.clone(self.work[0], requires_grad=False), wp.clone(self.work[1], requires_grad=False),
                               self.stats)
        result._backward = self.backward
        return result

    # ------------------------------------------------------------------ reverse
    def backward(self, adj_f_0, adj_f_1, observe, adj_omega, adj_parameters, adj_fields=None):
        if not self.scalar_gradients and (adj_omega is not None or adj_parameters or observe is not None):
            raise RuntimeArgumentError(
                "this rollout was planned with scalar_gradients=False (it may keep only the residuals of the state-only "
                "adjoint): it gives no gradient of omega or of a lifted parameter and no intermediate states to observe; "
                "run checkpointed_rollout with scalar_gradients=True (the default) for those")
        adjoints = [wp.zeros_like(a, requires_grad=False) for a in self.shapes]  # of the state
        for adjoint, given in zip(adjoints, (adj_f_0, adj_f_1)):
            if given is not None:
                wp.copy(adjoint, given)
        # Where nothing but the final state has a cotangent, the adjoint each step would add to is
        # zero (the next step overwrote that buffer everywhere) and the one it would clear is
        # overwritten by the step before: adjoint_fresh moves 3 arrays instead of 5. What is not
        # zero, the adjoints of the elements a step overwrites in place and of kept cells' state,
        # goes from step to step in the carry (see DifferentiableStep.adjoint); a step that keeps
        # data in f_1 without updating f_0 in place has no such fresh adjoint
        stored = self.stored
        self.fresh = reverses_fresh(self.step.manifest, stored) and observe is None and adj_f_1 is None
        self.carry = wp.zeros_like(adjoints[0]) if self.fresh and stored.carry_arrays else None
        self.adjoints, self.observe, self.adj_omega, self.adj_parameters = adjoints, observe, adj_omega, adj_parameters
        self.adj_fields = adj_fields
        self.reverse_bar = _progress(self.steps, "reverse", self.progress)
        if self.schedule is None:
            self.reverse(self.steps, 0)
        else:
            self.reverse_sweep(list(self.actions))  # the reverse sweep's actions, read one ahead by forward_action
        self.reverse_bar.close()
        if self.fresh and self.carry is not None:  # the adjoint of the initial f_1, carried out of the first step
            adjoints[1] = self.carry
        elif self.fresh:  # the initial f_1 is not read by such a step: its adjoint is zero (never cleared above)
            adjoints[1].zero_()
        self.stats.hold(-len(self.ram))
        for pair in list(self.ram.values()) + list(self.owned.values()):
            self.release(pair)
        self.release_popped()
        self.ram.clear()
        self.owned.clear()
        if self.residuals is not None:
            self.residuals.release()
        return adjoints[0], adjoints[1]

    def reverse_sweep(self, plan: list):
        for index, action in enumerate(plan):
            if isinstance(action, Reverse):
                self.reverse(action.n1, action.n0)
            elif isinstance(action, (Copy, Move)):
                if action.from_storage != StorageType.RAM or action.to_storage != StorageType.WORK:
                    raise AssertionError(f"unexpected storage action {action}")
                self.restore(action.n, isinstance(action, Move))
            elif isinstance(action, Forward):
                self.forward_action(action, plan[index + 1] if index + 1 < len(plan) else None, _progress(0, "", False))
            elif isinstance(action, EndReverse):
                break
            else:
                raise AssertionError(f"unexpected action {action}")

    def reverse(self, n1: int, n0: int):
        adjoints = self.adjoints
        for n in range(n1 - 1, n0 - 1, -1):
            inputs = self.adj_deps.pop(n)
            if isinstance(inputs, _Kept):  # the step's residuals (a segment plan)
                self.reverse_from_residuals(n, inputs)
                continue
            borrowed = n in self.borrowed
            if borrowed:
                self.borrowed.discard(n)
            else:
                self.stats.hold(-1)
            # the step read inputs (f_0, f_1) and left (f_0', new); the state after it is
            # (new, f_0'): its adjoints are (adjoints[0], adjoints[1]) in that order
            f_1_input = inputs[1] if inputs[1] is not None else self.work[1]  # not read by this module
            if self.adjoint_step is None:
                self.adjoint_step = self.step.adjoint_launches(
                    inputs[0], f_1_input, self.bc_mask, self.missing_mask, self.omega_value, self.start_timestep + n,
                    adjoints[1], adjoints[0], self.adj_omega, self.lifted_values, self.adj_parameters, fresh=self.fresh,
                    adj_fields=self.adj_fields, field_values=self.field_values, carry=self.carry,
                    kept_cells=self.fresh and self.stored.kept_cells)
            else:
                self.adjoint_step.set(f_0=inputs[0], f_1=f_1_input, timestep=self.start_timestep + n, adj_f_0=adjoints[1],
                                      adj_f_1=adjoints[0])
            self.adjoint_step.run()
            adjoints[0], adjoints[1] = adjoints[1], adjoints[0]
            if self.observe is not None:
                self.observe(n, inputs[0], f_1_input, adjoints[0], adjoints[1])
            if not borrowed:
                self.release(inputs)  # a copy of the step's input
            elif n in self.owned:
                self.release(self.owned.pop(n))  # a stored state restored for the last time
            self.reverse_bar.update()

    def reverse_from_residuals(self, n: int, kept: "_Kept") -> None:
        """Step ``n``'s adjoint from its residuals (the state-only ``_residuals`` variant; the work
        pair gives the kernels their grid only)."""
        adjoints, work = self.adjoints, self.work
        if self.residual_adjoint is None:
            self.residual_adjoint = self.step.adjoint_launches(
                work[0], work[1], self.bc_mask, self.missing_mask, self.omega_value, self.start_timestep + n, adjoints[1],
                adjoints[0], None, self.lifted_values, None, fresh=self.fresh, adj_fields=self.adj_fields,
                field_values=self.field_values, carry=self.carry, kept_cells=self.fresh and self.stored.kept_cells,
                residuals=kept.array)
        else:
            self.residual_adjoint.set(timestep=self.start_timestep + n, adj_f_0=adjoints[1], adj_f_1=adjoints[0],
                                      residuals=kept.array)
        self.residual_adjoint.run()
        self.residuals.give(kept)
        adjoints[0], adjoints[1] = adjoints[1], adjoints[0]
        self.reverse_bar.update()


@dataclass(frozen=True)
class _Kept:
    """One step's residuals (an entry of the sweep's ``adj_deps`` in a segment plan)."""

    array: Any


class _ResidualPool:
    """A segment plan's residuals: one block for ``plan.segment`` steps (allocated at the first
    step that keeps residuals: one allocation, not one per step, which cost up to 10 % of a long
    segment's time), handed out as views, and the packed ``forward_residuals`` launch that fills them."""

    def __init__(self, step, plan: RolloutPlan, f_0, bc_mask, missing_mask, omega_value, lifted_values):
        self.shape = (step.manifest.residual_count, *f_0.shape[1:])
        self.dtype, self.device, self.limit = step.compute_dtype, f_0.device, plan.segment
        self.block = None  # (segment x residual_count, nx, ny, nz)
        self.free: list = []  # views of the block not held
        self.held = 0
        # packed with the step's stand-in for the residuals (no state-sized array outside the plan);
        # every launch sets its own view of the block first
        self.launch = step.forward_residuals(f_0, f_0, bc_mask, missing_mask, omega_value, 0, lifted_values, None,
                                             record_cmd=True)
        self.pool = step.saved_buffers  # the block comes from there and goes back (see _Sweep.copy)

    def forward(self, f_0, f_1, timestep: int) -> _Kept:
        """One step from ``f_0`` into ``f_1`` that keeps its residuals."""
        if self.block is None:  # (Warp arrays have at most 4 axes: the steps' residuals one after the other)
            count = self.shape[0]
            self.block = self.pool.take_shaped((self.limit * count, *self.shape[1:]), self.dtype, self.device)
            self.free = [self.block[index * count:(index + 1) * count] for index in reversed(range(self.limit))]
        if not self.free:
            raise AssertionError(f"the schedule keeps more than {self.limit} steps' residuals")
        array = self.free.pop()
        self.held += 1
        for index, value in ((0, f_0), (1, f_1), (5, int(timestep))):
            self.launch.set_param_at_index(index, value)
        self.launch.set_param_by_name("residuals", array)
        self.launch.launch()
        return _Kept(array)

    def give(self, kept: _Kept) -> None:
        self.free.append(kept.array)
        self.held -= 1

    def release(self) -> None:
        """The block back to the step's pool (the reverse sweep has ended)."""
        if self.block is not None:
            self.pool.give([self.block])
            self.block, self.free = None, []


class _Cells:
    """``f_1`` of a stored state at some cells only (:func:`adjointgen.runtime.plan.f_1_cells`):
    ``values[p, c]`` is population ``p`` at flat cell ``cells[c]``. The other cells' content is
    overwritten by the next step before anything reads it, so a state rebuilt from this (the
    values scattered into any array) steps and differentiates exactly as the whole one."""

    def __init__(self, values, cells):
        self.values, self.cells = values, cells

    @classmethod
    def gather(cls, f_1, cells) -> "_Cells":
        q = f_1.shape[0]
        values = wp.empty((q, cells.shape[0]), dtype=f_1.dtype, device=f_1.device)
        wp.launch(_gather_cells, dim=values.shape, inputs=[f_1.reshape((q, -1)), cells, values], device=f_1.device,
                  record_tape=False)
        return cls(values, cells)

    def scatter(self, f_1) -> None:
        wp.launch(_scatter_cells, dim=self.values.shape, inputs=[self.values, self.cells, f_1.reshape((f_1.shape[0], -1))],
                  device=f_1.device, record_tape=False)


@wp.kernel(enable_backward=False)
def _gather_cells(source: wp.array2d(dtype=Any), cells: wp.array(dtype=wp.int32), values: wp.array2d(dtype=Any)):
    p, c = wp.tid()
    values[p, c] = source[p, cells[c]]


@wp.kernel(enable_backward=False)
def _scatter_cells(values: wp.array2d(dtype=Any), cells: wp.array(dtype=wp.int32), target: wp.array2d(dtype=Any)):
    p, c = wp.tid()
    target[p, cells[c]] = values[p, c]


def _refuse_scalar_gradients_on_a_tape(step, omega) -> None:
    """A tape would leave ``omega.grad`` (or a lifted parameter's) unfilled after a rollout with
    ``scalar_gradients=False``: refused before anything runs, instead of a silently zero gradient."""
    wanted = ["omega"] if isinstance(omega, wp.array) and omega.requires_grad else []
    wanted += [name for name, array in step.parameters.items() if array.requires_grad]
    if wanted:
        raise RuntimeArgumentError(f"{', '.join(wanted)} require(s) a gradient on this tape, but the rollout was asked "
                                   "for scalar_gradients=False: pass scalar_gradients=True (the default), or arrays "
                                   "without requires_grad")


def _record(tape, step, result: RolloutResult, f_0, f_1, omega, scalar_gradients: bool = True):
    """Record the rollout on ``tape`` as one operation (without the scalar parameters' gradients
    where ``scalar_gradients`` is False: refused before the rollout where one is wanted)."""
    for name, array in (("f_0", f_0), ("f_1", f_1)):
        if array.grad is None:
            raise RuntimeArgumentError(f"{name} has no gradient array; create it with requires_grad=True before "
                                       "recording a rollout on a wp.Tape")
    result.f_0.requires_grad = True
    result.f_1.requires_grad = True
    adj_omega = omega.grad if isinstance(omega, wp.array) and omega.requires_grad and scalar_gradients else None
    adj_parameters = {name: array.grad for name, array in step.parameters.items() if array.requires_grad and scalar_gradients}
    adj_fields = {name: array.grad for name, array in step.fields.items() if array.requires_grad}  # design fields

    def tape_backward():
        g0, g1 = result.backward(result.f_0.grad, result.f_1.grad, None, adj_omega, adj_parameters, adj_fields)
        for source, target in ((g0, f_0.grad), (g1, f_1.grad)):
            wp.launch(_accumulate, dim=source.size, inputs=[source.flatten(), target.flatten()], device=target.device,
                      record_tape=False)

    recorded = [f_0, f_1, result.f_0, result.f_1] + ([omega] if adj_omega is not None else [])
    recorded += [array for array in step.parameters.values() if array.requires_grad]
    recorded += [array for array in step.fields.values() if array.requires_grad]
    tape.record_func(backward=tape_backward, arrays=recorded)


@wp.kernel(enable_backward=False)
def _accumulate(source: wp.array(dtype=Any), target: wp.array(dtype=Any)):
    i = wp.tid()
    target[i] = target[i] + source[i]
