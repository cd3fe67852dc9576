"""Where a Warp rollout's gradient time goes: `checkpointed_rollout` on one device, its wall time
against Warp's GPU activity (CUDA events around every launch, copy and memset), by kernel name.

For one configuration (the state of ``adjointgen bench``), for each plan kind the module has
(segments where it has residuals, then binomial): two rollouts forward and backward (the second
is the wall time reported, as in ``adjointgen bench --rollout``), then a third under Warp's
activity timing. What the table shows beside the kernels: the copies and memsets the plan makes
(snapshots), and the wall time that no GPU activity covers (host time the GPU waited for).

    python benchmarks/profile_rollout.py --config D3Q19/BGK/FP32FP32/obstacle --memory 20GB --out DIR
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import _log, start_jax_and_warp, write_results  # noqa: E402


def _rollout(step, arrays, steps: int, memory: str, scalar_gradients: bool):
    import warp as wp

    import adjointgen

    f_0, f_1, bc_mask, missing_mask = arrays
    result = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, steps, progress=False,
                                             scalar_gradients=scalar_gradients, memory=memory)
    result.backward(adj_f_0=f_0)
    wp.synchronize()
    return result


def _profile(step, arrays, steps: int, memory: str, scalar_gradients: bool) -> dict:
    import warp as wp

    walls = []
    for _ in range(2):
        start = time.perf_counter()
        result = _rollout(step, arrays, steps, memory, scalar_gradients)
        walls.append(time.perf_counter() - start)
    wp.timing_begin(cuda_filter=wp.TIMING_ALL)
    start = time.perf_counter()
    _rollout(step, arrays, steps, memory, scalar_gradients)
    timed_wall = time.perf_counter() - start
    by_name: dict = collections.defaultdict(lambda: [0, 0.0])
    for activity in wp.timing_end():
        by_name[activity.name][0] += 1
        by_name[activity.name][1] += activity.elapsed
    gpu_ms = sum(total for _, total in by_name.values())
    label = f"{result.plan}"
    _log(f"{label}: wall {walls[-1]:.3f} s, under timing {timed_wall:.3f} s, Warp GPU {gpu_ms / 1e3:.3f} s")
    return {"plan": label, "forward_steps": result.stats.forward_steps, "wall_s": walls[-1], "first_wall_s": walls[0],
            "timed_wall_s": timed_wall, "gpu_s": gpu_ms / 1e3,
            "activities": {name: {"count": n, "ms": ms} for name, (n, ms) in sorted(by_name.items(), key=lambda kv: -kv[1][1])}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="D3Q19/BGK/FP32FP32/obstacle")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--memory", default="20GB")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    _, header = start_jax_and_warp()
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.tools.bench import tiled_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(args.config)
    stepper = make_stepper(config, "warp", (args.size,) * config.dim)
    step = adjointgen.differentiable(stepper)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    f_0 = wp.array(tiled_state(config, args.size, np.float64 if config.is_fp64 else np.float32), dtype=f_1.dtype)
    arrays = (f_0, f_1, bc_mask, missing_mask)
    kinds = (False, True) if step.manifest.residuals else (True,)
    runs = [_profile(step, arrays, args.steps, args.memory, scalar_gradients) for scalar_gradients in kinds]
    results = {**header, "config": config.label, "size": args.size, "steps": args.steps, "memory": args.memory,
               "runs": runs}
    lines = [f"# Warp rollout profiled: {header['device_kind']}, Warp {header['warp']}, {header['date']}", "",
             f"{config.label} {args.size}^{config.dim}, T = {args.steps}, memory {args.memory}. Wall: the second of two "
             "rollouts; GPU: CUDA events around each Warp activity of a third.", ""]
    for run in runs:
        idle = run["wall_s"] - run["gpu_s"]
        lines += [f"## {run['plan']}: wall {run['wall_s']:.3f} s, Warp GPU {run['gpu_s']:.3f} s (not covered: "
                  f"{idle:.3f} s), {run['forward_steps']} forward steps", "",
                  "| activity | count | ms | ms each |", "|---|---|---|---|"]
        lines += [f"| {name} | {a['count']} | {a['ms']:.1f} | {a['ms'] / a['count']:.3f} |"
                  for name, a in run["activities"].items()]
        lines.append("")
    write_results(Path(args.out), f"profile_rollout_{config.label.replace('/', '_')}_{args.memory}", results, lines)


if __name__ == "__main__":
    main()
