"""Loading generated modules (adjointgen/runtime/modules.py, adjointgen/manifest.py): an edited or
damaged file is never used, a missing one is generated into the cache, the manifest is checked."""

import logging
import shutil

import pytest

import adjointgen
from adjointgen import locations
from adjointgen.config import Configuration
from adjointgen.errors import DamagedModule
from adjointgen.manifest import Manifest, body_sha256, check_body, split_generated
from adjointgen.runtime.modules import load_checked
from adjointgen.xlb.support import make_stepper

D2Q9_32 = Configuration.parse("D2Q9/BGK/FP32FP32")
NAME = f"{D2Q9_32.name}.py"
# one adjoint line of the shipped module, and the same line negated (the edit of the trust issue)
ADJOINT_LINE = "adj_f_0_8 = adj_f_0_8 + adj_fneq_8"
NEGATED = "adj_f_0_8 = -(adj_f_0_8 + adj_fneq_8)"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A generated/ folder of one intact copy of the D2Q9 module, and an empty cache."""
    folder = tmp_path / "generated"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    shutil.copy(locations.generated_dir() / NAME, folder / NAME)
    monkeypatch.setattr(locations, "generated_dir", lambda: folder)
    monkeypatch.setenv("ADJOINTGEN_CACHE_DIR", str(tmp_path / "cache"))
    return folder / NAME


def _cached_files(tmp_path):
    return sorted((tmp_path / "cache").rglob(f"{D2Q9_32.name}_*.py"))


def test_an_intact_shipped_module_is_used(shipped, tmp_path):
    step = adjointgen.differentiable(make_stepper(D2Q9_32, "warp", (4, 4)))
    assert step.module.__file__ == str(shipped) and not _cached_files(tmp_path)
    assert step.manifest.configuration == D2Q9_32.label and step.manifest.has("adjoint_fresh")


def test_an_edited_shipped_module_is_never_used(shipped, tmp_path, caplog):
    original = shipped.read_text()
    assert original.count(ADJOINT_LINE) >= 1
    shipped.write_text(original.replace(ADJOINT_LINE, NEGATED, 1))
    with caplog.at_level(logging.WARNING, logger="adjointgen"):
        step = adjointgen.differentiable(make_stepper(D2Q9_32, "warp", (4, 4)))
    message = " ".join(r.getMessage() for r in caplog.records)
    assert str(shipped) in message and "edited or damaged" in message
    assert f"adjointgen build --config {D2Q9_32.label}" in message
    (cached,) = _cached_files(tmp_path)
    assert step.module.__file__ == str(cached)
    assert cached.read_text() == original  # regenerated from the same sources: the intact text, not the edit


def test_a_missing_module_is_generated_into_the_cache_with_a_log_line(shipped, tmp_path, caplog):
    shipped.unlink()
    with caplog.at_level(logging.WARNING, logger="adjointgen"):
        step = adjointgen.differentiable(make_stepper(D2Q9_32, "warp", (4, 4)))
    assert any("no generated module for D2Q9/BGK/FP32FP32" in r.getMessage() for r in caplog.records)
    (cached,) = _cached_files(tmp_path)
    assert step.module.__file__ == str(cached)
    assert 'wp.set_module_options({"enable_backward": False})' in cached.read_text()


def test_a_cache_module_cut_short_is_regenerated(shipped, tmp_path, caplog):
    shipped.unlink()
    stepper = make_stepper(D2Q9_32, "warp", (4, 4))
    adjointgen.differentiable(stepper)
    (cached,) = _cached_files(tmp_path)
    whole = cached.read_text()
    cached.write_text(whole[:3000])
    with caplog.at_level(logging.WARNING, logger="adjointgen"):
        step = adjointgen.differentiable(stepper)
    assert any(str(cached) in r.getMessage() and "regenerating" in r.getMessage() for r in caplog.records)
    assert cached.read_text() == whole and step.module.__file__ == str(cached)
    assert not list(cached.parent.glob("*.tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize("damage, expected", [
    (lambda text: text.replace(ADJOINT_LINE, NEGATED, 1), "edited or damaged"),
    (lambda text: text[:3000], "edited or damaged"),
    (lambda text: split_generated(text)[1], "no adjointgen header"),
])
def test_check_body_rejects_edits_truncation_and_missing_headers(shipped, damage, expected):
    check_body(shipped)  # intact
    shipped.write_text(damage(shipped.read_text()))
    with pytest.raises(DamagedModule, match=expected):
        check_body(shipped)


def _rehashed(text: str, body: str) -> str:
    """``text``'s header with ``body`` and a body hash that matches it (a consistent but foreign file)."""
    recorded, old_body = split_generated(text)
    header = text[: len(text) - len(old_body)]
    return header.replace(recorded, body_sha256(body)) + body


def test_a_module_without_a_valid_manifest_is_refused(shipped):
    text = shipped.read_text()
    body = split_generated(text)[1]
    shipped.write_text(_rehashed(text, body.replace('"slot_count": 0,', '', 1)))
    with pytest.raises(DamagedModule, match="MANIFEST must have exactly the keys"):
        load_checked(shipped, "adjointgen_test_without_slot_count")
    shipped.write_text(_rehashed(text, body.replace('"forward",', '"forward",\n        "adjoint_missing",', 1)))
    with pytest.raises(DamagedModule, match="does not define: adjoint_missing"):
        load_checked(shipped, "adjointgen_test_extra_kernel")


def test_the_manifest_round_trips_through_its_source():
    manifest = Manifest(configuration="D2Q9/BGK/FP32FP32", program_sha256="0" * 64, source_sha256={"a": "1"},
                        kernels=("forward", "adjoint"), parameters=("omega",), slot_count=2, gather_into=("f_0",),
                        in_place=(), overwritten_inputs=("f_1",))
    namespace = {}
    exec(manifest.to_source(), namespace)
    assert Manifest.from_mapping(namespace["MANIFEST"], "test") == manifest
    assert manifest.reads_f_1 and manifest.adjoint_kernel(fresh=False, state_only=False) == "adjoint"
    with pytest.raises(KeyError, match="no adjoint_fresh kernel"):
        manifest.adjoint_kernel(fresh=True, state_only=False)
    with pytest.raises(DamagedModule, match="slot_count"):
        Manifest.from_mapping(dict(namespace["MANIFEST"], slot_count="2"), "test")


def test_two_processes_generating_the_same_module_both_get_it_whole(shipped, tmp_path):
    """Two interpreters generate the missing module at once; both load a whole, checked file."""
    import subprocess
    import sys

    shipped.unlink()
    script = (
        "import adjointgen, adjointgen.locations as l, pathlib, sys\n"
        f"l.generated_dir = lambda: pathlib.Path({str(shipped.parent)!r})\n"
        "from adjointgen.xlb.support import make_stepper\n"
        "from adjointgen.config import Configuration\n"
        "step = adjointgen.differentiable(make_stepper(Configuration.parse('D2Q9/BGK/FP32FP32'), 'warp', (4, 4)))\n"
        "print(step.module.__file__)\n"
    )
    env = dict(__import__("os").environ, ADJOINTGEN_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    (cached,) = _cached_files(tmp_path)
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {str(cached)}
    check_body(cached)
    assert not [path for path in cached.parent.iterdir() if path.name.endswith(".tmp")]
