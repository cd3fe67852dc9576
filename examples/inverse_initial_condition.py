"""Initial-condition inverse problem: find f_0 so that the density after N steps matches a target.

D2Q9, BGK, FP32, periodic. The unknown is the whole initial population field f_0 (9 x n x n
numbers); the loss is the mean squared difference between the density after ``--steps`` steps
and a target pattern. Its gradient comes from adjointgen's generated adjoint kernels through
``adjointgen.checkpointed_rollout`` (binomial checkpointing, ``--snapshots`` stored states), and
the same problem is solved with XLB's JAX backend and ``jax.value_and_grad`` for comparison of
the loss curves and the wall time. Both use Adam from the same start (seeded), with the same
settings: Warp's ``warp.optim.Adam`` on the Warp array f_0, optax's ``adam`` on the JAX side.

Writes into --out: target_and_result.png (target, density after N steps from the first guess
and from the optimised f_0) and loss.png (loss against iteration for both; wall times in the
legend; below, their relative difference), plus results.json. Needs matplotlib and optax
(``pip install adjointgen[examples]``).

CPU, reduced (a few minutes):  python examples/inverse_initial_condition.py
GPU, full size:                 python examples/inverse_initial_condition.py --grid 128 --steps 200 --iterations 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper

CONFIG = Configuration("D2Q9", "BGK", "FP32FP32")
OMEGA = 1.0


def target_density(n: int) -> np.ndarray:
    """A ring and a bar, 2 % above and below the mean density, smoothed over two cells."""
    y, x = np.mgrid[0:n, 0:n] / n
    ring = np.exp(-(((np.hypot(x - 0.35, y - 0.5) - 0.18) / 0.05) ** 2))
    bar = np.exp(-(((x - 0.75) / 0.05) ** 2)) * (np.abs(y - 0.5) < 0.3)
    return (1.0 + 0.02 * ring - 0.02 * bar).astype(np.float32)


def equilibrium_at_rest(rho: np.ndarray) -> np.ndarray:
    """Populations at rest with density ``rho``, in XLB's D2Q9 ordering of the weights."""
    w = np.asarray(make_stepper(CONFIG, "warp", rho.shape).velocity_set.w, dtype=np.float32)
    return (w[:, None, None, None] * rho[None, :, :, None]).astype(np.float32)  # XLB's 2D fields: (q, nx, ny, 1)


ADAM_EPS = 1e-12  # the gradients are ~1e-7 per population: Adam's usual 1e-8 would swamp them


def solve_with_adjointgen(f_start, target, steps, iterations, snapshots, lr, progress):
    import warp as wp
    import warp.optim
    from tqdm import tqdm

    n = target.shape[0]
    stepper = make_stepper(CONFIG, "warp", (n, n))
    f_0, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    step = adjointgen.differentiable(stepper)
    f_0.assign(f_start)
    # the unknown is f_0 itself (a rollout leaves its inputs as they were); Warp's Adam updates 1D
    # float32 arrays, so it gets flat views of f_0 and of the gradient
    adam, losses = wp.optim.Adam([f_0.flatten()], lr=lr, eps=ADAM_EPS), []
    start = time.perf_counter()
    for _ in tqdm(range(iterations), desc="adjointgen", disable=not progress):
        result = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, OMEGA, steps, snapshots, progress=False)
        rho = result.f_0.numpy().sum(axis=0)[..., 0]  # the newest state is f_0 of the result
        residual = rho - target
        losses.append(float(np.mean(residual**2)))
        adj = np.broadcast_to((2.0 * residual / residual.size)[None, :, :, None], result.f_0.shape).astype(np.float32)
        grad_f_0, _ = result.backward(adj_f_0=wp.array(adj, dtype=wp.float32, device=result.f_0.device))
        adam.step([grad_f_0.flatten()])
    wall = time.perf_counter() - start
    final = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, OMEGA, steps, snapshots, progress=False)
    return f_0.numpy(), final.f_0.numpy().sum(axis=0)[..., 0], losses, wall


