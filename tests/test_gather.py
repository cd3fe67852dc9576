"""adjoint_gather over a list of cells (``adjoint_gather_listed``, the list marked by
``adjoint_gather_marks``): where the compiler gives it, and that it adds what the grid-wide gather
adds, bit for bit."""

import numpy as np
import pytest
import warp as wp

from adjointgen.config import Configuration
from adjointgen.tools.verify import GeneratedSide, random_state


@pytest.mark.parametrize("label, shape", [("D2Q9/BGK/FP64FP64/cavity", (9, 7)),  # bounce-back walls, an equilibrium lid
                                          ("D2Q9/BGK/FP64FP64/obstacle", (10, 8))])  # and ZouHe, solid cells, a split step
def test_the_listed_gather_equals_the_grid_gather_bit_for_bit(label, shape):
    config = Configuration.parse(label)
    side = GeneratedSide(config, shape)
    step = side.step
    assert step.manifest.slot_count and step.manifest.has("adjoint_gather_listed")
    f0 = random_state(config, shape, 0)
    cotangents = [np.random.default_rng(seed).standard_normal(f0.shape) for seed in (1, 2)]
    results = {}
    step.split_listed = bool(step.manifest.listed_ids)  # a split step: as on a GPU, both lists at once
    for listed in (False, True):
        step.gather_listed = listed
        out = []
        for fresh in (False, True):
            adj_f_0, adj_f_1 = wp.array(np.zeros_like(f0) if fresh else cotangents[0]), wp.array(cotangents[1])
            carry = wp.zeros_like(adj_f_0) if fresh and (step.manifest.in_place or 255 in side.bc_mask.numpy()) else None
            step.adjoint(wp.array(f0), wp.array(side.f1_prepared), side.bc_mask, side.missing_mask, 1.6, 0, adj_f_0,
                         adj_f_1, fresh=fresh, carry=carry)
            out += [adj_f_0.numpy(), adj_f_1.numpy()]
        results[listed] = out
    cells = step._gathered[side.bc_mask]  # the list the listed runs took (once per mask)
    step.gather_listed = step.split_listed = None
    assert all(one.tobytes() == two.tobytes() for one, two in zip(results[False], results[True]))
    # the list holds the cells next to the walls, not the grid
    assert 0 < cells.shape[0] < np.prod(shape)


def test_a_list_missing_a_cell_is_caught():
    """Negative control: the listed gather run over its list less one cell gives another gradient."""
    config = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")
    shape = (9, 7)
    side = GeneratedSide(config, shape)
    step = side.step
    f0 = random_state(config, shape, 0)
    cotangent = np.random.default_rng(2).standard_normal(f0.shape)

    def gradient():
        adj_f_0, adj_f_1 = wp.array(np.zeros_like(f0)), wp.array(cotangent)
        step.adjoint(wp.array(f0), wp.array(side.f1_prepared), side.bc_mask, side.missing_mask, 1.6, 0, adj_f_0, adj_f_1,
                     fresh=True)
        return adj_f_0.numpy()

    step.gather_listed = True
    try:
        reference = gradient()
        cells = step._gathered[side.bc_mask]
        step._gathered[side.bc_mask] = wp.array(cells.numpy()[1:], dtype=wp.int32)
        assert not np.array_equal(gradient(), reference)
    finally:
        step._gathered.pop(side.bc_mask, None)
        step.gather_listed = None
