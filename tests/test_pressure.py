"""compiler.pressure: the adjoint's live values, and where the accumulating variants read the
gradients they add to (up front, or after the reverse sweep where the sweep needs the registers)."""

from __future__ import annotations

import importlib.util

import numpy as np
import warp as wp

from adjointgen.compiler import pressure
from adjointgen.compiler.pipeline import generate
from tests.test_tape_step import _data, _side

_LATE = "# needs the registers) and before any write"


def test_a_value_is_live_from_its_definition_to_its_last_read():
    steps = [("a", set()), ("b", set()), ("c", {"a"}), ("d", {"c", "b"}), (None, {"d"})]
    assert pressure.peak_live(steps) == 2  # {a, b}, then {c, b}, then {d}
    # a value read again at the end stays live through everything between
    assert pressure.peak_live(steps[:-1] + [(None, {"d", "a"})]) == 3


def test_an_update_that_adds_keeps_its_target_live():
    # t = x; t = t + y: x dies at the first step, t lives on
    assert pressure.peak_live([("x", set()), ("y", set()), ("t", {"x"}), ("t", {"t", "y"}), (None, {"t"})]) == 2


def test_a_small_sweep_reads_up_front():
    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    text = open(side.step.module.__file__).read()
    assert _LATE not in text and "so they are all read here, up front" in text  # about 40 values at the peak


def _module(text: str, path, name: str):
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accumulate(side, module, f0, f1, adj_0, adj_1):
    """The accumulating adjoint of ``module`` launched once: (adj_f_0, adj_f_1) after it."""
    a0, a1 = wp.array(adj_0), wp.array(adj_1)
    arrays = {"f_0": wp.array(f0), "f_1": wp.array(f1), "bc_mask": side.bc_mask, "missing_mask": side.missing_mask,
              "omega_in": wp.float64(1.6), "timestep": 0, "adj_f_0": a0, "adj_f_1": a1,
              "adj_omega_cells": wp.zeros(f0.shape[1:], dtype=wp.float64),
              "residuals": wp.zeros((1, *f0.shape[1:]), dtype=wp.float64)}  # (read by the _residuals variants only)
    wp.launch(module.adjoint, dim=f0.shape[1:], inputs=[arrays[arg.label] for arg in module.adjoint.adj.args])
    return a0.numpy(), a1.numpy()


def test_reads_after_the_sweep_give_the_same_bits_and_a_misplaced_read_is_caught(tmp_path, monkeypatch):
    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    f0, f1, (c0, c1, _) = _data(side)
    shipped = open(side.step.module.__file__).read()
    monkeypatch.setattr(pressure, "OTHER_REGISTERS", pressure.REGISTERS)  # no room: every module reads late
    late = generate(side.stepper, side.config)
    assert _LATE in late and _LATE not in shipped
    assert late.index(_LATE) > late.index("# reverse sweep") and late.index(_LATE) < late.index("        # writes")
    reference = _accumulate(side, side.step.module, f0, f1, c0, c1)  # adj_f_0 not zero: the reads matter
    moved = _accumulate(side, _module(late, tmp_path / "late_reads.py", "late_reads"), f0, f1, c0, c1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(moved, reference))
    # negative control: one gradient read from a neighbour's element instead of its own
    read = next(line for line in late.splitlines() if line.strip().startswith("old_1 = adj_f_0[1,"))
    wrong = late.replace(read, read.replace("adj_f_0[1,", "adj_f_0[2,"), 1)
    broken = _accumulate(side, _module(wrong, tmp_path / "wrong_reads.py", "wrong_reads"), f0, f1, c0, c1)
    assert not np.array_equal(broken[0], reference[0])


def test_tight_modules_clear_the_outputs_in_a_loop_and_a_short_loop_is_caught(tmp_path, monkeypatch):
    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    f0, f1, (c0, c1, _) = _data(side)
    shipped = open(side.step.module.__file__).read()
    monkeypatch.setattr(pressure, "OTHER_REGISTERS", pressure.REGISTERS)  # every module tight
    late = generate(side.stepper, side.config)
    loop = "for population in range(wp.min(adj_f_1.shape[0], 9)):"
    assert loop in late and loop not in shipped and "adj_f_1[3, i, j, k] = wp.float64(0.0)" in shipped
    assert "adj_f_1[3, i, j, k] = wp.float64(0.0)" not in late
    reference = _accumulate(side, side.step.module, f0, f1, c0, c1)
    looped = _accumulate(side, _module(late, tmp_path / "looped.py", "looped"), f0, f1, c0, c1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(looped, reference))
    assert np.count_nonzero(c1) > 0 and np.count_nonzero(reference[1]) < np.count_nonzero(c1)  # the seeds were cleared
    # negative control: the loop one population short leaves a seed uncleared
    short = _accumulate(side, _module(late.replace(loop, loop.replace(", 9)", ", 8)")), tmp_path / "short.py", "short"),
                        f0, f1, c0, c1)
    assert not np.array_equal(short[1], reference[1])
