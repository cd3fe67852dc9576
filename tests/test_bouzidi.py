"""The interpolated wall (BouzidiBounceBackBC, a field with one wall distance per lattice link):
rows against XLB-JAX and FP64 finite differences; a planted wrong wall-distance adjoint is
rejected; q = 1/2 everywhere is XLB's own halfway bounce-back; the JAX face takes the per-link
field; fields with components are declared and read only as documented."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.errors import ConfigurationError, RuntimeArgumentError
from adjointgen.manifest import body_sha256, split_generated
from adjointgen.runtime.modules import load_checked
from adjointgen.tools.verify import (STEPS, TOLERANCES, GeneratedSide, default_shape, random_state, verify_configuration,
                                     xlb_warp_forward)

D2Q9_64 = Configuration.parse("D2Q9/BGK/FP64FP64/bouzidi")


@pytest.fixture(scope="module")
def side():
    return GeneratedSide(D2Q9_64, default_shape(D2Q9_64))


@pytest.mark.parametrize("label, checks", [
    ("D2Q9/BGK/FP64FP64/bouzidi", ("forward", "grad_1", f"grad_{STEPS}", "omega", "field", "field_fd", "fd")),
    ("D2Q9/BGK/FP32FP32/bouzidi", ("forward", "grad_1", "field")),
    ("D3Q19/BGK/FP32FP32/bouzidi", ("forward", "field")),
])
def test_bouzidi_rows_match_the_oracles(label, checks):
    row = verify_configuration(Configuration.parse(label), checks=checks)
    assert set(row.results) == set(checks) - ({"field_fd", "fd"} if "FP32" in label else set())
    for name, (error, tolerance) in row.results.items():
        assert error <= tolerance, f"{label} {name}: {error:.2e} > {tolerance:.0e}"


def test_the_checker_rejects_a_wrong_wall_distance_adjoint(side, tmp_path):
    source = open(side.step.module.__file__).read()
    # one link's contribution to the wall distance's adjoint off by 0.1 %
    pattern = r"(        adj_wall_distance_(\d+) = adj_wall_distance_\2 \+ )(.*)\n"
    mutated = re.sub(pattern, r"\1(\3) * wp.float64(1.001)\n", source, count=1)
    assert mutated != source
    recorded, body = split_generated(mutated)
    path = tmp_path / "planted_bouzidi.py"
    path.write_text(mutated.replace(recorded, body_sha256(body), 1))
    row = verify_configuration(D2Q9_64, module=load_checked(path, "planted_bouzidi"), checks=("grad_1", "field"))
    assert not row.passed
    assert row.results["field"][0] > 1e-6
    assert row.results["grad_1"][0] <= TOLERANCES["FP64FP64"]["grad"]  # the state gradient is still right


def test_half_everywhere_is_xlbs_halfway_bounce_back(side):
    """XLB's own Warp stepper runs the wall with the field's default, q = 1/2: halfway bounce-back.
    The generated step with q = 1/2 on every link gives the same state; q just off 1/2 on either
    side gives nearly the same (the two branches meet there)."""
    shape = default_shape(D2Q9_64)
    f0 = random_state(D2Q9_64, shape, 0)
    theirs, _ = xlb_warp_forward(D2Q9_64, shape, f0)
    half = np.full_like(side.field_values["wall_distance"], 0.5)
    ours, _ = side.rollout(f0, 1, field_values={"wall_distance": half})
    assert np.max(np.abs(ours - theirs)) <= 1e-14
    assert side.missing_mask.numpy().any()
    for nudge in (-1e-9, 1e-9):
        moved, _ = side.rollout(f0, 1, field_values={"wall_distance": half + nudge})
        assert 0 < np.max(np.abs(moved - ours)) <= 1e-8


def test_the_jax_face_takes_the_per_link_field(side):
    from adjointgen.tools.verify import _enable_x64
    _enable_x64()
    import jax
    import jax.numpy as jnp

    from adjointgen.runtime.jax_face import jax_step

    step = jax_step(side.stepper)
    shape = default_shape(D2Q9_64)
    assert step.field_shapes == {"wall_distance": (9, *shape, 1)}
    f0 = random_state(D2Q9_64, shape, 0)
    cotangent = np.random.default_rng(3).standard_normal(f0.shape)
    values = side.field_values["wall_distance"]
    arrays = [jnp.asarray(a) for a in (side.f1_prepared, side.bc_mask.numpy(), side.missing_mask.numpy())]

    def loss(q):
        _, new = step(jnp.asarray(f0), *arrays, jnp.asarray(1.6), {"wall_distance": q})
        return jnp.sum(new * cotangent)

    grad = np.asarray(jax.grad(loss)(jnp.asarray(values)))
    side.rollout(f0, 1, cotangent, omega=1.6)
    assert np.abs(grad).max() > 0
    assert np.allclose(grad, side.field_gradients["wall_distance"], rtol=1e-12, atol=1e-15)
    with pytest.raises(RuntimeArgumentError, match=r"wall_distance.*shape \(9, 9, 8, 1\)"):
        loss(jnp.zeros((1, *shape, 1)))


def test_fields_with_components_are_declared_consistently():
    with pytest.raises(ConfigurationError, match="positive whole number"):
        adjointgen.field("links", components=0)
    adjointgen.field("links_a", components=4, default=0.5)
    adjointgen.field("links_a", components=9, default=0.5)  # the components may follow the lattice
    with pytest.raises(ConfigurationError, match="declared twice"):
        adjointgen.field("links_a", components=4, default=0.25)


def test_a_per_link_field_has_the_shape_of_the_populations(side):
    step = side.step
    assert step.manifest.fields == ("wall_distance",) and step.manifest.field_components == (9,)
    shape = default_shape(D2Q9_64)
    saved = step.fields["wall_distance"]
    step.fields["wall_distance"] = wp.zeros((1, *shape, 1), dtype=wp.float64)
    f_0 = wp.zeros((9, *shape, 1), dtype=wp.float64)
    try:
        with pytest.raises(RuntimeArgumentError, match=r"'wall_distance' must be a Warp array of shape \(9, 9, 8, 1\)"):
            step(f_0, wp.zeros_like(f_0), side.bc_mask, side.missing_mask, 1.6, 0)
    finally:
        step.fields["wall_distance"] = saved


def _bad_walls():
    """Two walls whose functionals read the per-link field wrongly: without the index, and at a
    constant index past the last component."""
    from adjointgen.xlb.design import BouzidiBounceBackBC
    from adjointgen.xlb.fields import field

    class NoIndexWall(BouzidiBounceBackBC):
        def _construct_warp(self):
            distance = field("wall_distance", self.compute_dtype, components=self.velocity_set.q, default=0.5)

            @wp.func
            def functional(index: Any, timestep: Any, missing_mask: Any, f_0: Any, f_1: Any, f_pre: Any, f_post: Any):
                _f = f_post
                for l in range(self.velocity_set.q):
                    _f[l] = distance() * f_pre[l]
                return _f

            return functional, None

    class OutOfRangeWall(BouzidiBounceBackBC):
        def _construct_warp(self):
            distance = field("wall_distance", self.compute_dtype, components=self.velocity_set.q, default=0.5)

            @wp.func
            def functional(index: Any, timestep: Any, missing_mask: Any, f_0: Any, f_1: Any, f_pre: Any, f_post: Any):
                _f = f_post
                for l in range(self.velocity_set.q):
                    _f[l] = distance(l + 9) * f_pre[l]
                return _f

            return functional, None

    return {"NoIndexWall": NoIndexWall, "OutOfRangeWall": OutOfRangeWall}


@pytest.mark.parametrize("name, message", [
    ("NoIndexWall", r"called with 0 arguments.*wall_distance\(l\)"),
    ("OutOfRangeWall", r"read at component 9.*constant in \[0, 9\)"),
])
def test_a_per_link_field_read_without_a_constant_index_is_refused(name, message):
    from adjointgen.compiler.pipeline import generate
    from adjointgen.errors import UnsupportedConstruct
    from adjointgen.xlb import user
    from adjointgen.xlb.support import ball_cells, make_stepper

    wall = adjointgen.register(_bad_walls()[name])
    mix = name.lower()
    user.MIXES[mix] = lambda grid, dim: [wall(indices=np.array(sorted(ball_cells(grid.shape))).T.tolist())]
    try:
        config = Configuration("D2Q9", "BGK", "FP64FP64", mix)
        with pytest.raises(UnsupportedConstruct, match=message):
            generate(make_stepper(config, "warp", (9, 8)), config)
    finally:
        del user.MIXES[mix]


def test_rollouts_give_the_tape_wall_distance_gradient(side):
    """checkpointed_rollout (several snapshot counts) adds the same per-link gradient that XLB's
    loop on a tape gives."""
    step, steps = side.step, 6
    shape = default_shape(D2Q9_64)
    f0 = random_state(D2Q9_64, shape, 0)
    cotangent = np.random.default_rng(5).standard_normal(f0.shape)
    side.rollout(f0, steps, cotangent)  # the tape, XLB's two-buffer loop; fresh field arrays
    expected = side.field_gradients["wall_distance"]
    assert np.abs(expected).max() > 0
    step.fields["wall_distance"] = wp.array(side.field_values["wall_distance"], dtype=wp.float64)
    for snapshots in (2, steps):
        result = adjointgen.checkpointed_rollout(step, wp.array(f0), wp.array(side.f1_prepared), side.bc_mask,
                                                 side.missing_mask, 1.6, steps=steps, snapshots=snapshots)
        accumulated = wp.array(np.ones((9, *shape, 1)), dtype=wp.float64)  # backward adds into it
        result.backward(adj_f_0=wp.array(cotangent), adj_fields={"wall_distance": accumulated})
        assert np.allclose(accumulated.numpy() - 1.0, expected, rtol=1e-12, atol=1e-14)