def solve_with_jax(f_start, target, steps, iterations, lr, progress):
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    try:
        import optax
    except ModuleNotFoundError:
        raise SystemExit("the XLB-JAX comparison uses optax's Adam: pip install optax (or adjointgen[examples]), "
                         "or pass --no-jax") from None

    n = target.shape[0]
    stepper = make_stepper(CONFIG, "jax", (n, n))
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    goal = jnp.asarray(target)

    def rollout(f):
        def body(t, pair):
            return stepper(pair[0], pair[1], bc_mask, missing_mask, OMEGA, t)[::-1]  # (new, old)

        new, _ = jax.lax.fori_loop(0, steps, body, (f, f_1))
        return new

    def density(f):
        return jnp.sum(rollout(f.reshape(f_1.shape)), axis=0).reshape(goal.shape)

    def loss(f):
        return jnp.mean((density(f) - goal) ** 2)

    adam = optax.adam(lr, eps=ADAM_EPS)

    @jax.jit
    def iteration(f, state):
        value, grad = jax.value_and_grad(loss)(f)
        updates, state = adam.update(grad, state)
        return optax.apply_updates(f, updates), state, value

    x = jnp.asarray(f_start)
    state, losses = adam.init(x), []
    iteration(x, state)[2].block_until_ready()  # compile outside the timed loop
    start = time.perf_counter()
    for _ in tqdm(range(iterations), desc="XLB-JAX", disable=not progress):
        x, state, value = iteration(x, state)
        losses.append(float(value))
    wall = time.perf_counter() - start
    return np.asarray(x), np.asarray(density(x)), losses, wall


def plot(out: Path, target, first, result, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4), constrained_layout=True)
    low, high = float(target.min()), float(target.max())
    for ax, image, title in zip(axes, (target, first, result),
                                ("target density", "after N steps, first guess", "after N steps, optimised f_0")):
        shown = ax.imshow(image.T, origin="lower", cmap="viridis", vmin=low, vmax=high)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="density")
    fig.savefig(out / "target_and_result.png", dpi=110)
    plt.close(fig)

    plot_losses(plt, out / "loss.png", curves)


def plot_losses(plt, path: Path, curves: dict):
    """The loss curves (distinct lines and markers: they lie on top of each other) and, with two,
    their relative difference in a second panel."""
    two = len(curves) == 2
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(6, 6 if two else 4), sharex=True, squeeze=False,
                             height_ratios=[2, 1] if two else None, constrained_layout=True)
    styles = [dict(linestyle="-", marker="o", markevery=10, markersize=5),
              dict(linestyle="--", marker="x", markevery=(5, 10), markersize=6)]
    for style, (label, (losses, wall)) in zip(styles, curves.items()):
        axes[0, 0].semilogy(np.arange(1, len(losses) + 1), losses, label=f"{label} ({wall:.1f} s)", **style)
    axes[0, 0].set_ylabel("mean squared density error")
    axes[0, 0].legend()
    if two:
        (a, _), (b, _) = curves.values()
        difference = np.abs(np.asarray(a) - np.asarray(b)) / np.asarray(b)
        axes[1, 0].semilogy(np.arange(1, len(a) + 1), np.maximum(difference, 1e-12), color="k")
        axes[1, 0].set_ylabel("relative difference\n|first - second| / second")
    axes[-1, 0].set_xlabel("Adam iteration")
    for ax in axes[:, 0]:
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=48)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-jax", action="store_true", help="skip the XLB-JAX comparison")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-figures", action="store_true", help="results.json only (a machine without matplotlib)")
    parser.add_argument("--out", default="examples/output/inverse_initial_condition")
    args = parser.parse_args(argv)
    adjointgen.quiet()  # no Warp module-load lines between the progress bars

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = target_density(args.grid)
    rng = np.random.default_rng(args.seed)
    rest = equilibrium_at_rest(np.ones_like(target))
    f_start = (rest * (1.0 + 0.01 * rng.standard_normal(rest.shape))).astype(np.float32)

    x, result, losses, wall = solve_with_adjointgen(f_start, target, args.steps, args.iterations, args.snapshots,
                                                   args.lr, not args.no_progress)
    curves = {"adjointgen + Warp": (losses, wall)}
    report = {"grid": args.grid, "steps": args.steps, "iterations": args.iterations, "seed": args.seed,
              "adjointgen": {"first_loss": losses[0], "final_loss": losses[-1], "wall_s": wall}}
    if not args.no_jax:
        _, _, jax_losses, jax_wall = solve_with_jax(f_start, target, args.steps, args.iterations, args.lr, not args.no_progress)
        curves["XLB-JAX jax.grad"] = (jax_losses, jax_wall)
        report["xlb_jax"] = {"first_loss": jax_losses[0], "final_loss": jax_losses[-1], "wall_s": jax_wall,
                             "max_relative_loss_difference": float(np.max(np.abs(np.array(jax_losses) - losses) / np.array(jax_losses)))}
    if not args.no_figures:
        first = solve_with_adjointgen(f_start, target, args.steps, 0, args.snapshots, args.lr, False)[1]
        plot(out, target, first, result, curves)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
