"""Parameter identification with boundaries: recover the inlet velocity and omega of a channel
with an obstacle from velocities observed downstream of it.

D2Q9, BGK, FP32. The channel has a ZouHe velocity inlet (left), a ZouHe pressure outlet (right),
halfway bounce-back walls, and a solid block (``bc_mask == 255``) a third of the way along.
Starting from rest, the flow runs ``--steps`` steps; the observation is the velocity field in a
window behind the block at the last step, made with the true parameters (plus seeded noise).
The unknowns start from a wrong guess and are fitted with Warp's Adam (``warp.optim.Adam``). Their gradients come from one
``checkpointed_rollout`` backward pass per iteration: d loss / d omega through ``adj_omega``, and
d loss / d inlet velocity from the gradient of the ``f_1`` that held XLB's prescribed value
(``step.prescribed_value_gradient``).

Writes into --out: fields.png (speed with the true and the identified parameters, the
observation window framed), parameters.png (parameters and loss against iteration),
results.json.

CPU, reduced (about a minute):  python examples/identify_inlet_and_omega.py
GPU, full size:                  python examples/identify_inlet_and_omega.py --grid 256x96 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import warp as wp
import warp.optim

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper, prepare_fields

CONFIG = Configuration("D2Q9", "BGK", "FP32FP32", "obstacle")


class Problem:
    """The channel, its stepper, and the loss of one parameter pair."""

    def __init__(self, shape, steps, snapshots, window):
        self.shape, self.steps, self.snapshots = shape, steps, snapshots
        self.stepper = make_stepper(CONFIG, "warp", shape)
        self.step = adjointgen.differentiable(self.stepper)
        self.f_0, self.f_1, self.bc_mask, self.missing_mask = prepare_fields(self.stepper, CONFIG)
        self.aux = self.f_1.numpy()  # XLB keeps the prescribed values in f_1[0] at the boundary cells
        self.inlet = next(bc for bc in self.stepper.boundary_conditions
                          if type(bc).__name__ == "ZouHeBC" and bc.bc_type == "velocity")
        self.inlet_cells = self.bc_mask.numpy()[0] == self.inlet.id
        self.c = np.asarray(self.stepper.velocity_set._c, dtype=np.float64)  # (2, 9); .c is a Warp matrix
        self.window = window  # (slice x, slice y)
        self.rest = self.f_0.numpy()

    def run(self, inlet: float, omega: float):
        aux = self.aux.copy()
        aux[0][self.inlet_cells] = inlet
        self.f_1.assign(aux)
        self.f_0.assign(self.rest)
        return adjointgen.checkpointed_rollout(self.step, self.f_0, self.f_1, self.bc_mask, self.missing_mask,
                                               omega, self.steps, self.snapshots, progress=False)

    def velocity(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = f[..., 0].astype(np.float64)  # (9, nx, ny)
        rho = f.sum(axis=0)
        return np.einsum("dq,qxy->dxy", self.c, f) / rho, rho

    def loss_and_gradient(self, inlet, omega, observed):
        result = self.run(inlet, omega)
        f = result.f_0.numpy()
        u, rho = self.velocity(f)
        residual = np.zeros_like(u)
        residual[:, self.window[0], self.window[1]] = (u - observed)[:, self.window[0], self.window[1]]
        count = residual[0][self.window[0], self.window[1]].size
        loss = float(np.sum(residual**2) / count)
        # d loss / d f_l = (2 / count) sum_d residual_d (c_dl - u_d) / rho
        adj = 2.0 / count * np.einsum("dxy,dqxy->qxy", residual, self.c[:, :, None, None] - u[:, None]) / rho
        adj_omega = wp.zeros(1, dtype=wp.float32)
        _, adj_f_1 = result.backward(adj_f_0=wp.array(adj[..., None].astype(np.float32)), adj_omega=adj_omega)
        d_inlet = float(self.step.prescribed_value_gradient(self.inlet, self.bc_mask, adj_f_1).sum())
        return loss, np.array([d_inlet, float(adj_omega.numpy()[0])]), u


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="64x24", help="NXxNY")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--snapshots", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--true-inlet", type=float, default=0.04)
    parser.add_argument("--true-omega", type=float, default=1.6)
    parser.add_argument("--start-inlet", type=float, default=0.02)
    parser.add_argument("--start-omega", type=float, default=1.2)
    parser.add_argument("--noise", type=float, default=0.01, help="relative noise on the observation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-figures", action="store_true", help="results.json only (a machine without matplotlib)")
    parser.add_argument("--out", default="examples/output/identify_inlet_and_omega")
    args = parser.parse_args(argv)
    adjointgen.quiet()  # no Warp module-load lines between the progress bars
    from tqdm import tqdm

    shape = tuple(int(n) for n in args.grid.split("x"))
    window = (slice(shape[0] // 2, shape[0] - 2), slice(1, shape[1] - 1))
    problem = Problem(shape, args.steps, args.snapshots, window)
    rng = np.random.default_rng(args.seed)

    true_u, _ = problem.velocity(problem.run(args.true_inlet, args.true_omega).f_0.numpy())
    scale = np.abs(true_u[:, window[0], window[1]]).max()
    observed = true_u + args.noise * scale * rng.standard_normal(true_u.shape)

    # the unknowns as Warp arrays, each with Warp's Adam at its own step size (velocity ~ 0.04, omega ~ 1.6)
    inlet, omega = (wp.array([value], dtype=wp.float32) for value in (args.start_inlet, args.start_omega))
    optimizers = [wp.optim.Adam([inlet], lr=2e-3, eps=1e-20), wp.optim.Adam([omega], lr=2e-2, eps=1e-20)]
    history = []
    start = time.perf_counter()
    for _ in tqdm(range(args.iterations), desc="identify", disable=args.no_progress):
        theta = [float(inlet.numpy()[0]), float(omega.numpy()[0])]
        loss, grad, _ = problem.loss_and_gradient(theta[0], theta[1], observed)
        history.append((loss, *theta))
        for optimizer, g in zip(optimizers, grad):
            optimizer.step([wp.array([g], dtype=wp.float32)])
        omega.assign(np.clip(omega.numpy(), 0.5, 1.95))  # keep the collision stable
    wall = time.perf_counter() - start
    theta = [float(inlet.numpy()[0]), float(omega.numpy()[0])]
    final_loss, _, found_u = problem.loss_and_gradient(theta[0], theta[1], observed)
    history.append((final_loss, *theta))

    report = {"grid": list(shape), "steps": args.steps, "iterations": args.iterations, "seed": args.seed,
              "true": {"inlet": args.true_inlet, "omega": args.true_omega},
              "start": {"inlet": args.start_inlet, "omega": args.start_omega},
              "found": {"inlet": float(theta[0]), "omega": float(theta[1])},
              "relative_error": {"inlet": abs(theta[0] / args.true_inlet - 1), "omega": abs(theta[1] / args.true_omega - 1)},
              "first_loss": history[0][0], "final_loss": final_loss, "wall_s": wall}
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
    from matplotlib.patches import Rectangle

    solid = problem.bc_mask.numpy()[0, :, :, 0] == 255
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), constrained_layout=True)
    high = float(np.hypot(*true_u).max())
    for ax, u, title in ((axes[0], true_u, f"true: inlet {report['true']['inlet']:.4f}, omega {report['true']['omega']:.3f}"),
                         (axes[1], found_u, f"identified: inlet {report['found']['inlet']:.4f}, omega {report['found']['omega']:.3f}")):
        speed = np.ma.masked_where(solid, np.hypot(*u))
        shown = ax.imshow(speed.T, origin="lower", cmap="magma", vmin=0, vmax=high)
        wx, wy = problem.window
        ax.add_patch(Rectangle((wx.start - 0.5, wy.start - 0.5), wx.stop - wx.start, wy.stop - wy.start,
                               fill=False, edgecolor="cyan", linewidth=1.5))
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="speed (lattice units); cyan: observed window")
    fig.savefig(out / "fields.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), constrained_layout=True)
    iterations = np.arange(len(history))
    axes[0].semilogy(iterations, history[:, 0])
    axes[0].set_title("loss")
    for ax, column, name in ((axes[1], 1, "inlet"), (axes[2], 2, "omega")):
        ax.plot(iterations, history[:, column], label="estimate")
        ax.axhline(report["true"][name], color="k", linestyle="--", label="true")
        ax.set_title(f"{name} velocity" if name == "inlet" else name)
        ax.legend()
    for ax in axes:
        ax.set_xlabel("Adam iteration")
        ax.grid(True, alpha=0.3)
    fig.savefig(out / "parameters.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
