"""Rollouts through the JAX face on the devices of one host: forward and gradient of ``T`` steps,
the three ways of running them, in one process.

Rows (D3Q19 FP32 periodic BGK, or ``--config``; ``--size N`` -> N^3 per device, ratios to XLB's own Warp forward
rollout of the same grid in the same process):

- ``xlb``: XLB's Warp stepper, ``T`` steps of its two-buffer loop (no JAX);
- ``face``: the generated step's JAX face in a ``jax.lax.scan``, one step per iteration, as a user
  would write XLB's loop (one device, no halos);
- ``step_loop``: :func:`~adjointgen.runtime.sharding.sharded_step` in a scan (every step pads the
  slabs into new arrays and cuts the results back out);
  (both in checkpointed segments of about sqrt(T) steps, as the rollout runs them, so that the
  gradients fit in memory: every way stores the same states)
- ``rollout``: :func:`~adjointgen.runtime.sharding.sharded_rollout` (slabs padded once, crossing
  populations exchanged per step, checkpointed segments), ``overlap=False``;
- ``rollout_overlap``: the same with ``overlap=True`` (:mod:`adjointgen.runtime.overlap`: the
  interior computed while the halos travel; on one device the exchange is a copy to itself, so
  the row shows what the split costs);
- ``rollout_calls``: ``rollout`` with ``graphs=False``: Warp runs the Python of each call every
  time instead of replaying CUDA graphs it captured (the default on CUDA devices).
- ``rollout_dw``: the same with omega a jit argument, differentiated too (the gradient is then
  that of ``f_0`` and omega): omega is traced, so the kernels read it on the device
  (``device_omega`` variants) instead of having it built in.

In the other rows omega is a number known when JAX traces (built into the steps); ``step_loop``
traces it anyway (``sharded_step`` marks it device-varying).

Each sharded row runs on a mesh of 1 device and, where the host has more, on 2, 4, 8, ... of them
and on all (``--counts`` to choose), weak (the grid grows along x with the devices) and strong
(the one-device grid split n ways; a count that does not divide it is skipped, and said so). The
gradient is that of <c, f_0 after T steps> with respect to the initial f_0; the sharded
gradients are compared with the one-device face's.

Usage (device machine): ``python benchmarks/bench_sharded_rollout.py --size 192 --steps 100 --out $OUT``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import _log, _timed, start_jax_and_warp, write_results  # noqa: E402


def _xlb_rollout_ms(stepper, arrays, steps: int, repeats: int) -> float:
    """Median time of ``steps`` steps of XLB's own Warp loop."""
    import statistics

    import warp as wp

    f_0, f_1, bc_mask, missing_mask = arrays
    stepper(f_0, f_1, bc_mask, missing_mask, 1.6, 0)
    wp.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in range(steps):
            f_0, f_1 = stepper(f_0, f_1, bc_mask, missing_mask, 1.6, t)
            f_0, f_1 = f_1, f_0
        wp.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _rows(shape, devices, steps: int, repeats: int, reference=None, label: str = "D3Q19/BGK/FP32FP32", only=None):
    """The face, step-loop and rollout rows on ``devices`` (and XLB's rollout on one device)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import warp as wp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adjointgen.config import Configuration
    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.runtime.overlap import refusal
    from adjointgen.runtime.sharding import Crossing, sharded_rollout, sharded_step
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    stepper = make_stepper(config, "warp", shape)
    f_0w, f_1w, bc_w, mm_w = prepare_fields(stepper, config)
    rng = np.random.default_rng(0)
    w = np.asarray(stepper.velocity_set._w, dtype=np.float32).reshape(-1, 1, 1, 1)
    f0 = (w * (1 + 0.01 * rng.standard_normal((19, *shape)))).astype(np.float32)
    if config.boundaries:  # the fields prepared for the boundary conditions (a flow at rest with the
        f0 = f_0w.numpy().copy()  # inlet's velocity imposed at once went non-finite in ~20 steps)
    f1 = f_1w.numpy().copy()  # (copies: on a CPU .numpy() is a view, and XLB's rollout below steps in place)
    c = rng.standard_normal(f0.shape).astype(np.float32)
    rows = {}
    if len(devices) == 1:
        f_0w.assign(f0)
        rows["xlb_forward_ms"] = _xlb_rollout_ms(stepper, (f_0w, f_1w, bc_w, mm_w), steps, repeats)
        _log(f"xlb rollout {rows['xlb_forward_ms']:.2f} ms")
    step = jax_step(stepper)
    mesh = Mesh(np.array(devices), ("x",))
    place = NamedSharding(mesh, P(None, "x"))
    f0, f1, bc, mm, c = [jax.device_put(jnp.asarray(a), place) for a in (f0, f1, bc_w.numpy(), mm_w.numpy(), c)]
    omega = jnp.float32(1.6)
    segment = 2 * max(1, int(round(steps ** 0.5 / 2)))  # as sharded_rollout's default

    def scanned(one):
        """``steps`` steps of ``one`` in checkpointed segments, as sharded_rollout runs them."""
        def run(f, g, bc, mm, _):
            def body(state, _):
                left, new = one(state[0], state[1], bc, mm, omega)
                return (new, left), None

            def segment_of(count):
                return jax.checkpoint(lambda s: jax.lax.scan(body, s, None, length=count)[0])

            whole, rest = divmod(steps, segment)
            state = jax.lax.scan(lambda s, _: (segment_of(segment)(s), None), (f, g), None, length=whole)[0]
            return segment_of(rest)(state) if rest else state
        return run

    crossing = Crossing.of(stepper.velocity_set)
    rollout = sharded_rollout(step, mesh, steps, crossing, segment=segment, overlap=False)
    overlapped = None if refusal(step) else sharded_rollout(step, mesh, steps, crossing, segment=segment, overlap=True)
    uncaptured = sharded_rollout(step, mesh, steps, crossing, segment=segment, overlap=False, graphs=False)
    # (run, whether omega is the run's traced argument, also differentiated)
    ways = {"step_loop": (scanned(sharded_step(step, mesh, writes_f_0=step.writes_f_0)), False),
            "rollout": (lambda f, g, bc, mm, _: rollout(f, g, bc, mm, omega), False),
            "rollout_dw": (rollout, True),
            "rollout_overlap": (lambda f, g, bc, mm, _: overlapped(f, g, bc, mm, omega), False),
            "rollout_calls": (lambda f, g, bc, mm, _: uncaptured(f, g, bc, mm, omega), False)}
    if overlapped is None:
        del ways["rollout_overlap"]
    if step.step.manifest.listed_ids:  # the masks closed over, known when JAX traces: per-device lists
        ways["rollout_split"] = (lambda f, g, _bc, _mm, _: rollout(f, g, bc, mm, omega), False)
        ways["rollout_split_dw"] = (lambda f, g, _bc, _mm, w: rollout(f, g, bc, mm, w), True)
    if len(devices) == 1:
        ways = {"face": (scanned(step), False), **ways}
    gradients = {}
    ways = {name: way for name, way in ways.items() if only is None or name in only or name == "rollout"}
    for name, (run, traced) in ways.items():
        forward = jax.jit(lambda f, g, bc, mm, w, run=run: run(f, g, bc, mm, w)[0])
        gradient = jax.jit(jax.grad(lambda f, g, bc, mm, w, c, run=run: jnp.sum(c * run(f, g, bc, mm, w)[0]),
                                    argnums=(0, 4) if traced else 0))
        rows[f"{name}_forward_ms"] = _timed(lambda forward=forward: forward(f0, f1, bc, mm, omega), repeats, 1)
        rows[f"{name}_gradient_ms"] = _timed(lambda gradient=gradient: gradient(f0, f1, bc, mm, omega, c), repeats, 1)
        found = gradient(f0, f1, bc, mm, omega, c)
        gradients[name] = np.asarray(found[0] if traced else found)
        _log(f"{name} on {len(devices)}: forward {rows[f'{name}_forward_ms']:.2f} ms, gradient {rows[f'{name}_gradient_ms']:.2f} ms")
    base = reference if reference is not None else gradients.get("face")
    rows["nonfinite"] = {name: int((~np.isfinite(g)).sum()) for name, g in gradients.items()}  # expected 0 each
    for way in ("rollout_dw", "rollout_overlap", "rollout_calls", "rollout_split", "rollout_split_dw"):  # ~0
        if way in gradients:
            rows[f"{way}_vs_rollout"] = float(np.max(np.abs(gradients[way] - gradients["rollout"])))
    if base is not None and base.shape == gradients["rollout"].shape:
        rows["rollout_gradient_vs_face"] = float(np.max(np.abs(gradients["rollout"] - base)))
    wp.synchronize()
    return rows, gradients.get("face")


def device_counts(available: int) -> list[int]:
    """The mesh sizes a scaling run times: 1, the powers of two below ``available``, and ``available``."""
    return sorted({1, available} | {2 ** k for k in range(available.bit_length()) if 2 ** k < available})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="D3Q19/BGK/FP32FP32", help="a configuration label, e.g. "
                        "D3Q19/BGK/FP32FP32/obstacle (its rows add rollout_split: the ZouHe cells from lists)")
    parser.add_argument("--ways", default=None, help="the rows to time beside rollout, e.g. rollout_split,face "
                        "(default: all)")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--counts", default=None, help="mesh sizes to time beside 1, e.g. 2,4,8 (default: "
                        "the powers of two below the host's device count, and that count)")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    everything, header = start_jax_and_warp()
    only = None if args.ways is None else set(args.ways.split(","))
    n = len(everything)
    counts = ([int(c) for c in args.counts.split(",")] if args.counts else device_counts(n))
    results = {**header, "config": args.config, "devices": n, "size": args.size, "steps": args.steps, "rows": [], "skipped": []}
    one, face_gradient = _rows((args.size,) * 3, everything[:1], args.steps, args.repeats, label=args.config, only=only)
    results["rows"].append({"scaling": "-", "devices": 1, "grid": [args.size] * 3, **one})
    for count in [c for c in counts if 1 < c <= n]:
        # weak: the grid grows with the devices along x; strong: the same grid split `count` ways
        for scaling, grid in (("weak", (count * args.size, args.size, args.size)), ("strong", (args.size,) * 3)):
            if grid[0] % count:
                results["skipped"].append(f"{scaling} on {count} devices: {grid[0]} planes do not split {count} ways")
                continue
            many, _ = _rows(grid, everything[:count], args.steps, args.repeats,
                            face_gradient if scaling == "strong" else None, label=args.config, only=only)
            results["rows"].append({"scaling": scaling, "devices": count, "grid": list(grid), **many})
    xlb = one["xlb_forward_ms"]
    lines = [f"# Rollouts through the JAX face: {n} x {results['device_kind']}, JAX {results['jax']}, Warp {results['warp']}, "
             f"{results['date']}", "", f"{args.config}, {args.size}^3 on one device, T = {args.steps} steps, median "
             f"of {args.repeats}; ratios to XLB's Warp forward rollout on one device ({xlb:.1f} ms); efficiency against the "
             "same way on one device (weak: t1 / tn, strong: t1 / (n tn)).", "",
             "| scaling | devices | grid | way | forward ms | forward / XLB | gradient ms | gradient / XLB | efficiency fwd / grad |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for way in ("face", "step_loop", "rollout", "rollout_dw", "rollout_overlap", "rollout_calls", "rollout_split",
                    "rollout_split_dw"):
            if f"{way}_forward_ms" in row:
                fwd, grad = row[f"{way}_forward_ms"], row[f"{way}_gradient_ms"]
                p = row["devices"] if row["scaling"] == "strong" else 1
                efficiency = (f"{one[f'{way}_forward_ms'] / (p * fwd):.2f} / {one[f'{way}_gradient_ms'] / (p * grad):.2f}"
                              if row["devices"] > 1 else "-")
                lines.append(f"| {row['scaling']} | {row['devices']} | {'x'.join(map(str, row['grid']))} | {way} | {fwd:.1f} | "
                             f"{fwd / xlb:.2f}x | {grad:.1f} | {grad / xlb:.2f}x | {efficiency} |")
    for row in results["rows"]:
        if "rollout_gradient_vs_face" in row:
            lines += ["", f"Rollout gradient on {row['devices']} device(s) vs the face's on one (same grid, max abs difference): "
                          f"{row['rollout_gradient_vs_face']:.1e}."]
        others = "; ".join(f"{way} {row[f'{way}_vs_rollout']:.1e}" for way in
                           ("rollout_dw", "rollout_overlap", "rollout_calls", "rollout_split", "rollout_split_dw")
                           if f"{way}_vs_rollout" in row)
        lines += [f"Gradients against the rollout row's, {row['devices']} device(s), {row['scaling']} (max abs "
                  f"difference): {others}; non-finite entries: {row['nonfinite']}."]
    lines += [f"Skipped: {reason}." for reason in results["skipped"]]
    write_results(Path(args.out), "bench_sharded_rollout", results, lines)


if __name__ == "__main__":
    main()
