"""Building a wheel runs `adjointgen build` first (build_hook/adjointgen_backend.py): a stale or
edited generated module in the tree never reaches the wheel. The wheel is built as `pip install
<checkout>` builds it (an isolated build environment, nothing of this one) and installed into a
fresh virtual environment, where a step is served from the wheel's own generated module."""

from __future__ import annotations

import os
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

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(tmp_path / "dist"), "-q"],
                            cwd=tree, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("adjointgen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = archive.read(f"adjointgen/generated/{MODULE}").decode()
    assert packaged == fresh, "the wheel carries the edited module: the build hook did not regenerate it"
    assert {"adjointgen/tools/lint/rules.py", "adjointgen/templates/module_body.py.j2", "adjointgen/configurations.toml"} <= names
    _use_in_a_fresh_venv(tmp_path, wheel, packaged)


def _use_in_a_fresh_venv(tmp_path, wheel, packaged: str) -> None:
    """Install the wheel alone into a new venv (the dependencies come from this interpreter's site,
    so nothing is downloaded) and run a step there: the package must find its templates and its
    shipped, intact generated module inside the installed wheel, not in this checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    script = (
        "import adjointgen, adjointgen.locations as where\n"
        "from adjointgen.config import Configuration\n"
        "from adjointgen.xlb.support import make_stepper\n"
        f"step = adjointgen.differentiable(make_stepper(Configuration.parse({CONFIG!r}), 'warp', (4, 4)))\n"
        "print(adjointgen.__file__); print(where.templates_dir()); print(step.module.__file__)\n"
    )
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    package, templates, module = result.stdout.strip().splitlines()[-3:]
    site = str(venv)
    assert package.startswith(site) and templates.startswith(site), (package, templates)
    assert module.startswith(site) and module.endswith(f"adjointgen/generated/{MODULE}")
    assert Path(module).read_text() == packaged


def test_backend_asks_for_the_generator_dependencies():
    sys.path.insert(0, str(ROOT / "build_hook"))
    try:
        import adjointgen_backend
    finally:
        sys.path.pop(0)
    requires = adjointgen_backend.get_requires_for_build_wheel()
    assert any(r.startswith("xlb==") for r in requires) and any(r.startswith("warp-lang") for r in requires)
