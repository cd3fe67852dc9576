"""XLB's own loop recorded on a ``wp.Tape`` with adjointgen's step: time per step, fused pairs on
and off (``step.tape_fusion``), the input saved by ``forward_save`` or copied (``step.save_in_forward``)
or the residuals kept instead (``step.tape_residuals``), against XLB's Warp forward step, and the
gradients of all bitwise equal.

Per step, the tape path records: a copy of f_0 (``wp.clone``) and the forward, or ``forward_save``
(the forward that stores each element of f_0 it reads into the saved input: one read of the
state instead of two), and in
``tape.backward()`` the adjoint: accumulating (5 state arrays) without fusion; ``adjoint_fresh``
(3 arrays) on every step but the last of a run with it. Reports the recording time (copy +
forward), the backward time and their sum per step, each as a ratio to XLB's forward step
(runs: ``accumulating`` and ``fused`` copy with wp.clone; ``fused_save`` saves in the forward;
``fused_residuals`` keeps ``forward_residuals``' values, read by the ``_residuals`` adjoints)
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


def _tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, steps: int, fusion: bool, save: bool,
              residuals: bool = False):
    """(record seconds, backward seconds, gradient of the initial f_0 as NumPy)."""
    first, second = wp.clone(f_0, requires_grad=True), wp.clone(f_1, requires_grad=True)
    step.tape_fusion, step.save_in_forward, step.tape_residuals = fusion, save, residuals
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
    step.tape_fusion = step.save_in_forward = True
    step.tape_residuals = None
    return recorded, backward, gradient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=50, help="steps per recorded tape (memory: one saved f_0 each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--config", default="D3Q19/BGK/FP32FP32", help="a D3Q19 FP32 configuration (default: periodic)")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    import adjointgen

    wp.config.quiet = True
    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size, args.config)
    step = adjointgen.differentiable(stepper)
    cotangent = wp.array(np.random.default_rng(1).standard_normal(f_0.shape).astype(np.float32))
    forward_step = _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, 10 * args.steps) / (10 * args.steps)
    result = {"card": wp.get_device().name, "config": config.label, "size": args.size, "steps": args.steps,
              "xlb_forward_step_ms": 1e3 * forward_step}
    gradients = {}
    result["forward_save_used"] = step.saves_in_forward(bc_mask)
    result["residual_count"] = step.manifest.residual_count  # values kept per cell by fused_residuals
    cells, itemsize = int(np.prod(f_0.shape[1:])), np.dtype(np.float32).itemsize
    result["kept_bytes_per_step"] = {"input copy": step.q * cells * itemsize,
                                     "residuals": step.manifest.residual_count * cells * itemsize}
    runs_wanted = [("accumulating", False, False, False), ("fused", True, False, False), ("fused_save", True, True, False)]
    runs_wanted += [("fused_residuals", True, True, True)] if step.manifest.residuals else []
    for name, fusion, save, residuals in runs_wanted:
        _tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, 2, fusion, save, residuals)  # warm-up (compiles)
        runs = [_tape_run(wp, step, f_0, f_1, bc_mask, missing_mask, cotangent, args.steps, fusion, save, residuals)
                for _ in range(args.repeats)]
        gradients[name] = runs[-1][2]
        record = statistics.median(r[0] for r in runs) / args.steps
        backward = statistics.median(r[1] for r in runs) / args.steps
        result[name] = {
            "record_step_ms": 1e3 * record, "backward_step_ms": 1e3 * backward, "tape_step_ms": 1e3 * (record + backward),
            "ratio_record": record / forward_step, "ratio_backward": backward / forward_step,
            "ratio_tape_step": (record + backward) / forward_step}
    result["record_save_over_clone"] = result["fused_save"]["record_step_ms"] / result["fused"]["record_step_ms"]
    reference = gradients["accumulating"]
    result["bitwise_equal"] = all(np.array_equal(reference, g) for g in gradients.values())
    result["bitwise_equal_save_clone"] = bool(np.array_equal(gradients["fused"], gradients["fused_save"]))
    if "fused_residuals" in gradients:
        result["bitwise_equal_residuals_save"] = bool(np.array_equal(gradients["fused_save"], gradients["fused_residuals"]))
    scale = float(np.max(np.abs(reference)))
    result["max_relative_difference"] = max(float(np.max(np.abs(g - reference))) for g in gradients.values()) / scale
    result["gradient_finite"] = all(bool(np.isfinite(g).all()) for g in gradients.values())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"tape_{config.name}_{args.size}_{args.steps}.json").write_text(text + "\n")
    # bitwise on the CPU (tests/test_tape_step.py); a GPU compiler might contract differently per variant
    return 0 if result["max_relative_difference"] < 1e-5 and result["gradient_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
