"""The pieces of the sharded rollout's overlapped and split steps that need no kernel: the edge
masks, the edge views, which steps may run overlapped, and the per-device lists of a split step's
cells (the rollouts themselves are in test_sharding.py, on 4 host devices)."""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np

from adjointgen.runtime import sharding
from adjointgen.runtime.jax_face import listed_cells
from adjointgen.runtime.overlap import EdgeMasks, edge_views, refusal


def _face(listed_ids=(), writes_f_0=False, slot_count=0, carried=True):
    manifest = SimpleNamespace(listed_ids=listed_ids, writes_f_0=writes_f_0, slot_count=slot_count)
    return SimpleNamespace(step=SimpleNamespace(manifest=manifest), carried=object() if carried else None)


def test_edge_masks_keep_the_edge_planes_in_one_and_everything_else_in_the_other():
    padded = np.full((1, 7, 2, 1), 255, dtype=np.uint8)
    padded[0, 1:-1] = np.arange(1, 6, dtype=np.uint8)[:, None, None]  # planes 1..5 hold ids 1..5
    masks = EdgeMasks.of(jnp.asarray(padded))
    interior, edges = np.asarray(masks.interior)[0, :, 0, 0], np.asarray(masks.edges)[0, :, 0, 0]
    assert interior.tolist() == [255, 255, 2, 3, 4, 255, 255]
    assert edges.tolist() == [255, 1, 255, 255, 255, 5, 255]


def test_edge_views_hold_each_edge_plane_in_the_middle():
    assert edge_views(7) == (slice(0, 3), slice(4, 7))


def test_which_steps_run_overlapped():
    assert refusal(_face()) is None
    assert "in place" in refusal(_face(writes_f_0=True))
    assert "slots" in refusal(_face(slot_count=8))
    assert "carry" in refusal(_face(carried=False))


def test_device_lists_are_in_padded_slab_coordinates_and_padded_with_a_halo_cell():
    mask = np.zeros((1, 8, 3, 1), dtype=np.uint8)
    mask[0, 0, 1, 0] = mask[0, 3, 2, 0] = 2  # device 0 (planes 0-3): two cells
    mask[0, 7, 0, 0] = 3  # device 1 (planes 4-7): one cell
    mask[0, 5, 1, 0] = 9  # not a listed id
    face = _face(listed_ids=(2, 3))
    assert listed_cells(face, mask).tolist() == [[0, 1, 0], [3, 2, 0], [7, 0, 0]]
    rows = sharding._device_lists(face, mask, 2).reshape(2, 2, 3)
    assert rows[0].tolist() == [[1, 1, 0], [4, 2, 0]]  # i + 1: the slab's first plane is 1
    assert rows[1].tolist() == [[4, 0, 0], [0, 0, 0]]  # 7 - 4 + 1; then the halo cell (kept: skipped)
    assert sharding._device_lists(_face(), mask, 2) is None  # not a split step
    assert sharding._device_lists(face, np.zeros_like(mask), 2) is None  # no listed cell
