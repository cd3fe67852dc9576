"""forward_save (compiler.plan._save_lines, runtime.step.DifferentiableStep.saves_in_forward): the
forward that copies its input ``f_0`` while reading it. Its copy is f_0 bit for bit and its output
is forward's; a tape recorded with it gives bit for bit the gradients of the wp.clone path
(``step.save_in_forward = False``); modules or masks where the copy would be incomplete (in
place, solid cells) do not have or do not use it; a copy that misses one population is caught."""

import numpy as np
import pytest
import warp as wp

from adjointgen.manifest import forward_kernel_name
from tests.test_tape_step import STEPS, _data, _side, _tape_loop, _with_a_solid_cell

SAVE = forward_kernel_name(save=True)

CASES = [("D2Q9/BGK/FP64FP64", (6, 5)), ("D3Q19/BGK/FP32FP32", (4, 5, 3)),
         ("D2Q9/BGK/FP64FP64/cavity", (7, 6))]  # walls: bounce-back reads f_0 through slots too


def _forwards(side, kernel_name=SAVE, module=None):
    """(f_1 from forward, f_1 from the save variant, its copy, f_0 before) from the test state."""
    step = side.step
    f0, f1, _ = _data(side)

    def inputs(a, b):
        return [a, b, side.bc_mask, side.missing_mask, step.kernel_omega(1.6), 3]

    a, b = wp.array(f0), wp.array(f1)
    step.forward(a, b, side.bc_mask, side.missing_mask, 1.6, 3)
    c, d = wp.array(f0), wp.array(f1)
    saved = wp.empty(c.shape, dtype=c.dtype)
    saved.fill_(np.nan if side.config.is_fp64 else 12345.0)  # every element must be overwritten
    kernel = getattr(module, kernel_name) if module is not None else step.kernel(kernel_name)
    wp.launch(kernel, dim=c.shape[1:], inputs=inputs(c, d) + [saved] + step._residual_argument(None, c.device))
    return b.numpy(), d.numpy(), saved.numpy(), f0, c.numpy()


@pytest.mark.parametrize("label, shape", CASES)
def test_the_copy_is_the_input_and_the_output_is_forwards(label, shape):
    side = _side(label, shape)
    assert side.step.manifest.has(SAVE)
    out, out_save, saved, f0, f0_after = _forwards(side)
    assert np.array_equal(out, out_save)  # bitwise (no NaN in a state)
    assert saved.tobytes() == f0.tobytes()
    assert f0_after.tobytes() == f0.tobytes()  # the input is only read


@pytest.mark.parametrize("label, shape", CASES)
def test_tape_gradients_are_bitwise_the_clone_paths(label, shape, monkeypatch):
    side = _side(label, shape)
    launched = []
    original = side.step.saves_in_forward
    monkeypatch.setattr(side.step, "saves_in_forward", lambda m: launched.append(original(m)) or launched[-1])
    saving = _tape_loop(side, True)
    assert launched == [True] * STEPS
    side.step.save_in_forward = False
    try:
        launched.clear()
        cloning = _tape_loop(side, True)
        assert launched == [False] * STEPS
    finally:
        side.step.save_in_forward = True
    for x, y in zip(saving, cloning):
        assert x.tobytes() == y.tobytes()
    assert np.any(saving[0]) and np.any(saving[2])


def test_solid_cells_use_the_clone_path():
    side = _side(*CASES[0])  # the module has forward_save; only the mask says a cell is kept
    bc_mask = _with_a_solid_cell(side)
    assert side.step.manifest.has(SAVE)
    assert side.step.saves_in_forward(side.bc_mask) and not side.step.saves_in_forward(bc_mask)
    with_save = _tape_loop(side, True, bc_mask=bc_mask)
    side.step.save_in_forward = False
    try:
        without = _tape_loop(side, True, bc_mask=bc_mask)
    finally:
        side.step.save_in_forward = True
    for x, y in zip(with_save, without):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP64FP64/obstacle", (8, 6)),  # solid cells
                                          ("D2Q9/BGK/FP64FP64/channel", (8, 6))])  # ZouHe: f_0 in place, reads f_1
def test_where_the_copy_is_not_provably_complete_there_is_no_save_variant_or_it_is_not_used(label, shape):
    side = _side(label, shape)
    step = side.step
    assert not step.saves_in_forward(side.bc_mask)
    if step.manifest.in_place:
        assert not step.manifest.has(SAVE)


def test_a_copy_missing_one_population_is_caught(tmp_path):
    """Negative control: the generated module with the store of one population's copy removed
    (the copy then misses that population) fails the bitwise comparison."""
    import importlib.util

    side = _side(*CASES[0])
    text = open(side.step.module.__file__).read()
    line = next(l for l in text.splitlines() if l.strip().startswith("saved_f_0[4,"))
    broken = tmp_path / "broken_forward_save.py"
    broken.write_text(text.replace(line + "\n", "", 1))
    spec = importlib.util.spec_from_file_location("broken_forward_save", broken)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, out_save, saved, f0, _ = _forwards(side, module=module)
    assert np.array_equal(out, out_save)
    assert saved.tobytes() != f0.tobytes()
    assert np.array_equal(saved[:4], f0[:4]) and not np.array_equal(saved[4], f0[4])
