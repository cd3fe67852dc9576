"""Launches packed once and replayed: a rollout's sweeps run thousands of steps on few arrays.

``wp.launch`` spends 10-30 us of Python per call on its arguments; a launch recorded with
``wp.launch(..., record_cmd=True)`` (a ``warp.Launch``) replays in a few microseconds, and a
parameter is changed with ``set_param_at_index``. :class:`PackedAdjoint` holds the launches of one
adjoint step (:meth:`DifferentiableStep.adjoint_launches`); :class:`PackedForward` those of the
forward on a rollout's work pair, and on CUDA devices replays runs of steps on that pair as a CUDA
graph of two steps (A->B, B->A), where the forward kernel does not read its ``timestep`` (a graph
keeps the parameters it was captured with). Same kernels, same parameters: the same bits.
"""

from __future__ import annotations

import ast
import textwrap

import warp as wp

# CUDA graphs for runs of forward steps on a rollout's work pair: None = on CUDA devices only;
# True = also on the CPU (Warp's CPU graphs: for tests); False = never
GRAPHS: bool | None = None


def reads_parameter(kernel, name: str) -> bool:
    """Whether the body of the Warp ``kernel`` reads its parameter ``name`` (from its source)."""
    function = ast.parse(textwrap.dedent(kernel.adj.source)).body[0]
    return any(isinstance(node, ast.Name) and node.id == name for statement in function.body for node in ast.walk(statement))


class Launches:
    """Packed launches that run one after the other and take the same arguments (a split step's
    forward, its rest and listed parts): ``set_param_at_index`` sets it in each, ``launch`` runs
    them in order."""

    def __init__(self, launches: list):
        self.launches = launches

    def set_param_at_index(self, index: int, value) -> None:
        for launch in self.launches:
            launch.set_param_at_index(index, value)

    def launch(self) -> None:
        for launch in self.launches:
            launch.launch()


class PackedAdjoint:
    """The launches of one adjoint step, in order, each with the indices of the step's arrays and
    timestep among its parameters; then the reductions of per-cell parameter adjoints."""

    def __init__(self, launches: list, reductions: list):
        self.launches = launches  # [(warp.Launch, {"f_0": index, "timestep": index, ...})]
        self.reductions = reductions  # [(per-cell array, one-element total, packed launch adding it)]
        self.values: dict = {}

    def set(self, **values):
        """Change the step's ``f_0``, ``f_1``, ``timestep``, ``adj_f_0``, ``adj_f_1`` (and ``residuals``,
        for the launches built with them) for the next runs."""
        for role, value in values.items():
            if self.values.get(role, self) is value:
                continue
            self.values[role] = value
            for launch, where in self.launches:
                if role in where:
                    launch.set_param_at_index(where[role], value)

    def run(self):
        for launch, _ in self.launches:
            launch.launch()
        for cells, total, add in self.reductions:
            wp.utils.array_sum(cells, out=total)
            add.launch()


class PackedForward:
    """The forward of one rollout: a packed launch per orientation of the work pair ``(a, b)``
    (reads a writes b, reads b writes a), and one for a step that reads another array (a stored
    state). ``pairs`` replays two steps on the work pair as one CUDA graph."""

    def __init__(self, step, pair, bc_mask, missing_mask, omega, lifted_values, graphs: bool | None = None):
        a, b = pair
        self.partner = {id(a): b, id(b): a}
        self.fixed = {id(f_0): step.forward_launch(f_0, f_1, bc_mask, missing_mask, omega, 0, lifted_values)
                      for f_0, f_1 in ((a, b), (b, a))}
        self.other = step.forward_launch(a, b, bc_mask, missing_mask, omega, 0, lifted_values)
        self.pair = pair  # keeps the arrays (and so the ids above) alive
        graphs = a.device.is_cuda if graphs is None else graphs
        # a graph keeps the timestep it was captured with: only for kernels that do not read it
        self.graphs = {} if graphs and not reads_parameter(step.kernel("forward"), "timestep") else None

    def step(self, f_0, f_1, timestep: int):
        launch = self.fixed.get(id(f_0))
        if launch is None or self.partner[id(f_0)] is not f_1:
            launch = self.other
            launch.set_param_at_index(0, f_0)
            launch.set_param_at_index(1, f_1)
        launch.set_param_at_index(5, int(timestep))
        launch.launch()

    def pairs(self, f_0, count: int) -> int:
        """Run ``count`` pairs of steps from the work pair's ``f_0`` (after them ``f_0`` holds the
        state again) as replays of one graph; returns the pairs run (0 where there are no graphs)."""
        if self.graphs is None or id(f_0) not in self.fixed or count < 1 or f_0.device.is_capturing:
            return 0  # (inside a caller's own capture the launches are captured into theirs)
        graph = self.graphs.get(id(f_0))
        if graph is None:
            with wp.ScopedCapture(device=f_0.device, force_module_load=False) as capture:
                self.fixed[id(f_0)].launch()
                self.fixed[id(self.partner[id(f_0)])].launch()
            graph = self.graphs[id(f_0)] = capture.graph
        for _ in range(count):
            wp.capture_launch(graph)
        return count
