"""The lint on XLB 0.3.1's installed sources (the two failure causes of FINDINGS section 2) and on
adjointgen's own generated modules (nothing to report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adjointgen.tools.cli import main
from adjointgen.tools.lint import lint

XLB_PARTS = ["xlb.operator.collision", "xlb.operator.equilibrium", "xlb.operator.macroscopic",
             "xlb.operator.stream", "xlb.operator.boundary_condition", "xlb.operator.stepper.nse_stepper"]
LOOP_FILES = ["collision/bgk.py", "equilibrium/quadratic_equilibrium.py", "macroscopic/zero_moment.py",
              "macroscopic/first_moment.py", "stream/stream.py"]
GENERATED = Path(__file__).resolve().parents[2] / "generated"


@pytest.fixture(scope="module", params=["D3Q19", "D3Q27"])
def xlb_3d(request):
    return request.param, lint(XLB_PARTS, velocity_set=request.param)


def _where(result, rule):
    return {(f.path.split("xlb/operator/")[-1], f.function) for f in result.findings if f.rule == rule}


def test_dynamic_loops_of_xlb_operators_in_3d(xlb_3d):
    velocity_set, result = xlb_3d
    q = int(velocity_set[3:])
    flagged = {path for path, _ in _where(result, "dynamic-loop")}
    for expected in LOOP_FILES:
        assert expected in flagged, f"{expected} not flagged under {velocity_set}"
    trips = {f.details["trip_count"] for f in result.findings if f.rule == "dynamic-loop" and f.path.endswith("bgk.py")}
    assert trips == {q}


def test_vector_component_writes_in_xlb_boundary_conditions(xlb_3d):
    _, result = xlb_3d
    flagged = {path for path, _ in _where(result, "vector-component-write")}
    # helper_functions_bc.py holds ZouHe's and Regularized's non-equilibrium bounce-back
    for bc in ("bc_halfway_bounce_back.py", "helper_functions_bc.py", "bc_extrapolation_outflow.py", "bc_grads_approximation.py"):
        assert f"boundary_condition/{bc}" in flagged, bc


def test_xlb_stepper_early_return_and_in_place_boundary_writes(xlb_3d):
    _, result = xlb_3d
    assert ("stepper/nse_stepper.py", "_construct_warp.kernel") in _where(result, "early-return")
    # the stepper writes boundary data back into f_0 (apply_aux_recovery_bc) and reads f_0 to stream
    read_write = {(f.details["array"], f.function) for f in result.findings
                  if f.rule == "array-read-write" and f.path.endswith("nse_stepper.py")}
    assert ("f_0", "_construct_warp.kernel") in read_write


def test_xlb_2d_loops_are_unrolled():
    result = lint(["xlb.operator.collision.bgk", "xlb.operator.macroscopic", "xlb.operator.stream"], velocity_set="D2Q9")
    assert [f for f in result.findings if f.rule == "dynamic-loop"] == []


def test_generated_modules_report_nothing(capsys):
    modules = sorted(GENERATED.glob("*.py"))
    assert len(modules) >= 7
    result = lint([str(GENERATED)], velocity_set="D3Q27")
    assert result.findings == [] and result.suppressed == []
    assert result.backward_disabled > 0  # their kernels are the explicit adjoints, not Warp's
    assert main(["lint", str(GENERATED), "--velocity-set", "D3Q19"]) == 0


def test_module_targets_are_found_without_importing_them():
    code = ("import sys; from adjointgen.tools.lint.sources import collect; files = collect(['xlb']); "
            "assert len(files) > 50; assert 'xlb' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_formats_and_exit_codes(tmp_path, capsys):
    snippet = tmp_path / "s.py"
    snippet.write_text("import warp as wp\n\n@wp.kernel\ndef k(x: wp.array(dtype=float)):\n    i = wp.tid()\n"
                       "    x[i] = x[i] * 2.0\n")
    assert main(["lint", str(snippet), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    (finding,) = report["findings"]
    assert (finding["rule"], finding["line"], finding["column"]) == ("array-read-write", 6, 5)
    assert main(["lint", str(snippet)]) == 1
    text = capsys.readouterr().out
    assert f"{snippet}:6:5: array-read-write" in text or "s.py:6:5: array-read-write" in text
    assert "fix:" in text and "backward:" in text
    assert main(["lint", str(snippet), "--select", "dynamic-loop"]) == 0
    assert main(["lint", str(tmp_path / "missing.py")]) == 2
    assert main(["lint", str(snippet), "--select", "no-such-rule"]) == 2
    assert main(["lint", "--list-rules"]) == 0
    assert "tape-buffer-reuse" in capsys.readouterr().out
