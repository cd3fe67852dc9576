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
