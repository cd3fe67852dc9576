"""PyTorch: recover an initial velocity perturbation from the flow it becomes.

D2Q9, BGK, FP32, periodic. The initial state is the equilibrium of density 1 and a velocity field
u_0 (computed in PyTorch, so it is part of the differentiated program); after ``--steps`` steps of
the generated Warp kernels (``adjointgen.runtime.torch_face.torch_step``: a
``torch.autograd.Function``, forward and adjoint on tensors shared with Warp without copies) the
velocity is observed. ``torch.optim.Adam`` fits u_0, from zero, to the observation of a true u_0
(two shear waves). Seconds on a CPU:

    python examples/torch_inverse.py            # 32x32, 20 steps, 60 iterations
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper

CONFIG = Configuration("D2Q9", "BGK", "FP32FP32")
OMEGA = 1.2


def true_velocity(n: int):
    """Two shear waves: u_x varies along y, u_y along x (lattice units, |u| <= 0.03)."""
    x = np.arange(n) / n
    u = np.zeros((2, n, n, 1), dtype=np.float32)
    u[0] = 0.03 * np.sin(2 * np.pi * x)[None, :, None]
    u[1] = 0.02 * np.cos(4 * np.pi * x)[:, None, None]
    return u


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    adjointgen.quiet()
    import torch
    import warp as wp

    from adjointgen.runtime.torch_face import torch_step

    stepper = make_stepper(CONFIG, "warp", (args.grid, args.grid))
    step = torch_step(adjointgen.differentiable(stepper))
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    f_1, bc_mask, missing_mask = (wp.to_torch(a) for a in (f_1, bc_mask, missing_mask))  # zero-copy views
    device = f_1.device  # Warp's default device: a GPU if there is one
    c = torch.tensor(np.asarray(stepper.velocity_set._c, dtype=np.float32), device=device)  # (2, 9)
    w = torch.tensor(np.asarray(stepper.velocity_set.w, dtype=np.float32), device=device)  # (9,)

    def equilibrium(u):  # density 1, velocity u (2, nx, ny, 1) -> populations (9, nx, ny, 1)
        cu = torch.einsum("dq,dxyz->qxyz", c, u)
        return w[:, None, None, None] * (1 + 3 * cu + 4.5 * cu**2 - 1.5 * (u**2).sum(0))

    def velocity_after_steps(u_0):
        f_0, other = equilibrium(u_0), f_1
        for t in range(args.steps):
            f_0, other = step(f_0, other, bc_mask, missing_mask, OMEGA, t)
            f_0, other = other, f_0  # XLB's loop: the new state becomes f_0
        return torch.einsum("dq,qxyz->dxyz", c, f_0) / f_0.sum(0)

    truth = torch.from_numpy(true_velocity(args.grid)).to(device)
    observed = velocity_after_steps(truth).detach()
    u_0 = torch.zeros_like(truth, requires_grad=True)
    optimizer = torch.optim.Adam([u_0], lr=args.lr)
    losses, start = [], time.perf_counter()
    for _ in range(args.iterations):
        optimizer.zero_grad()
        loss = ((velocity_after_steps(u_0) - observed) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    report = {"grid": args.grid, "steps": args.steps, "iterations": args.iterations, "first_loss": losses[0],
              "final_loss": losses[-1], "wall_s": time.perf_counter() - start,
              "relative_error_of_u_0": float((u_0.detach() - truth).norm() / truth.norm())}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
