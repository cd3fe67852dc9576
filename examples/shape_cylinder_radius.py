"""Shape identification with an interpolated wall: recover a cylinder's radius from velocities
observed downstream of it.

D2Q9, BGK. A channel with a ZouHe velocity inlet (left), a ZouHe pressure outlet (right) and
halfway bounce-back walls holds a cylinder whose wall is adjointgen's ``BouzidiBounceBackBC``:
each link from a fluid cell into the cylinder carries its wall distance q (the design field
``wall_distance``, one value per link), computed from the circle, so the flow changes smoothly
with the radius between the radii at which a cell centre crosses the circle, where a halfway
wall would not change at all. Where a cell does cross, it changes sides and the loss jumps:
linear Bouzidi is not continuous across that (measured on 48x24, 250 steps: the loss falls by
14 % within 2e-6 of the radius 3.1145). From 3.6 towards 5.3 on the default grid L-BFGS-B
crosses such jumps and lands on the radius; from 3.1 towards 4.4 on 48x24 it stalls at 3.14.

d loss / d radius = sum over links of d loss / d q (the generated adjoint's field gradient, one
``checkpointed_rollout`` backward pass) times d q / d radius (from the circle, below). When the
radius crosses a cell centre, the cells of the cylinder change: the masks are rebuilt (XLB's
masker, same boundary ids, so the same generated module serves). The radius is fitted with
SciPy's L-BFGS-B within bounds.

q for a link: the fluid cell x, its neighbour x - c inside the circle (centre p, radius r), the
wall where |x - t c - p| = r, t = q in (0, 1]. With d = x - p, a = |c|^2, b = -d.c and
e = |d|^2 - r^2: q = (-b - sqrt(b^2 - a e)) / a, and d q / d r = r / (a q + b).

Writes into --out: fields.png (speed with the true and found radius), history.png, results.json.

CPU (under a minute):  python examples/shape_cylinder_radius.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb import user
from adjointgen.xlb.support import (INLET_VELOCITY, OUTLET_DENSITY, face_cells, index_lists, make_stepper,
                                    sphere_cells)

MIX = "cylinder_bouzidi"


@user.register_mix(MIX)
def cylinder_mix(grid, dim):
    """ZouHe inlet and outlet, halfway walls, and a Bouzidi cylinder (its cells are set later)."""
    from xlb.operator.boundary_condition import HalfwayBounceBackBC, ZouHeBC

    from adjointgen.xlb.design import BouzidiBounceBackBC

    box, inner = grid.bounding_box_indices(), grid.bounding_box_indices(remove_edges=True)
    inlet, outlet = face_cells([inner["left"]]), face_cells([inner["right"]])
    walls = face_cells(box.values()) - inlet - outlet
    placeholder = {(grid.shape[0] // 3, grid.shape[1] // 2)}  # replaced by Problem.place
    return [HalfwayBounceBackBC(indices=index_lists(walls)),
            ZouHeBC("velocity", prescribed_value=(INLET_VELOCITY, 0.0), indices=index_lists(inlet)),
            ZouHeBC("pressure", prescribed_value=(OUTLET_DENSITY,), indices=index_lists(outlet)),
            BouzidiBounceBackBC(indices=index_lists(placeholder))]


def link_distances(c: np.ndarray, missing: np.ndarray, centre: tuple, radius: float):
    """(q, d q / d radius), each ``(9, nx, ny)``: on every ``missing`` link of a cell outside the
    circle, the fraction of the link at which it crosses the circle (see the module docstring);
    elsewhere q = 1/2 (unused: halfway) and no derivative."""
    x, y = np.meshgrid(*(np.arange(n) for n in missing.shape[1:]), indexing="ij")
    d = np.stack([x - centre[0], y - centre[1]]).astype(np.float64)  # (2, nx, ny)
    e = (d ** 2).sum(0) - radius ** 2  # > 0: the cell is outside
    q, dq = np.full(missing.shape, 0.5), np.zeros(missing.shape)
    for l in range(1, missing.shape[0]):
        cut = missing[l] & (e > 0)
        a = float((c[:, l] ** 2).sum())
        b = -np.einsum("d,dxy->xy", c[:, l], d)
        t = (-b - np.sqrt(np.maximum(b ** 2 - a * e, 0.0))) / a
        q[l] = np.where(cut, t, 0.5)
        dq[l] = np.where(cut, radius / np.where(cut, a * t + b, -1.0), 0.0)
    return q, dq


class Problem:
    """The channel, its stepper, and the loss of one radius."""

    def __init__(self, shape, centre, steps, snapshots, precision="FP32FP32"):
        self.shape, self.centre, self.steps, self.snapshots = shape, centre, steps, snapshots
        self.config = Configuration("D2Q9", "BGK", precision, MIX)
        self.dtype = np.float64 if precision.endswith("FP64") else np.float32
        self.stepper = make_stepper(self.config, "warp", shape)
        self.wall = next(bc for bc in self.stepper.boundary_conditions if type(bc).__name__ == "BouzidiBounceBackBC")
        self.c = np.asarray(self.stepper.velocity_set._c, dtype=np.float64)  # (2, 9)
        self.step = None
        self.prepared_f_1 = None
        self.window = (slice(shape[0] // 2 + 4, shape[0] - 2), slice(1, shape[1] - 1))

    def place(self, radius: float) -> np.ndarray:
        """Masks for the cylinder of this radius, the wall distances on its links (the design
        field) and d q / d radius (zero on links that are not cut by the circle)."""
        self.wall.indices = index_lists(sphere_cells(self.shape, self.centre, radius))  # the solid cells
        self.f_0, self.f_1, self.bc_mask, self.missing_mask = self.stepper.prepare_fields()
        # XLB writes the ZouHe boundaries' prescribed values into f_1 on the first call only
        # (is_initialized_with_aux_data): keep that f_1, whose data lie away from the cylinder
        if self.prepared_f_1 is None:
            self.prepared_f_1 = self.f_1.numpy()
        self.f_1.assign(self.prepared_f_1)
        wall_cells = self.bc_mask.numpy()[0, :, :, 0] == self.wall.id
        q, dq = link_distances(self.c, self.missing_mask.numpy()[..., 0] & wall_cells, self.centre, radius)
        self.q, self.dq = q, dq
        field = wp.array(q[..., None].astype(self.dtype), requires_grad=True)
        if self.step is None:
            self.step = adjointgen.differentiable(self.stepper, fields={"wall_distance": field})
        self.step.fields["wall_distance"] = field
        return q

    def velocity(self, f: np.ndarray):
        f = f[..., 0].astype(np.float64)
        rho = f.sum(axis=0)
        return np.einsum("dq,qxy->dxy", self.c, f) / rho, rho

    def run(self, radius: float):
        self.place(radius)
        return adjointgen.checkpointed_rollout(self.step, self.f_0, self.f_1, self.bc_mask, self.missing_mask, 1.6,
                                               self.steps, self.snapshots, progress=False)

    def loss_and_gradient(self, radius: float, observed: np.ndarray):
        result = self.run(radius)
        u, rho = self.velocity(result.f_0.numpy())
        residual = np.zeros_like(u)
        residual[:, self.window[0], self.window[1]] = (u - observed)[:, self.window[0], self.window[1]]
        count = residual[0][self.window[0], self.window[1]].size
        loss = float(np.sum(residual ** 2) / count)
        adj = 2.0 / count * np.einsum("dxy,dqxy->qxy", residual, self.c[:, :, None, None] - u[:, None]) / rho
        adj_q = wp.zeros(self.step.fields["wall_distance"].shape, dtype=self.step.fields["wall_distance"].dtype)
        result.backward(adj_f_0=wp.array(adj[..., None].astype(self.dtype)), adj_fields={"wall_distance": adj_q})
        return loss, float(np.sum(adj_q.numpy()[..., 0] * self.dq)), u


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="64x32", help="NXxNY")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--true-radius", type=float, default=5.3)
    parser.add_argument("--start-radius", type=float, default=3.6)
    parser.add_argument("--iterations", type=int, default=25, help="at most this many L-BFGS-B iterations")
    parser.add_argument("--precision", default="FP32FP32", choices=("FP32FP32", "FP64FP64"))
    parser.add_argument("--no-figures", action="store_true", help="results.json only (a machine without matplotlib)")
    parser.add_argument("--out", default="examples/output/shape_cylinder_radius")
    args = parser.parse_args(argv)
    adjointgen.quiet()
    from scipy.optimize import minimize

    shape = tuple(int(n) for n in args.grid.split("x"))
    centre = (shape[0] / 4 + 0.3, (shape[1] - 1) / 2 + 0.4)  # off the lattice's symmetry lines
    problem = Problem(shape, centre, args.steps, args.snapshots, args.precision)
    true_u, _ = problem.velocity(problem.run(args.true_radius).f_0.numpy())
    history = []
    scale = []  # the first loss: L-BFGS-B's tolerances are absolute, the loss here is about 1e-7

    def objective(theta):
        loss, grad, _ = problem.loss_and_gradient(float(theta[0]), true_u)
        history.append((loss, float(theta[0]), grad))
        scale.append(scale[0] if scale else loss)
        return loss / scale[0], np.array([grad / scale[0]])

    start = time.perf_counter()
    fit = minimize(objective, [args.start_radius], jac=True, method="L-BFGS-B", bounds=[(2.0, shape[1] / 2 - 3)],
                   options={"maxiter": args.iterations, "ftol": 1e-12, "gtol": 1e-8})
    wall = time.perf_counter() - start
    found = float(fit.x[0])
    found_u, _ = problem.velocity(problem.run(found).f_0.numpy())
    report = {"grid": list(shape), "steps": args.steps, "precision": args.precision, "centre": list(centre),
              "true_radius": args.true_radius, "start_radius": args.start_radius, "found_radius": found,
              "relative_error": abs(found / args.true_radius - 1), "evaluations": len(history),
              "first_loss": history[0][0], "final_loss": float(fit.fun) * scale[0], "wall_s": wall, "optimizer": "scipy L-BFGS-B"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        plot(out, problem, true_u, found_u, np.array(history), report)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def plot(out: Path, problem: Problem, true_u, found_u, history, report):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), constrained_layout=True)
    high = float(np.hypot(*true_u).max())
    for ax, u, radius, title in ((axes[0], true_u, report["true_radius"], "true"),
                                 (axes[1], found_u, report["found_radius"], "found")):
        shown = ax.imshow(np.hypot(*u).T, origin="lower", cmap="magma", vmin=0, vmax=high)
        ax.add_patch(Circle(problem.centre, radius, fill=False, edgecolor="white", linewidth=1.5))
        wx, wy = problem.window
        ax.add_patch(Rectangle((wx.start - 0.5, wy.start - 0.5), wx.stop - wx.start, wy.stop - wy.start,
                               fill=False, edgecolor="cyan", linewidth=1.5))
        ax.set_title(f"{title}: radius {radius:.4f}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="speed; white: the wall; cyan: observed window")
    fig.savefig(out / "fields.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    axes[0].semilogy(history[:, 0])
    axes[0].set_title("loss per evaluation")
    axes[1].plot(history[:, 1], label="radius")
    axes[1].axhline(report["true_radius"], color="k", linestyle="--", label="true")
    axes[1].set_title("radius per evaluation")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("L-BFGS-B evaluation")
        ax.grid(True, alpha=0.3)
    fig.savefig(out / "history.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
