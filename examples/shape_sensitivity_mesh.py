"""Shape sensitivity of a body given as a triangle mesh: d loss / d (each vertex's position) for a
flow past it, in one backward pass.

D3Q19, BGK, a periodic box with a flow along x past a ball (an icosphere mesh). The wall is
adjointgen's ``BouzidiBounceBackBC``; its per-link wall distances come from the mesh
(``adjointgen.xlb.geometry``: solid cells, the links the mesh cuts, q on each). The loss is the
x-momentum in a window downstream of the body after ``--steps`` steps (the wake's deficit), and
its gradient with respect to every vertex comes from one ``checkpointed_rollout`` backward pass
(the generated adjoint's per-link q gradient) and the chain rule through each link's q
(``vertex_gradient``). Projected on the vertex normals, it is the shape sensitivity an optimiser
moves the surface with: positive where pushing the surface outwards raises the loss.

The example checks itself: the vertex with the largest normal sensitivity is moved along its
normal by +-1e-5 (FP64, no cell centre crossing the surface) and the central difference of the
loss is compared with the gradient's projection.

Writes into --out: sensitivity.png (the mesh's vertices coloured by the normal sensitivity, and
the x-velocity in the mid-plane), results.json.

CPU (seconds):  python examples/shape_sensitivity_mesh.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import trimesh
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.geometry import cut_links, solid_cells, vertex_gradient, wall_distance
from adjointgen.xlb.support import index_lists, make_stepper

INFLOW = 0.04  # the initial flow along x, lattice units


class Flow:
    """The periodic box, its stepper with the mesh's wall, and the loss of one mesh."""

    def __init__(self, shape: tuple, steps: int, precision: str):
        self.shape, self.steps = shape, steps
        self.config = Configuration("D3Q19", "BGK", precision, "bouzidi")
        self.dtype = np.float64 if precision.endswith("FP64") else np.float32
        self.stepper = make_stepper(self.config, "warp", shape)
        self.wall = next(bc for bc in self.stepper.boundary_conditions if type(bc).__name__ == "BouzidiBounceBackBC")
        self.c = np.asarray(self.stepper.velocity_set._c)
        w = np.asarray(self.stepper.velocity_set._w, dtype=np.float64)
        cu = 3.0 * INFLOW * self.c[0]
        f = w * (1.0 + cu + 0.5 * cu ** 2 - 1.5 * INFLOW ** 2)  # the equilibrium of a uniform flow
        self.f0 = np.broadcast_to(f[:, None, None, None], (19, *shape)).astype(self.dtype)
        x = np.arange(shape[0])
        self.window = (x >= shape[0] // 2 + 3) & (x < shape[0] - 2)  # downstream of the body
        self.step = None

    def place(self, mesh):
        """Masks for the mesh's solid cells, and the cut links."""
        self.solid = solid_cells(mesh, self.shape)
        self.wall.indices = index_lists({tuple(cell) for cell in np.argwhere(self.solid)})
        _, self.f_1, self.bc_mask, self.missing_mask = self.stepper.prepare_fields()
        missing = self.missing_mask.numpy() & (self.bc_mask.numpy()[0] == self.wall.id)
        return cut_links(mesh, missing, self.c, self.solid)

    def loss(self, mesh, gradient: bool = False):
        """The loss; with ``gradient``, also d loss / d vertices and the final state."""
        links = self.place(mesh)
        field = wp.array(wall_distance(links, (19, *self.shape)).astype(self.dtype))
        if self.step is None:
            self.step = adjointgen.differentiable(self.stepper, fields={"wall_distance": field})
        self.step.fields["wall_distance"] = field
        result = adjointgen.checkpointed_rollout(self.step, wp.array(self.f0), self.f_1, self.bc_mask, self.missing_mask,
                                                 1.6, self.steps, snapshots=12, progress=False)
        f = result.f_0.numpy().astype(np.float64)
        weights = np.broadcast_to(np.where(self.window[None, :, None, None], self.c[0][:, None, None, None], 0.0), f.shape)
        loss = float(np.sum(weights * f)) / float(self.window.sum() * self.shape[1] * self.shape[2])
        if not gradient:
            return loss
        adj_q = wp.zeros(field.shape, dtype=field.dtype)
        scale = 1.0 / float(self.window.sum() * self.shape[1] * self.shape[2])
        result.backward(adj_f_0=wp.array((weights * scale).astype(self.dtype)), adj_fields={"wall_distance": adj_q})
        return loss, vertex_gradient(mesh, links, self.c, adj_q.numpy().astype(np.float64)), f, len(links)


def ball(shape: tuple, radius: float):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    mesh.apply_translation([shape[0] / 3 + 0.3, (shape[1] - 1) / 2 + 0.17, (shape[2] - 1) / 2 - 0.11])
    return mesh


def check(flow: Flow, mesh, sensitivity: np.ndarray, step: float) -> dict:
    """The largest normal sensitivity against central differences moving that vertex along its
    normal (skipped to the next vertex where a cell centre would cross the surface)."""
    normals = np.asarray(mesh.vertex_normals)
    for vertex in np.argsort(-np.abs(sensitivity))[:10]:
        moved = [mesh.copy() for _ in range(2)]
        moved[0].vertices[vertex] += step * normals[vertex]
        moved[1].vertices[vertex] -= step * normals[vertex]
        if all((solid_cells(m, flow.shape) == flow.solid).all() for m in moved):
            fd = (flow.loss(moved[0]) - flow.loss(moved[1])) / (2 * step)
            return {"vertex": int(vertex), "adjoint": float(sensitivity[vertex]), "finite_difference": float(fd),
                    "relative_difference": abs(fd - sensitivity[vertex]) / abs(fd)}
    raise RuntimeError("every candidate vertex moves a cell centre across the surface: use a smaller --fd-step")


def figure(path: Path, mesh, sensitivity: np.ndarray, f: np.ndarray, c: np.ndarray, solid: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    v = np.asarray(mesh.vertices)
    limit = np.abs(sensitivity).max()
    points = ax.scatter(v[:, 0], v[:, 1], v[:, 2], c=sensitivity, cmap="coolwarm", vmin=-limit, vmax=limit, s=12)
    fig.colorbar(points, ax=ax, shrink=0.7, label="d loss / d (normal displacement)")
    ax.set_title("shape sensitivity on the vertices")
    ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel("z")
    ax2 = fig.add_subplot(1, 2, 2)
    rho = f.sum(axis=0)
    u = np.where(solid, np.nan, np.einsum("q,qxyz->xyz", c[0].astype(np.float64), f) / rho)  # solid cells blank
    middle = f.shape[3] // 2
    image = ax2.imshow(u[:, :, middle].T, origin="lower", cmap="viridis")
    fig.colorbar(image, ax=ax2, shrink=0.7, label="u_x")
    ax2.set_title(f"u_x in the plane z = {middle} after the run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="32x16x16", help="NXxNYxNZ")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--radius", type=float, default=3.4)
    parser.add_argument("--fd-step", type=float, default=1e-5)
    parser.add_argument("--no-figures", action="store_true", help="results.json only (a machine without matplotlib)")
    parser.add_argument("--out", default="examples/output/shape_sensitivity_mesh")
    args = parser.parse_args(argv)
    adjointgen.quiet()
    shape = tuple(int(n) for n in args.grid.split("x"))
    flow = Flow(shape, args.steps, "FP64FP64")
    mesh = ball(shape, args.radius)
    start = time.perf_counter()
    loss, gradient, f, links = flow.loss(mesh, gradient=True)
    seconds = time.perf_counter() - start
    sensitivity = np.einsum("vd,vd->v", gradient, np.asarray(mesh.vertex_normals))
    report = {"grid": list(shape), "steps": args.steps, "radius": args.radius, "vertices": len(mesh.vertices),
              "triangles": len(mesh.faces), "solid_cells": int(flow.solid.sum()), "cut_links": links, "loss": loss,
              "seconds_loss_and_gradient": seconds, "check": check(flow, mesh, sensitivity, args.fd_step),
              "sensitivity_range": [float(sensitivity.min()), float(sensitivity.max())]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_figures:
        figure(out / "sensitivity.png", mesh, sensitivity, f, flow.c, flow.solid)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
