"""The published pre-commit hooks and this repository's own configuration are valid, and the
check hook's command fails on a stale generated module (the failure itself: tests/test_cli.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, path", [("validate-manifest", ".pre-commit-hooks.yaml"),
                                           ("validate-config", ".pre-commit-config.yaml")])
def test_pre_commit_accepts_the_files(command, path):
    result = subprocess.run([sys.executable, "-m", "pre_commit", command, str(ROOT / path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hooks_run_the_cli_on_generator_inputs():
    hooks = {hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["adjointgen-check"]["entry"] == "adjointgen check"
    assert hooks["adjointgen-build"]["entry"] == "adjointgen build"
    assert hooks["adjointgen-check"]["pass_filenames"] is False and hooks["adjointgen-build"]["pass_filenames"] is False
    own = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"][0]
    assert own["entry"] == hooks["adjointgen-check"]["entry"] and own["files"] == hooks["adjointgen-check"]["files"]


def test_check_hook_command_fails_on_an_edited_module(tmp_path):
    target = tmp_path / "d2q9_bgk_fp64fp64.py"
    shutil.copy(ROOT / "generated" / "d2q9_bgk_fp64fp64.py", target)
    target.write_text(target.read_text().replace("fneq_2 = f_0_2 - feq_2", "fneq_2 = f_0_2 + feq_2", 1))
    entry = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]["entry"].split()
    result = subprocess.run([sys.executable, "-m", "adjointgen", *entry[1:], "--config", "D2Q9/BGK/FP64FP64", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "EDITED" in result.stdout and "Fix: adjointgen build" in result.stdout


def test_lint_hook_fails_on_hazards_and_passes_clean_files():
    hooks = {hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    entry = hooks["adjointgen-lint"]["entry"].split()
    assert hooks["adjointgen-lint"].get("pass_filenames", True) and hooks["adjointgen-lint"]["types"] == ["python"]

    def run(*files):
        return subprocess.run([sys.executable, "-m", "adjointgen", *entry[1:], "--velocity-set", "D3Q19", *files],
                              capture_output=True, text=True, timeout=300)

    demo = run(str(ROOT / "examples" / "lint_demo.py"))
    assert demo.returncode == 1
    for rule in ("dynamic-loop", "vector-component-write", "array-read-write", "tape-buffer-reuse"):
        assert f": {rule}" in demo.stdout, rule
    clean = run(*map(str, sorted((ROOT / "generated").glob("*.py"))))
    assert clean.returncode == 0, clean.stdout
