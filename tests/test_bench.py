"""`adjointgen bench` runs end to end (here on the CPU, tiny grid): every row, JSON and markdown,
and Warp's tape with its switches agrees with adjointgen's gradient (the row's note)."""

import json
import re

from adjointgen.tools import cli
from adjointgen.tools.bench import ROWS


def test_bench_writes_every_row(tmp_path, capsys):
    assert cli.main(["bench", "--config", "D2Q9/BGK/FP32FP32/cavity", "--size", "8", "--repeats", "2", "--inner", "1",
                     "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    (case,) = results["cases"]
    assert tuple(case["rows"]) == ROWS  # adjoint_fresh too: the cavity's walls are not kept cells
    assert results["device"].lower() == "cpu"
    assert case["rows"]["xlb_forward"]["ratio_to_xlb_forward"] == 1.0
    assert all(row["ms"] > 0 and row["mlups"] > 0 for row in case["rows"].values())
    difference = float(re.search(r"([0-9.e+-]+) \(max relative\)", case["rows"]["tape_backward"]["note"]).group(1))
    assert difference < 1e-5
    assert "| D2Q9/BGK/FP32FP32/cavity | 8x8 | ag_adjoint |" in (tmp_path / "bench.md").read_text()


def test_bench_refuses_unknown_skips(capsys):
    assert cli.main(["bench", "--skip", "warp"]) == 2


def test_bench_rollout_writes_the_plan_and_the_floor(tmp_path, capsys):
    assert cli.main(["bench", "--rollout", "--config", "D2Q9/BGK/FP32FP32", "--size", "16", "--steps", "20",
                     "--snapshots", "3", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "rollout.json").read_text())
    segments, binomial = results["cases"]  # the module has residuals: both plans, in one process
    assert results["device"].lower() == "cpu"
    assert (segments["plan_kind"], segments["segments"], binomial["plan_kind"]) == ("segments", 4, "binomial")
    for case in (segments, binomial):
        assert case["steps"] == 20 and case["snapshots"] == 3
        assert case["forward_steps"] == case["plan_forward_steps"] > 20  # what was planned ran
        assert case["adjoint_kernel"] == "adjoint_fresh" and case["gradient_finite"]
        assert case["floor_s"] > 0 and case["ratio_to_forward"] > 0 and case["gradient_first_s"] > 0
        assert case["max_difference_between_plans"] == 0  # bit for bit on the CPU
    assert segments["ag_forward_residuals_step_ms"] > 0 and segments["ag_adjoint_residuals_step_ms"] > 0
    err = capsys.readouterr().err
    assert "plan 20 steps: 3 snapshots" in err and "plan 20 steps: 4 segments" in err
    markdown = (tmp_path / "rollout.md").read_text()
    assert "| D2Q9/BGK/FP32FP32 | 16x16 | 4 segments | 3 |" in markdown
    assert "| D2Q9/BGK/FP32FP32 | 16x16 | binomial | 3 |" in markdown


def test_the_scaling_runs_time_powers_of_two_and_the_whole_host():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_sharded_rollout import device_counts

    assert device_counts(1) == [1] and device_counts(2) == [1, 2]
    assert device_counts(8) == [1, 2, 4, 8] and device_counts(6) == [1, 2, 4, 6]


def test_sharded_rollout_bench_on_two_host_devices(tmp_path):
    """benchmarks/bench_sharded_rollout.py's plumbing on 2 host CPU devices (XLA's flag has to be
    set before JAX starts: a subprocess): one-device, weak and strong rows, and the strong row's
    gradient equal to the one-device face's bit for bit."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sharded_rollout.py"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, str(script), "--size", "6", "--steps", "4", "--repeats", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "bench_sharded_rollout.json").read_text())
    rows = {(row["scaling"], row["devices"]): row for row in results["rows"]}
    assert set(rows) == {("-", 1), ("weak", 2), ("strong", 2)}
    assert rows[("strong", 2)]["rollout_gradient_vs_face"] == 0.0
    assert rows[("-", 1)]["rollout_gradient_vs_face"] == 0.0
    assert all(row[f"{way}_gradient_ms"] > 0 for row in rows.values() for way in ("step_loop", "rollout"))
    assert "| strong | 2 |" in (tmp_path / "bench_sharded_rollout.md").read_text()
