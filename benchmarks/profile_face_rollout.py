"""Where a gradient through the JAX face spends its time: the GPU time of the kernels and copies
the Warp callbacks launch (Warp's activity timing, CUDA events around each), against the wall
time of the same run. What is left (wall minus Warp's GPU time) is XLA's own work (the halo
refresh, the cotangent additions, any copies) and time the GPU waits for the host.

One device, D3Q19 FP32 periodic BGK, ``sharded_rollout`` (T steps) and ``jax.grad`` of
``<c, f_0 after T steps>``: omega built in (a number) and traced (a jit argument,
differentiated).

Usage (device machine): ``python benchmarks/profile_face_rollout.py --size 192 --steps 100 --out $OUT``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import _log, start_jax_and_warp, write_results  # noqa: E402


def _profile(fn, label: str, steps: int) -> dict:
    """Wall time of a warm call of ``fn`` (median of three) and Warp's GPU activity inside one
    more call, by kernel name."""
    import jax
    import warp as wp

    jax.block_until_ready(fn())  # compiles
    jax.block_until_ready(fn())
    walls = []
    for _ in range(3):  # the median of three: one timed call was an outlier once (NOTES v41)
        start = time.perf_counter()
        jax.block_until_ready(fn())
        walls.append((time.perf_counter() - start) * 1e3)
    wall = statistics.median(walls)
    wp.timing_begin(cuda_filter=wp.TIMING_ALL)
    jax.block_until_ready(fn())
    results = wp.timing_end()
    by_name: dict = collections.defaultdict(lambda: [0, 0.0])
    for result in results:
        name = result.name  # kernel (module and name), memset or memcpy
        by_name[name][0] += 1
        by_name[name][1] += result.elapsed
    warp_ms = sum(total for _, total in by_name.values())
    _log(f"{label}: wall {wall:.1f} ms, Warp GPU {warp_ms:.1f} ms")
    return {"label": label, "wall_ms": wall, "warp_gpu_ms": warp_ms, "per_step_wall_ms": wall / steps,
            "activities": {name: {"count": count, "ms": total} for name, (count, total) in sorted(by_name.items())}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--overlap", action="store_true", help="the overlapped steps (adjointgen.runtime.overlap)")
    parser.add_argument("--no-graphs", action="store_true", help="the rollout's Warp calls without CUDA graphs "
                        "(sharded_rollout(graphs=False))")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    devices, header = start_jax_and_warp()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    from adjointgen.config import Configuration
    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.runtime.sharding import Crossing, sharded_rollout
    from adjointgen.xlb.support import make_stepper, prepare_fields

    shape = (args.size,) * 3
    config = Configuration.parse("D3Q19/BGK/FP32FP32")
    stepper = make_stepper(config, "warp", shape)
    _, f_1w, bc_w, mm_w = prepare_fields(stepper, config)
    rng = np.random.default_rng(0)
    w = np.asarray(stepper.velocity_set._w, dtype=np.float32).reshape(-1, 1, 1, 1)
    f0 = jnp.asarray((w * (1 + 0.01 * rng.standard_normal((19, *shape)))).astype(np.float32))
    c = jnp.asarray(rng.standard_normal(f0.shape).astype(np.float32))
    f1, bc, mm = (jnp.asarray(a.numpy()) for a in (f_1w, bc_w, mm_w))
    rollout = sharded_rollout(jax_step(stepper), Mesh(np.array(devices[:1]), ("x",)), args.steps,
                              Crossing.of(stepper.velocity_set), overlap=args.overlap,
                              graphs=False if args.no_graphs else None)
    omega = jnp.float32(1.6)
    # every array an argument (closed over, XLA would constant-fold the padding of each at compile time)
    forward = jax.jit(lambda f, g, b, m, w: rollout(f, g, b, m, w)[0])
    built_in = jax.jit(jax.grad(lambda f, g, b, m, c: jnp.sum(c * rollout(f, g, b, m, 1.6)[0])))
    traced = jax.jit(jax.grad(lambda f, g, b, m, w, c: jnp.sum(c * rollout(f, g, b, m, w)[0]), argnums=(0, 4)))
    runs = [_profile(lambda: forward(f0, f1, bc, mm, omega), "forward, omega traced", args.steps),
            _profile(lambda: built_in(f0, f1, bc, mm, c), "gradient, omega built in", args.steps),
            _profile(lambda: traced(f0, f1, bc, mm, omega, c), "gradient, omega traced", args.steps)]
    results = {**header, "size": args.size, "steps": args.steps, "overlap": args.overlap, "graphs": not args.no_graphs, "runs": runs}
    lines = [f"# Rollout through the JAX face, profiled: {header['device_kind']}, JAX {header['jax']}, Warp {header['warp']}, "
             f"{header['date']}", "", f"D3Q19 FP32 periodic {args.size}^3, T = {args.steps}, one device, overlap={args.overlap}, "
             f"graphs={not args.no_graphs}. "
             "Warp GPU time: "
             "CUDA events around each Warp launch and copy in the callbacks; the rest of the wall time is XLA's work and "
             "host waits.", ""]
    for run in runs:
        lines += [f"## {run['label']}: wall {run['wall_ms']:.1f} ms ({run['per_step_wall_ms']:.3f} ms a step), "
                  f"Warp GPU {run['warp_gpu_ms']:.1f} ms", "", "| activity | count | ms | ms a step |", "|---|---|---|---|"]
        lines += [f"| {name} | {a['count']} | {a['ms']:.2f} | {a['ms'] / args.steps:.3f} |" for name, a in run["activities"].items()]
        lines.append("")
    write_results(Path(args.out), "profile_face_rollout", results, lines)


if __name__ == "__main__":
    main()
