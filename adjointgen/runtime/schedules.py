"""The checkpointing schedules a rollout follows, as ``checkpoint_schedules`` actions.

Binomial plans take the package's ``MultistageCheckpointSchedule`` (Griewank and Walther's
schedule). Segment plans (:mod:`adjointgen.runtime.plan`) take :class:`ResidualSegments`, written
here because none of the package's schedules keeps the adjoint's dependencies of more than one
step at a time: they assume those cost as much as a stored state (the package's ``Forward(...,
write_adj_deps=True)`` is issued for the one step a ``Reverse`` then takes), while a step's
residuals cost a few values per cell. The actions are the package's own, so the rollout's one
interpreter runs both kinds.
"""

from __future__ import annotations

from checkpoint_schedules import CheckpointSchedule, EndForward, EndReverse, Forward, Move, Reverse, StorageType

from adjointgen.runtime.plan import RolloutPlan


class ResidualSegments(CheckpointSchedule):
    """``steps`` steps in segments that start at ``starts`` (the first at 0). Forward sweep: each
    segment but the last stores its initial state (``write_ics``), the last keeps its steps'
    adjoint dependencies (``write_adj_deps``: the residuals). Reverse sweep: the last segment
    from those; then, for each earlier segment, its state restored (``Move``: not needed again),
    its steps recomputed keeping their dependencies, and reversed."""

    def __init__(self, steps: int, starts: list[int]):
        super().__init__(steps)
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:] + [steps])):
            raise ValueError(f"segment starts {starts} do not split {steps} steps")
        self._starts = list(starts)
        self._exhausted = False

    def _iterator(self):
        starts = self._starts
        ends = starts[1:] + [self._max_n]
        for start, end in zip(starts[:-1], ends[:-1]):
            self._n = end
            yield Forward(start, end, True, False, StorageType.RAM)
        self._n = self._max_n
        yield Forward(starts[-1], ends[-1], False, True, StorageType.WORK)
        yield EndForward()
        for index in reversed(range(len(starts))):
            start, end = starts[index], ends[index]
            if index < len(starts) - 1:
                yield Move(start, StorageType.RAM, StorageType.WORK)
                self._n = end
                yield Forward(start, end, False, True, StorageType.WORK)
            self._r += end - start
            self._n = start
            yield Reverse(end, start, True)
        self._exhausted = True
        yield EndReverse()

    @property
    def is_exhausted(self) -> bool:
        return self._exhausted

    def uses_storage_type(self, storage_type) -> bool:
        return storage_type == StorageType.RAM


def schedule_for(plan: RolloutPlan):
    """The plan's schedule, or None when there is room for the inputs of every step (then nothing
    is recomputed). checkpoint_schedules' ``MultistageCheckpointSchedule`` with no disk is the
    binomial schedule and builds in milliseconds; its ``Revolve`` class gives the same one but
    spends 2.4 s of Python building it for 1000 steps, which on an H200 was longer than the 1000
    steps themselves."""
    import checkpoint_schedules

    if plan.segment:
        return ResidualSegments(plan.steps, plan.segment_starts())
    if plan.snapshots >= plan.steps:
        return None
    return checkpoint_schedules.MultistageCheckpointSchedule(plan.steps, plan.snapshots, 0)

