"""Reused pass results: the same text as running the passes, within a run and from the cache."""

import libcst as cst
import pytest

from adjointgen.compiler import pipeline
from adjointgen.compiler.frontend import stepper_kernel
from adjointgen.compiler.passes import runs
from adjointgen.compiler.passes.runs import same_structure
from adjointgen.config import Configuration
from adjointgen.runtime.identities import CachedRuns
from adjointgen.xlb.support import make_stepper

# ZouHe inlet and outlet: two equilibria and two sets of helper functions (with fresh names)
CHANNEL = Configuration.parse("D2Q9/BGK/FP64FP64/channel")


def _kernel(config=CHANNEL):
    return stepper_kernel(make_stepper(config, "warp", (6, 5)))


def _codes(processed) -> dict:
    return {symbol: module.code for symbol, (_, module) in processed.modules.items()}


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = pipeline.run_passes
    monkeypatch.setattr(pipeline, "run_passes", lambda ctx: calls.append(ctx.functional.symbol) or real(ctx))
    return calls


@pytest.fixture(scope="module")
def without_reuse():
    patch = pytest.MonkeyPatch()
    patch.setattr(pipeline, "reuse", lambda ctx, candidates: None)
    try:
        return pipeline.process_functionals(_kernel())
    finally:
        patch.undo()


def test_reuse_within_a_run_gives_the_passes_text(without_reuse, counted):
    processed = pipeline.process_functionals(_kernel())
    assert len(counted) < len(processed.modules)  # some functional was reused
    reused = set(processed.modules) - set(counted)
    assert any(name.endswith("_2") for name in reused)
    assert _codes(processed) == _codes(without_reuse)
    assert processed.record == without_reuse.record and processed.exit_guards == without_reuse.exit_guards


def test_reuse_from_the_cache_gives_the_passes_text(without_reuse, counted, tmp_path, monkeypatch):
    monkeypatch.setenv("ADJOINTGEN_CACHE_DIR", str(tmp_path))
    pipeline.process_functionals(_kernel(), store=CachedRuns())
    counted.clear()
    again = pipeline.process_functionals(_kernel(), store=CachedRuns())
    assert counted == []  # every functional from the cache
    assert _codes(again) == _codes(without_reuse) and again.record == without_reuse.record
    fp32 = CHANNEL.with_precision("FP32FP32")
    kept = pipeline.process_functionals(_kernel(fp32), store=CachedRuns())
    assert "QuadraticEquilibrium_functional" in counted  # its typed constants differ: run again
    assert _codes(kept) == _codes(pipeline.process_functionals(_kernel(fp32)))


def test_a_damaged_cache_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("ADJOINTGEN_CACHE_DIR", str(tmp_path))
    processed = pipeline.process_functionals(_kernel(), store=CachedRuns())
    functional = next(iter(processed.modules.values()))[0]
    stamp, lifted = runs.Stamp.of("", functional), ("parameters: ",)
    path = CachedRuns.path(stamp, lifted)
    assert CachedRuns().candidates(stamp, lifted)
    path.write_text("[{\"stamp\": 1}")
    assert CachedRuns().candidates(stamp, lifted) == []


def test_same_structure_ignores_formatting_but_not_meaning():
    built = cst.parse_module("x = f(a, b)\n")
    call = built.body[0].body[0].value
    listed = built.with_deep_changes(call, args=[cst.Arg(cst.Name("a")), cst.Arg(cst.Name("b"))])  # list, default commas
    assert listed.code == "x = f(a, b)\n" and same_structure(cst.parse_module(listed.code), listed)
    assert same_structure(cst.parse_module("x = f(a, b)\n"), built)
    product = cst.parse_module("x = a * b\n")
    wrong = product.with_deep_changes(product.body[0].body[0].value,
                                      right=cst.BinaryOperation(cst.Name("b"), cst.Add(), cst.Name("c")))
    assert wrong.code == "x = a * b + c\n"  # the text says (a * b) + c, the tree a * (b + c)
    assert not same_structure(cst.parse_module(wrong.code), wrong)
