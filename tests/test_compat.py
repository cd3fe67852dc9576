import subprocess
import sys


def test_xlb_imports_on_current_warp_only_through_the_adapter():
    code = (
        "import warp, warp.utils\n"
        "assert not hasattr(warp.utils, 'ScopedTimer') or True\n"
        "from adjointgen.xlb import compat\n"
        "shims = compat.apply()\n"
        "assert compat.apply() == shims  # idempotent\n"
        "import xlb\n"
        "from xlb.operator.stepper import IncompressibleNavierStokesStepper\n"
        "print(','.join(shims))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    import warp as wp

    expected = {"wp.vec", "wp.mat"} if not hasattr(wp, "vec") or wp.vec.__module__ == "adjointgen.xlb.compat" else set()
    assert expected <= set(result.stdout.strip().splitlines()[-1].split(","))


def test_without_the_adapter_xlb_fails_to_import_on_this_warp():
    """Guards the reason the adapter exists; if a future XLB or Warp fixes it, this says so."""
    result = subprocess.run([sys.executable, "-c", "import xlb"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and ("ScopedTimer" in result.stderr or "vec" in result.stderr)


def _python(code, cwd=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_import_adjointgen_then_xlb_works_and_keeps_names_warp_has():
    code = (
        "import warp, warp.utils\n"
        "mine = object()\n"
        "warp.mat = mine  # a name present before adjointgen: never overridden\n"
        "import adjointgen, xlb\n"
        "from xlb.operator.stepper import IncompressibleNavierStokesStepper\n"
        "from adjointgen.xlb import compat\n"
        "assert warp.mat is mine and 'wp.mat' not in compat.applied_shims(), compat.applied_shims()\n"
        "assert warp.utils.ScopedTimer is warp.ScopedTimer\n"
        "assert compat.apply() == compat.applied_shims()  # idempotent: nothing re-bound twice\n"
        "print('ok')\n"
    )
    result = _python(code)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr


def test_a_failed_import_xlb_before_adjointgen_is_repaired_with_a_message():
    code = (
        "try:\n"
        "    import xlb\n"
        "except ImportError as exc:\n"
        "    print('first import failed:', exc)\n"
        "import adjointgen, xlb\n"
        "print('xlb.init' if hasattr(xlb, 'init') else 'broken')\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "first import failed" in result.stdout and result.stdout.strip().endswith("xlb.init")
    assert "an earlier `import xlb` failed" in result.stderr and "Import adjointgen before xlb" in result.stderr


def test_an_xlb_that_still_fails_gets_a_message_naming_the_fix(tmp_path):
    package = tmp_path / "xlb"
    package.mkdir()
    (package / "part.py").write_text("")
    (package / "__init__.py").write_text("import xlb.part\nraise ImportError('broken on purpose')\n")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "try:\n"
        "    import xlb\n"
        "except ImportError:\n"
        "    pass\n"
        "import adjointgen\n"
    )
    result = _python(code)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: an earlier `import xlb` failed") and "broken on purpose" in message
    assert "put `import adjointgen` before `import xlb`" in message
