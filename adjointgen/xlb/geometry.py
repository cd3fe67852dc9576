"""Walls from a triangle mesh for :class:`~adjointgen.xlb.design.BouzidiBounceBackBC`: which cells
are solid, where the mesh cuts each boundary link (the wall distance q), and the gradient of a
loss with respect to the mesh's vertices.

The chain is the one the shape example (``examples/shape_cylinder_radius.py``) writes for a
circle, for any closed mesh in 3D:

1. :func:`solid_cells`: the cells whose centre lies inside the mesh (trimesh's ``contains``); they
   become the wall condition's ``indices``, and XLB's ``prepare_fields`` derives the masks;
2. :func:`cut_links`: for every missing link of a fluid cell ``x`` whose neighbour ``x - c_l`` is
   solid, the segment from ``x`` towards ``x - c_l`` is cast against the mesh (trimesh's ray
   queries); its first hit at ``x - q c_l`` gives ``q`` in (0, 1] and the triangle it lies on;
3. :func:`wall_distance`: those q as the per-link design field (1/2, halfway, elsewhere);
4. :func:`vertex_gradient`: d loss / d vertices = sum over the cut links of d loss / d q (the
   generated adjoint's field gradient) times d q / d (the hit triangle's vertices), from
   ``q = n . (v0 - x) / (n . (-c_l))`` with ``n = (v1 - v0) x (v2 - v0)``: JAX's vector-Jacobian
   product of :func:`wall_distance_of_vertices`, the field as a JAX function of the vertices,
   which JAX programs use directly (``jax.grad`` through the JAX face).

Moving the vertices moves q smoothly as long as no cell centre crosses the surface (then
:func:`solid_cells` changes, the masks are rebuilt, and the loss jumps, as in the shape example).
Needs ``trimesh`` and ``rtree`` (``pip install "adjointgen[mesh]"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: a hit this far beyond the link's end (in units of the link) still counts as on the link
_REACH = 1e-9


@dataclass(frozen=True)
class CutLinks:
    """The boundary links a mesh cuts, one row each: the fluid cell, the population ``l`` whose
    source ``x - c_l`` is solid, the triangle hit first, and ``q`` (the hit at ``x - q c_l``)."""

    cells: np.ndarray  # (n, 3) int
    links: np.ndarray  # (n,) int
    triangles: np.ndarray  # (n,) int
    q: np.ndarray  # (n,) float64, in (0, 1]

    def __len__(self) -> int:
        return len(self.q)


def solid_cells(mesh, shape: tuple) -> np.ndarray:
    """A boolean grid of ``shape`` (nx, ny, nz): the cells whose centre (its integer coordinates)
    lies inside the closed ``mesh`` (a ``trimesh.Trimesh``)."""
    if not mesh.is_watertight:
        raise ValueError("the mesh is not closed (trimesh's is_watertight is False): inside and outside are undefined; "
                         "repair it first (e.g. trimesh.repair.fill_holes)")
    centres = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    return mesh.contains(centres.astype(np.float64)).reshape(shape)


def cut_links(mesh, missing_mask: np.ndarray, c: np.ndarray, solid: np.ndarray) -> CutLinks:
    """The links of ``missing_mask`` ((q, nx, ny, nz) booleans, XLB's, in the Warp layout) at
    fluid cells whose source cell is in ``solid`` (from :func:`solid_cells`), with where
    ``mesh`` cuts them. ``c``: the velocity set's (3, q) integer velocities. A link that the
    mesh does not cut within its length is refused: the masks then do not come from this mesh."""
    if missing_mask.ndim != 4 or missing_mask.shape[1:] != solid.shape or c.shape != (3, missing_mask.shape[0]):
        raise ValueError(f"shapes do not agree: missing_mask {missing_mask.shape}, c {c.shape}, solid {solid.shape} "
                         "(a 3D lattice in the Warp layout)")
    found = []  # (cells, link) per population
    for l in range(missing_mask.shape[0]):
        cells = np.argwhere(missing_mask[l] & ~solid)
        sources = cells - c[:, l]
        inside = np.all((sources >= 0) & (sources < solid.shape), axis=1)
        cells, sources = cells[inside], sources[inside]
        found.append(cells[solid[tuple(sources.T)]])
    cells = np.concatenate(found)
    links = np.concatenate([np.full(len(cells_of_l), l) for l, cells_of_l in enumerate(found)])
    if not len(cells):
        return CutLinks(np.zeros((0, 3), int), np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    directions = -c[:, links].T.astype(np.float64)
    locations, which_ray, which_triangle = mesh.ray.intersects_location(cells.astype(np.float64), directions,
                                                                        multiple_hits=True)
    t = np.einsum("nd,nd->n", locations - cells[which_ray], directions[which_ray]) / np.einsum(
        "nd,nd->n", directions[which_ray], directions[which_ray])
    q = np.full(len(cells), np.inf)
    triangles = np.full(len(cells), -1)
    ahead = t > 0.0  # hits behind a cell's centre do not bound its link
    order = np.lexsort((t[ahead], which_ray[ahead]))  # by ray, nearest hit first
    rays, hits, hit_triangles = which_ray[ahead][order], t[ahead][order], which_triangle[ahead][order]
    _, nearest = np.unique(rays, return_index=True)
    q[rays[nearest]], triangles[rays[nearest]] = hits[nearest], hit_triangles[nearest]
    uncut = np.flatnonzero(q > 1.0 + _REACH)
    if len(uncut):
        first = uncut[0]
        raise ValueError(f"{len(uncut)} missing link(s) toward solid cells are not cut by the mesh within the link, e.g. "
                         f"cell {tuple(int(x) for x in cells[first])}, population {links[first]}: the masks were not built from "
                         "solid_cells(mesh, ...) of this mesh")
    return CutLinks(cells, links, triangles, np.minimum(q, 1.0))


def wall_distance(links: CutLinks, shape: tuple) -> np.ndarray:
    """The ``wall_distance`` design field of shape ``(q, nx, ny, nz)``: q on the cut links, 1/2
    (halfway bounce-back) elsewhere."""
    field = np.full(shape, 0.5)
    field[(links.links, *links.cells.T)] = links.q
    return field


def _q_of(triangle, origin, direction):
    """Where the ray ``origin + t direction`` meets the plane of ``triangle`` (3 corners): t."""
    import jax.numpy as jnp

    normal = jnp.cross(triangle[1] - triangle[0], triangle[2] - triangle[0])
    return jnp.dot(normal, triangle[0] - origin) / jnp.dot(normal, direction)


def wall_distance_of_vertices(vertices, faces: np.ndarray, links: CutLinks, c: np.ndarray, shape: tuple):
    """:func:`wall_distance` as a JAX function of the mesh's ``vertices`` ((n, 3), a JAX array),
    for the cut links found once by :func:`cut_links` (each link keeps its triangle): so that
    ``jax.grad`` reaches the vertices through the JAX face's ``fields={"wall_distance": ...}``.
    Valid while the vertices move too little for a link to change triangles or a cell to change
    sides; the dtype is the vertices'."""
    import jax
    import jax.numpy as jnp

    corners = jnp.asarray(np.asarray(faces)[links.triangles])
    q = jax.vmap(_q_of)(vertices[corners], jnp.asarray(links.cells, dtype=vertices.dtype),
                        jnp.asarray(-c[:, links.links].T, dtype=vertices.dtype))
    return jnp.full(shape, 0.5, dtype=vertices.dtype).at[(links.links, *links.cells.T)].set(q)


def vertex_gradient(mesh, links: CutLinks, c: np.ndarray, field_gradient: np.ndarray) -> np.ndarray:
    """d loss / d vertices, shape (number of vertices, 3), from ``field_gradient`` (d loss / d
    wall_distance, shaped like the field): the chain rule through each cut link's q, as the
    vector-Jacobian product of :func:`wall_distance_of_vertices` (in float64)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        vertices = jnp.asarray(np.asarray(mesh.vertices, dtype=np.float64))
        _, pull = jax.vjp(lambda v: wall_distance_of_vertices(v, mesh.faces, links, c, field_gradient.shape), vertices)
        (gradient,) = pull(jnp.asarray(field_gradient, dtype=jnp.float64))
        return np.asarray(gradient)
