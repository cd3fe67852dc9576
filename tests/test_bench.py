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
    (case,) = results["cases"]
    assert results["device"].lower() == "cpu" and case["steps"] == 20 and case["snapshots"] == 3
    assert case["forward_steps"] == case["plan_forward_steps"] > 20  # what was planned ran
    assert case["adjoint_kernel"] == "adjoint_fresh" and case["gradient_finite"]
    assert case["floor_s"] > 0 and case["ratio_to_forward"] > 0
    assert "plan 20 steps: 3 snapshots" in capsys.readouterr().err
    assert "| D2Q9/BGK/FP32FP32 | 16x16 | 3 |" in (tmp_path / "rollout.md").read_text()
