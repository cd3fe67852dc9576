"""Residuals (compiler.residuals, the plans' _residuals variants, runtime.step's tape path): the
fewest forward values the state-only adjoint needs. The cut is a smallest one, nearest the loads,
of values the forward and the replay compute alike; BGK keeps its density and momentum sums; the
residual replay reads no state; steps where no cut pays have no such kernels; XLB's loop recorded
on a tape with residuals gives bit for bit the gradients of the input path (fused or not, solid
cells, the cavity's slots), keeps residual_count values per cell, and falls back to the input
where omega's gradient is asked for; a wrong residual is caught."""

import numpy as np
import pytest
import sympy
import warp as wp

from adjointgen.compiler.ir import Assign, Load, Origin
from adjointgen.compiler.residuals import _minimum_cut
from adjointgen.runtime.step import _TapeRecord
from tests.test_tape_step import _data, _side, _weighted_sum, _with_a_solid_cell

STEPS = 5
HERE = Origin("test")


def _load(name, population):
    return Load(sympy.Symbol(name), "f_0", (population, 0, 0, 0), HERE)


def _assign(name, expr):
    return Assign(sympy.Symbol(name), sympy.sympify(expr), HERE)


def test_the_cut_is_a_smallest_one_nearest_the_loads():
    # three loads summed into s, from which t and u are computed: one value (s) stands for all
    body = [_load("a", 0), _load("b", 1), _load("c", 2), _assign("s", "a + b + c"), _assign("t", "2*s"),
            _assign("u", "3*s")]
    names = {"s", "t", "u"}
    assert _minimum_cut(body, {"t", "u"}, {"f_0"}, names) == {"s"}
    # two values needed and two sums between them and the loads: of the cuts of two ({x, y}, {x, z}),
    # the one nearest the loads
    body = [_load("a", 0), _load("b", 1), _assign("x", "a + b"), _assign("y", "a - b"), _assign("z", "x*y")]
    assert _minimum_cut(body, {"z", "x"}, {"f_0"}, {"x", "y", "z"}) == {"x", "y"}
    # a used value that only a load can give: no cut of cuttable values
    assert _minimum_cut(body, {"z", "a"}, {"f_0"}, {"x", "y", "z"}) is None
    # values that may not be stored are passed through: the cut moves past them
    assert _minimum_cut(body, {"z"}, {"f_0"}, {"z"}) == {"z"}


@pytest.mark.parametrize("label, shape, count", [("D2Q9/BGK/FP64FP64", (6, 5), 3), ("D3Q19/BGK/FP32FP32", (4, 5, 3), 4),
                                                 ("D2Q9/BGK/FP64FP64/cavity", (7, 6), 3)])
def test_bgk_keeps_the_density_and_the_momentum_sums(label, shape, count):
    step = _side(label, shape).step
    assert step.manifest.residual_count == count and step.manifest.residuals
    text = open(step.module.__file__).read()
    stores = [line.strip() for line in text.splitlines() if line.strip().startswith("residuals[")]
    kept = [line.split(" = ")[1] for line in stores]
    assert len(kept) == count and kept[0].startswith("rho") and all(name.startswith("u_") for name in kept[1:])
    # the residual replay (between its comment and the else of the replaying one) loads no state
    start = text.index("# from the residuals forward_residuals stored")
    replay = text[start:text.index("        else:\n", start)]
    assert "f_0[" not in replay and "f_1[" not in replay and replay.count("residuals[") == count


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP64FP64/channel", (8, 6)),  # ZouHe: f_0 in place
                                          ("D2Q9/KBC/FP64FP64", (6, 5))])  # the stabiliser needs as much as the input
def test_where_no_cut_pays_there_are_no_residual_kernels(label, shape):
    manifest = _side(label, shape).step.manifest
    assert manifest.residual_count == 0 and not manifest.residuals
    assert not any("residuals" in name for name in manifest.kernels)


