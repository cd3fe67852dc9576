"""XLB's own loop recorded on a ``wp.Tape`` with adjointgen's step: time per step, fused pairs on
and off (``step.tape_fusion``), against XLB's Warp forward step, and the gradients of both bitwise equal.

Per step, the tape path runs: a copy of f_0 (the saved input), the forward, and in
``tape.backward()`` the adjoint: accumulating (5 state arrays) without fusion; ``adjoint_fresh``
(3 arrays) on every step but the last of a run with it. Reports the recording time (copy +
forward), the backward time and their sum per step, each as a ratio to XLB's forward step
(median of ``--repeats`` runs of ``--steps`` steps each, after a warm-up run). Usage (on the device
machine): ``python benchmarks/bench_tape.py --size 192 --steps 50 --out $OUT``; on a CPU for a
smoke test: ``--size 16 --steps 4 --repeats 1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rollout import _setup, _xlb_forward  # noqa: E402
from bench_step import _source_tree_packages  # noqa: E402


def _tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, steps: int, fusion: bool):
    """(record seconds, backward seconds, gradient of the initial f_0 as NumPy)."""
    first, second = wp.clone(f_0, requires_grad=True), wp.clone(f_1, requires_grad=True)
    step.tape_fusion = fusion
    tape = wp.Tape()
    wp.synchronize()
    start = time.perf_counter()
    a, b = first, second
    with tape:
        for t in range(steps):
            a, b = step(a, b, bc_mask, missing_mask, 1.6, t)
            a, b = b, a
    wp.synchronize()
    recorded = time.perf_counter() - start
    a.grad.assign(cotangent)
    wp.synchronize()
    start = time.perf_counter()
    tape.backward()
    wp.synchronize()
    backward = time.perf_counter() - start
    gradient = first.grad.numpy()
    step.tape_fusion = True
    return recorded, backward, gradient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=50, help="steps per recorded tape (memory: one saved f_0 each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    import adjointgen

    wp.config.quiet = True
    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    step = adjointgen.differentiable(stepper)
    cotangent = wp.array(np.random.default_rng(1).standard_normal(f_0.shape).astype(np.float32))
    forward_step = _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, 10 * args.steps) / (10 * args.steps)
    result = {"card": wp.get_device().name, "size": args.size, "steps": args.steps, "xlb_forward_step_ms": 1e3 * forward_step}
    gradients = {}
    for fusion in (False, True):
        _tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, 2, fusion)  # warm-up (compiles)
        runs = [_tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, args.steps, fusion)
                for _ in range(args.repeats)]
        gradients[fusion] = runs[-1][2]
        record = statistics.median(r[0] for r in runs) / args.steps
        backward = statistics.median(r[1] for r in runs) / args.steps
        result["fused" if fusion else "accumulating"] = {
            "record_step_ms": 1e3 * record, "backward_step_ms": 1e3 * backward, "tape_step_ms": 1e3 * (record + backward),
            "ratio_record": record / forward_step, "ratio_backward": backward / forward_step,
            "ratio_tape_step": (record + backward) / forward_step}
    result["bitwise_equal"] = bool(np.array_equal(gradients[False], gradients[True]))
    scale = float(np.max(np.abs(gradients[False])))
    result["max_relative_difference"] = float(np.max(np.abs(gradients[True] - gradients[False]))) / scale
    result["gradient_finite"] = bool(np.isfinite(gradients[True]).all())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"tape_{args.size}_{args.steps}.json").write_text(text + "\n")
    # bitwise on the CPU (tests/test_tape_step.py); a GPU compiler might contract differently per variant
    return 0 if result["max_relative_difference"] < 1e-5 and result["gradient_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
