"""Building a wheel runs `adjointgen build` first (build_hook/adjointgen_backend.py): a stale or
edited generated module in the tree never reaches the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "D2Q9/BGK/FP32FP32"
MODULE = "d2q9_bgk_fp32fp32.py"


def _tracked_copy(target: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_wheel_carries_freshly_generated_modules(tmp_path):
    tree = tmp_path / "tree"
    _tracked_copy(tree)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'\n[tool.adjointgen]\nconfigurations = ["{CONFIG}"]\n')
    module = tree / "generated" / MODULE
    fresh = module.read_text()
    module.write_text(fresh.replace("fneq_2 = f_0_2 - feq_2", "fneq_2 = f_0_2 + feq_2", 1))
    assert module.read_text() != fresh

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path / "dist"), "-q"], cwd=tree, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("adjointgen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = archive.read(f"adjointgen/generated/{MODULE}").decode()
    assert packaged == fresh, "the wheel carries the edited module: the build hook did not regenerate it"
    assert {"adjointgen/tools/lint/rules.py", "adjointgen/templates/module_body.py.j2", "adjointgen/configurations.toml"} <= names


def test_backend_asks_for_the_generator_dependencies():
    sys.path.insert(0, str(ROOT / "build_hook"))
    try:
        import adjointgen_backend
    finally:
        sys.path.pop(0)
    requires = adjointgen_backend.get_requires_for_build_wheel()
    assert any(r.startswith("xlb==") for r in requires) and any(r.startswith("warp-lang") for r in requires)