def _tape(side, residuals, fusion=True, bc_mask=None, omega=1.6):
    """XLB's loop on a tape from the test state, omega a number (no gradient asked for) unless given
    as an array; the gradients of the initial f_0 and f_1, the records' residual arrays."""
    step = side.step
    f0, f1, (c0, c1, _) = _data(side)
    first, second = wp.array(f0, requires_grad=True), wp.array(f1, requires_grad=True)
    loss = wp.zeros(1, dtype=first.dtype, requires_grad=True)
    step.tape_residuals, step.state_kernels, step.tape_fusion = residuals, True, fusion
    tape = wp.Tape()
    f_0, f_1 = first, second
    try:
        with tape:
            for t in range(STEPS):
                f_0, f_1 = step(f_0, f_1, side.bc_mask if bc_mask is None else bc_mask, side.missing_mask, omega, t)
                f_0, f_1 = f_1, f_0
            wp.launch(_weighted_sum, dim=f_0.shape, inputs=[f_0, wp.array(c0), loss])
            wp.launch(_weighted_sum, dim=f_1.shape, inputs=[f_1, wp.array(c1), loss])
        kept = [record.residuals for record in tape.launches if isinstance(record, _TapeRecord)]
        tape.backward(loss=loss)
    finally:
        step.tape_residuals, step.state_kernels, step.tape_fusion = None, None, True
    return first.grad.numpy().copy(), second.grad.numpy().copy(), kept


@pytest.mark.parametrize("label, shape, fusion, solid", [
    ("D2Q9/BGK/FP64FP64", (6, 5), True, False), ("D2Q9/BGK/FP64FP64", (6, 5), False, False),
    ("D2Q9/BGK/FP64FP64", (6, 5), True, True),  # a kept cell: never fused, accumulating residual adjoints
    ("D3Q19/BGK/FP32FP32", (4, 5, 3), True, False),
    ("D2Q9/BGK/FP64FP64/cavity", (7, 6), True, False)])  # the walls' slots and adjoint_gather
def test_a_tape_with_residuals_gives_the_input_paths_gradients_bit_for_bit(label, shape, fusion, solid):
    side = _side(label, shape)
    bc_mask = _with_a_solid_cell(side) if solid else None
    g0, g1, kept = _tape(side, True, fusion, bc_mask)
    h0, h1, none = _tape(side, False, fusion, bc_mask)
    assert g0.tobytes() == h0.tobytes() and g1.tobytes() == h1.tobytes() and np.any(g0)
    grid = tuple(side.bc_mask.shape[1:])
    assert [k.shape for k in kept] == [(side.step.manifest.residual_count, *grid)] * STEPS
    assert none == [None] * STEPS


def test_asking_for_omegas_gradient_keeps_the_input():
    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    omega = wp.array([1.6], dtype=wp.float64, requires_grad=True)
    g0, _, kept = _tape(side, True, omega=omega)
    assert kept == [None] * STEPS and np.any(omega.grad.numpy())
    assert g0.tobytes() == _tape(side, True)[0].tobytes()  # the state gradient is the same either way


def test_recorded_steps_keep_residual_count_values_per_cell():
    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    side.step.saved_buffers.clear()
    _, _, kept = _tape(side, True)
    del kept
    import gc

    gc.collect()  # the tape is gone: its records give their arrays back
    shapes = [key[0] for key, arrays in side.step.saved_buffers._free.items() for _ in arrays]
    assert shapes and all(shape == (3, 6, 5, 1) for shape in shapes)


def test_a_wrong_residual_is_caught(tmp_path):
    """Negative control: forward_residuals with one stored value replaced (the density where a
    momentum sum belongs) gives an adjoint that differs from the input path's; the true one does not."""
    import importlib.util

    side = _side("D2Q9/BGK/FP64FP64", (6, 5))
    step = side.step
    text = open(step.module.__file__).read()
    line = next(l for l in text.splitlines() if l.strip().startswith("residuals[1,"))
    broken = tmp_path / "broken_residuals.py"
    broken.write_text(text.replace(line, line.split(" = ")[0] + " = rho_7", 1))
    spec = importlib.util.spec_from_file_location("broken_residuals", broken)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    f0, f1, (c0, _, _) = _data(side)
    grid = f0.shape[1:]

    def adjoint(residual_kernel=None):
        adj_0, adj_1 = wp.zeros(f0.shape, dtype=wp.float64), wp.array(c0)
        kept = None
        if residual_kernel is not None:
            kept = wp.zeros((3, *grid), dtype=wp.float64)
            wp.launch(residual_kernel, dim=grid, inputs=[wp.array(f0), wp.array(f1), side.bc_mask, side.missing_mask,
                                                         1.6, 0, wp.array(f0), kept])
        step.state_kernels = True
        try:
            step.adjoint(wp.array(f0), wp.array(f1), side.bc_mask, side.missing_mask, 1.6, 0, adj_0, adj_1, fresh=True,
                         residuals=kept)
        finally:
            step.state_kernels = None
        return adj_0.numpy()

    reference = adjoint()
    assert adjoint(step.kernel("forward_residuals")).tobytes() == reference.tobytes()
    assert not np.array_equal(adjoint(module.forward_residuals), reference)
