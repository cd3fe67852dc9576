"""The topology-optimization example (examples/topology_optimization.py) on a tiny grid: its design
gradient (through the filter, the projection, the interpolation and the rollout) against central
differences of its own objective in FP64; the same check rejects a gradient whose projection
derivative is off by 0.1 % or missing; MMA lowers the objective (by a fifth in six evaluations)
within the volume constraint; the 3D path runs end to end and writes its timings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "topology_optimization.py"
SHAPE = (16, 12)
TOLERANCE = 1e-6  # relative, FP64 central differences of a smooth objective


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("topology_optimization", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def problem(example):
    flow = example.Flow(SHAPE, fp64=True, steps=80, snapshots=8, omega=1.3, inlet_velocity=0.02)
    problem = example.Problem(flow, radius=2.0, volume=0.5)
    problem.beta, problem.q = 4.0, 0.3  # both maps well away from linear
    return problem


@pytest.fixture(scope="module")
def point(problem):
    """A gray design, a random direction in design space and the central difference along it."""
    rng = np.random.default_rng(7)
    n = int(problem.free.sum())
    x = 0.3 + 0.2 * rng.random(n)
    direction = rng.standard_normal(n)
    h = 1e-5
    central = (problem.value(x + h * direction) - problem.value(x - h * direction)) / (2 * h)
    return x, direction, central


def relative_miss(gradient, direction, central) -> float:
    return abs(float(gradient @ direction) - central) / abs(central)


def test_design_gradient_matches_central_differences(problem, point):
    x, direction, central = point
    value, gradient = problem.value_and_gradient(x)
    assert value == pytest.approx(problem.value(x), rel=1e-13)  # the same objective
    miss = relative_miss(gradient, direction, central)
    print(f"design gradient vs central difference: relative miss {miss:.2e}")
    assert miss < TOLERANCE
    # the constraint's gradient, the same way (no rollout)
    fraction, d_fraction = problem.fluid_fraction(x)
    h = 1e-6
    fd = (problem.fluid_fraction(x + h * direction)[0] - problem.fluid_fraction(x - h * direction)[0]) / (2 * h)
    assert relative_miss(d_fraction, direction, fd) < TOLERANCE


@pytest.mark.parametrize("label, wrong", [
    ("projection derivative x 1.001", lambda example: lambda z, beta: 1.001 * example.project_derivative(z, beta)),
    ("projection derivative dropped", lambda example: lambda z, beta: np.ones_like(z)),
])
def test_the_check_rejects_a_wrong_gradient(example, problem, point, label, wrong):
    x, direction, central = point
    problem.derivative = wrong(example)
    try:
        _, gradient = problem.value_and_gradient(x)
    finally:
        problem.derivative = example.project_derivative
    miss = relative_miss(gradient, direction, central)
    print(f"{label}: relative miss {miss:.2e}")
    assert miss > 100 * TOLERANCE


def test_mma_lowers_the_objective_within_the_volume(example, problem):
    pytest.importorskip("nlopt")  # the examples extra
    problem = example.Problem(problem.flow, radius=2.0, volume=0.5)  # its own log and scale
    problem.beta, problem.q = 1.0, 0.3
    x_start = problem.uniform_start()
    problem.scale = problem.value(x_start)
    x = example.optimise(problem, [(1.0, 0.3, 6)], x_start, verbose=False)  # nlopt's first MMA steps are cautious
    objectives = [row["objective"] for row in problem.log]
    assert len(objectives) == 6 and objectives[0] == pytest.approx(1.0)
    assert problem.value(x) < 0.8
    assert problem.fluid_fraction(x)[0] <= problem.volume + example.VOLUME_TOLERANCE


def test_the_3d_duct_runs_and_reports_its_timings(example, tmp_path):
    pytest.importorskip("nlopt")
    report = example.main(["--dim", "3", "--grid", "12x8x8", "--steps", "30", "--snapshots", "4", "--iterations", "2",
                           "--betas", "1,2", "--qs", "0.3,0.3", "--quiet", "--fields", "--out", str(tmp_path)])
    assert report["configuration"] == "D3Q19/PorousBGK/FP32FP32/topopt_double_pipe" and report["evaluations"] == 2
    saved = json.loads((tmp_path / "topology_optimization_results.json").read_text())
    timing = saved["timing"]
    assert timing["forward_rollout_s"] > 0 and timing["iteration_s"] > 0
    assert timing["iteration_over_forward"] == pytest.approx(timing["iteration_s"] / timing["forward_rollout_s"])
    for figure in ("design.png", "history.png"):
        assert (tmp_path / f"topology_optimization_{figure}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figures again, from the run's results.json and fields.npz (as for a run on a GPU machine)
    fields = np.load(tmp_path / "topology_optimization_fields.npz")
    assert fields["solid"].shape == fields["speed"].shape == (12, 8, 8)
    drawn = example.main(["--figures-from", str(tmp_path), "--out", str(tmp_path / "again")])
    assert drawn["final"] == report["final"]
    assert (tmp_path / "again" / "topology_optimization_design.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
