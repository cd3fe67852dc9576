import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stepper_autodiff.py"


def test_corrected_issue_161_script_agrees_with_jax():
    result = subprocess.run([sys.executable, str(EXAMPLE), "--grid-2d", "8", "--grid-3d", "5"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if "adjointgen gradient vs JAX" in line]
    assert len(summary) == 4 and all(line.endswith("--> OK") for line in summary)


def test_initial_condition_inverse_problem_runs_and_matches_xlb_jax(tmp_path):
    import json

    script = EXAMPLE.parent / "inverse_initial_condition.py"
    result = subprocess.run([sys.executable, str(script), "--grid", "16", "--steps", "12", "--iterations", "5", "--lr", "1e-3",
                             "--snapshots", "3", "--no-progress", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["adjointgen"]["final_loss"] < report["adjointgen"]["first_loss"]
    # the same Adam steps from the same start: the loss curves agree (FP32)
    assert report["xlb_jax"]["max_relative_loss_difference"] < 1e-4
    for figure in ("target_and_result.png", "loss.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, EXAMPLE.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameter_identification_gradients_match_finite_differences():
    import numpy as np

    example = _load_example("identify_inlet_and_omega")
    shape = (24, 10)
    problem = example.Problem(shape, steps=30, snapshots=4, window=(slice(12, 22), slice(1, 9)))
    observed, _ = problem.velocity(problem.run(0.04, 1.6).f_0.numpy())
    loss, grad, _ = problem.loss_and_gradient(0.03, 1.4, observed)

    def loss_at(inlet, omega):
        u, _ = problem.velocity(problem.run(inlet, omega).f_0.numpy())
        w = problem.window
        return float(np.mean(np.sum((u - observed)[:, w[0], w[1]] ** 2, axis=0)))

    assert abs(loss_at(0.03, 1.4) - loss) < 1e-6 * max(loss, 1e-12) + 1e-12
    d_inlet = (loss_at(0.03 + 1e-3, 1.4) - loss_at(0.03 - 1e-3, 1.4)) / 2e-3
    d_omega = (loss_at(0.03, 1.4 + 1e-2) - loss_at(0.03, 1.4 - 1e-2)) / 2e-2
    np.testing.assert_allclose(grad, [d_inlet, d_omega], rtol=2e-2)


def test_parameter_identification_recovers_the_parameters(tmp_path):
    import json

    result = subprocess.run([sys.executable, str(EXAMPLE.parent / "identify_inlet_and_omega.py"), "--grid", "48x18",
                             "--steps", "150", "--iterations", "60", "--noise", "0", "--no-progress", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["final_loss"] < 1e-2 * report["first_loss"]
    # Adam still oscillates around the answer after 60 iterations (about 7 % here, 1 % at the
    # example's default size); the gradients themselves are checked against finite differences above
    assert report["relative_error"]["inlet"] < 0.1 and report["relative_error"]["omega"] < 0.1
    for figure in ("fields.png", "parameters.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shape_gradient_with_respect_to_the_radius_matches_finite_differences():
    """d loss / d radius through the interpolated wall (adjoint field gradient times d q / d r)
    against central differences of the loss (FP64, a step small enough to keep the cylinder's
    cells)."""
    example = _load_example("shape_cylinder_radius")
    problem = example.Problem((40, 22), (10.3, 10.9), steps=120, snapshots=6, precision="FP64FP64")
    observed, _ = problem.velocity(problem.run(4.3).f_0.numpy())
    loss, grad, _ = problem.loss_and_gradient(3.7, observed)
    assert problem.dq.any() and loss > 0
    h = 1e-5
    moved = [problem.loss_and_gradient(3.7 + sign * h, observed)[0] for sign in (1, -1)]
    assert abs((moved[0] - moved[1]) / (2 * h) - grad) <= 1e-6 * abs(grad)


def test_shape_example_recovers_the_radius(tmp_path):
    import json

    # the example's defaults (64x32, 400 steps, radius 3.6 -> 5.3, about 10 s); on a coarser
    # 48x24 grid from 3.1 towards 4.4 L-BFGS-B stalls at 3.14, where a cell flips to solid and
    # the loss jumps (see the example's docstring)
    result = subprocess.run([sys.executable, str(EXAMPLE.parent / "shape_cylinder_radius.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["relative_error"] < 1e-3 and report["final_loss"] < 1e-4 * report["first_loss"]
    for figure in ("fields.png", "history.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mesh_shape_sensitivity_matches_finite_differences(tmp_path):
    """examples/shape_sensitivity_mesh.py on a smaller box: its own check (the largest normal
    sensitivity against central differences of the loss, the vertex moved along its normal)."""
    import json

    result = subprocess.run([sys.executable, str(EXAMPLE.parent / "shape_sensitivity_mesh.py"), "--grid", "24x12x12",
                             "--steps", "40", "--radius", "2.6", "--no-figures", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["cut_links"] > 100 and abs(report["check"]["adjoint"]) > 0
    assert report["check"]["relative_difference"] < 1e-5, report["check"]
