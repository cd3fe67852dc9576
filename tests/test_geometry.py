"""Walls from a triangle mesh (adjointgen.xlb.geometry): the vertex gradient of q equals finite
differences of q; through the generated Bouzidi adjoint, d loss / d vertices equals FP64 finite
differences of the generated forward; meshes and masks that do not fit are refused."""

from __future__ import annotations

import numpy as np
import pytest

import adjointgen.xlb.compat

adjointgen.xlb.compat.apply()

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("rtree")

import warp as wp  # noqa: E402

import adjointgen  # noqa: E402
from adjointgen.config import Configuration  # noqa: E402
from adjointgen.tools.verify import random_state  # noqa: E402
from adjointgen.xlb.geometry import cut_links, solid_cells, vertex_gradient, wall_distance  # noqa: E402
from adjointgen.xlb.support import index_lists, make_stepper  # noqa: E402

SHAPE = (8, 8, 8)
CONFIG = Configuration.parse("D3Q19/BGK/FP64FP64/bouzidi")


def _ball(offset=(0.0, 0.0, 0.0)):
    """A closed icosphere off the lattice's symmetry planes (no cell centre near its surface)."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=2.3)
    mesh.apply_translation(np.array([3.6, 3.55, 3.45]) + offset)
    return mesh


class Wall:
    """The bouzidi mix's stepper with its wall on the mesh's solid cells, and a 3-step rollout."""

    def __init__(self, mesh):
        self.stepper = make_stepper(CONFIG, "warp", SHAPE)
        self.wall = next(bc for bc in self.stepper.boundary_conditions if type(bc).__name__ == "BouzidiBounceBackBC")
        self.c = np.asarray(self.stepper.velocity_set._c)
        self.solid = solid_cells(mesh, SHAPE)
        self.wall.indices = index_lists({tuple(cell) for cell in np.argwhere(self.solid)})
        self.f_0, self.f_1, self.bc_mask, self.missing_mask = self.stepper.prepare_fields()
        at_wall = self.bc_mask.numpy()[0] == self.wall.id  # where the wall condition runs
        self.missing = self.missing_mask.numpy() & at_wall
        self.step = None

    def links(self, mesh):
        return cut_links(mesh, self.missing, self.c, self.solid)

    def run(self, mesh, cotangent=None):
        """The loss <cotangent, f after 3 steps> and, with ``cotangent``, d loss / d vertices."""
        links = self.links(mesh)
        field = wp.array(wall_distance(links, (19, *SHAPE)), dtype=wp.float64)
        if self.step is None:
            self.step = adjointgen.differentiable(self.stepper, fields={"wall_distance": field})
        self.step.fields["wall_distance"] = field
        f0 = random_state(CONFIG, SHAPE, 0)
        result = adjointgen.checkpointed_rollout(self.step, wp.array(f0), self.f_1, self.bc_mask, self.missing_mask, 1.6,
                                                 steps=3, snapshots=2, progress=False)
        weights = np.random.default_rng(4).standard_normal(f0.shape)
        loss = float(np.sum(weights * result.f_0.numpy()))
        if cotangent is None:
            return loss, None
        adj_q = wp.zeros(field.shape, dtype=wp.float64)
        result.backward(adj_f_0=wp.array(weights), adj_fields={"wall_distance": adj_q})
        return loss, vertex_gradient(mesh, links, self.c, adj_q.numpy())


def _moved(mesh, vertex, axis, step):
    moved = mesh.copy()
    moved.vertices[vertex, axis] += step
    return moved


def test_the_vertex_gradient_of_q_equals_finite_differences():
    mesh = _ball()
    wall = Wall(mesh)
    links = wall.links(mesh)
    assert len(links) > 100 and 0.0 < links.q.min() and links.q.max() <= 1.0
    weights = np.random.default_rng(0).standard_normal((19, *SHAPE))
    gradient = vertex_gradient(mesh, links, wall.c, weights)
    vertex = int(np.argmax(np.abs(gradient).sum(axis=1)))

    def weighted_q(m):
        return float(np.sum(weights * wall_distance(wall.links(m), (19, *SHAPE))))

    for axis in range(3):
        fd = (weighted_q(_moved(mesh, vertex, axis, 1e-6)) - weighted_q(_moved(mesh, vertex, axis, -1e-6))) / 2e-6
        assert abs(fd - gradient[vertex, axis]) <= 1e-6 * max(1.0, abs(fd)), (axis, fd, gradient[vertex, axis])


def test_loss_gradient_by_vertex_equals_fp64_finite_differences():
    """d loss / d vertices through the generated adjoint (one checkpointed rollout's backward pass)
    against central differences of the generated forward, moving a vertex by 1e-5."""
    mesh = _ball()
    wall = Wall(mesh)
    _, gradient = wall.run(mesh, cotangent=True)
    assert np.abs(gradient).max() > 0
    for vertex in np.argsort(-np.abs(gradient).sum(axis=1))[:2]:
        for axis in range(3):
            ahead, behind = _moved(mesh, vertex, axis, 1e-5), _moved(mesh, vertex, axis, -1e-5)
            assert (solid_cells(ahead, SHAPE) == wall.solid).all() and (solid_cells(behind, SHAPE) == wall.solid).all()
            fd = (wall.run(ahead)[0] - wall.run(behind)[0]) / 2e-5
            assert abs(fd - gradient[vertex, axis]) <= 1e-7 * max(1.0, np.abs(gradient).max()), (vertex, axis, fd)


def test_meshes_and_masks_that_do_not_fit_are_refused():
    mesh = _ball()
    wall = Wall(mesh)
    with pytest.raises(ValueError, match="not closed"):
        solid_cells(trimesh.Trimesh(mesh.vertices, mesh.faces[:-3]), SHAPE)
    smaller = trimesh.creation.icosphere(subdivisions=2, radius=1.2)
    smaller.apply_translation([3.6, 3.55, 3.45])
    with pytest.raises(ValueError, match="not cut by the mesh within the link"):
        cut_links(smaller, wall.missing, wall.c, wall.solid)  # masks of the larger ball
    with pytest.raises(ValueError, match="shapes do not agree"):
        cut_links(mesh, wall.missing[:, :4], wall.c, wall.solid)


def test_jax_grad_through_the_face_reaches_the_vertices():
    """wall_distance_of_vertices in a JAX program: jax.grad of the same loss through the JAX face
    (3 steps) equals vertex_gradient of the rollout's field gradient, and the field equals
    wall_distance's."""
    import jax
    import jax.numpy as jnp

    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.tools.verify import _enable_x64
    from adjointgen.xlb.geometry import wall_distance_of_vertices

    _enable_x64()
    mesh = _ball()
    wall = Wall(mesh)
    _, expected = wall.run(mesh, cotangent=True)
    links = wall.links(mesh)
    step = jax_step(wall.stepper)
    f0 = jnp.asarray(random_state(CONFIG, SHAPE, 0))
    weights = jnp.asarray(np.random.default_rng(4).standard_normal(f0.shape))
    arrays = [jnp.asarray(a.numpy()) for a in (wall.f_1, wall.bc_mask, wall.missing_mask)]
    faces = np.asarray(mesh.faces)

    def loss(vertices):
        field = wall_distance_of_vertices(vertices, faces, links, wall.c, (19, *SHAPE))
        f, g = f0, arrays[0]
        for _ in range(3):
            g, f = step(f, g, arrays[1], arrays[2], 1.6, {"wall_distance": field})
        return jnp.sum(weights * f)

    vertices = jnp.asarray(mesh.vertices)
    field = wall_distance_of_vertices(vertices, faces, links, wall.c, (19, *SHAPE))
    assert np.allclose(np.asarray(field), wall_distance(links, (19, *SHAPE)), rtol=0, atol=1e-12)
    gradient = np.asarray(jax.jit(jax.grad(loss))(vertices))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(gradient, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
