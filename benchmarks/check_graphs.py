"""On a CUDA device: a checkpointed rollout with CUDA graphs on and off (``runtime.launches.GRAPHS``)
gives bitwise-equal gradients and final states; prints the times of both (and of XLB's forward
rollout). Exit status 1 when the bits differ or no graph was replayed.

    python benchmarks/check_graphs.py --size 192 --steps 1000 --snapshots 30 [--out $OUT]

On a CPU it runs too (Warp's CPU graphs), for a smoke test: ``--size 8 --steps 20 --snapshots 3``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rollout import _setup, _xlb_forward  # noqa: E402
from bench_step import _source_tree_packages  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (after a warm-up run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.runtime import launches

    wp.config.quiet = True
    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    step = adjointgen.differentiable(stepper)
    cotangent = wp.array(np.random.default_rng(1).standard_normal(f_0.shape).astype(np.float32))
    replays = [0]
    original = wp.capture_launch

    def counting(graph, *a, **k):
        replays[0] += 1
        return original(graph, *a, **k)

    launches.wp.capture_launch = counting
    result = {"card": wp.get_device().name, "size": args.size, "steps": args.steps, "snapshots": args.snapshots,
              "xlb_forward_s": _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, args.steps)}
    outputs = {}
    for graphs in (False, True, False, True):  # alternating, so neither setting always runs first
        launches.GRAPHS = graphs
        times = []
        for _ in range(1 + args.repeats):
            wp.synchronize()
            start = time.perf_counter()
            run = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, args.steps, args.snapshots,
                                                  progress=False)
            wp.synchronize()
            forward = time.perf_counter() - start
            gradient, _ = run.backward(adj_f_0=cotangent)
            wp.synchronize()
            times.append((forward, time.perf_counter() - start))
        outputs.setdefault(graphs, (gradient.numpy(), run.f_0.numpy()))
        key = "graphs" if graphs else "no_graphs"
        best = min(times[1:], key=lambda t: t[1])
        result.setdefault(key, []).append({"forward_sweep_s": best[0], "gradient_total_s": best[1],
                                           "ratio_to_xlb_forward": best[1] / result["xlb_forward_s"],
                                           "forward_steps": run.stats.forward_steps})
    result["graph_replays"] = replays[0]
    result["bitwise_equal_gradient"] = bool(np.array_equal(outputs[True][0], outputs[False][0]))
    result["bitwise_equal_final_state"] = bool(np.array_equal(outputs[True][1], outputs[False][1]))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"check_graphs_{args.size}_{args.steps}.json").write_text(text + "\n")
    ok = result["bitwise_equal_gradient"] and result["bitwise_equal_final_state"] and replays[0] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
