"""``adjointgen bench --rollout``: a T-step rollout's gradient against XLB's forward rollout, one device.

For each configuration on an N^d grid (the state of ``adjointgen bench``), in one process:

- ``xlb_forward_s``: XLB's Warp stepper rolled out T steps (two buffers, swapped): the yardstick;
- the plan (:func:`adjointgen.runtime.plan.plan_rollout` for ``--memory``, or ``--snapshots``),
  printed before the run: stored states, bytes, forward steps, expected time; one row per plan
  kind: the segment plan that a caller asking for no scalar parameter's gradient gets
  (``scalar_gradients=False``, where the module has residuals), and the binomial plan;
- the generated forward step and the adjoint the reverse sweep runs (``adjoint_fresh`` where the
  rollout uses it), and for segment plans ``forward_residuals`` and the ``_residuals`` adjoint,
  each timed alone over T calls: the floor for that memory is the plan's steps of each kind x
  their times (:meth:`~adjointgen.runtime.plan.RolloutPlan.expected_seconds`);
- ``gradient_s``: ``checkpointed_rollout`` forward and backward (d/d f_0 of ``<c, f_T>``), with the
  forward steps it ran and the peak extra device memory (Warp's mempool high-water mark over what
  was in use before; CUDA only): the second of two rollouts in a row, as in an optimisation
  loop (the first, ``gradient_first_s``, also takes the plan's memory from the device; later ones
  reuse it from the step's pool).
Results: ``rollout.json`` and ``rollout.md`` in ``--out``, with the device name and the date.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def timed(wp, fn, calls: int) -> float:
    """Seconds for ``calls`` calls of ``fn`` after three warm-up calls, synchronised around."""
    for _ in range(3):
        fn()
    wp.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    wp.synchronize()
    return time.perf_counter() - start


def xlb_forward_rollout(wp, stepper, f_0, f_1, bc_mask, missing_mask, steps: int, omega=1.6) -> float:
    """Seconds for ``steps`` steps of XLB's own loop (warm-up first)."""
    a, b = wp.clone(f_0), wp.clone(f_1)

    def run(count):
        nonlocal a, b
        for t in range(count):
            a, b = stepper(a, b, bc_mask, missing_mask, omega, t)
            a, b = b, a

    run(3)
    wp.synchronize()
    start = time.perf_counter()
    run(steps)
    wp.synchronize()
    return time.perf_counter() - start


def _memory(wp, device, high: bool = False) -> float:
    if not device.is_cuda:
        return float("nan")
    return float(wp.get_mempool_used_mem_high(device) if high else wp.get_mempool_used_mem_current(device))


def _step_times(wp, step, f_0, f_1, bc_mask, missing_mask, steps: int, fresh: bool):
    """Seconds per step (a :class:`~adjointgen.runtime.plan.StepTimes`) of the generated forward, the
    adjoint the reverse sweep runs, and where the module has residuals ``forward_residuals`` and
    the ``_residuals`` adjoint."""
    from adjointgen.runtime.plan import StepTimes, has_kept_cells

    adj_0, adj_1 = wp.zeros_like(f_0), wp.clone(f_0)
    carry = wp.zeros_like(f_0) if fresh and (step.manifest.in_place or has_kept_cells(bc_mask)) else None
    omega = step.compute_dtype(1.6)

    def per_step(fn) -> float:
        return timed(wp, fn, steps) / steps

    forward = per_step(lambda: step.forward(f_0, f_1, bc_mask, missing_mask, omega, 0, [], check=False))
    adjoint = per_step(lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_0, adj_1, fresh=fresh, check=False,
                                            carry=carry))
    if not step.manifest.residuals:
        return StepTimes(forward, adjoint)
    kept = wp.empty((step.manifest.residual_count, *f_0.shape[1:]), dtype=step.compute_dtype, device=f_0.device)
    forward_residuals = per_step(lambda: step.forward_residuals(f_0, f_1, bc_mask, missing_mask, omega, 0, [], kept))
    adjoint_residuals = per_step(lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_0, adj_1, fresh=fresh,
                                                      check=False, carry=carry, residuals=kept))
    return StepTimes(forward, adjoint, forward_residuals, adjoint_residuals)


def _timed_rollout(wp, step, arrays, steps: int, budget: dict, scalar_gradients: bool) -> tuple:
    """(seconds of two rollouts forward and backward, the last's result, peak extra memory in bytes,
    its gradient); ``budget``: ``{"memory": ...}`` or ``{"snapshots": ...}``, as the plan was made."""
    import adjointgen

    f_0, f_1, bc_mask, missing_mask = arrays
    # warm-up of the rollout's own path (a short rollout), then the timed one
    adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, 4, 2, progress=False,
                                    scalar_gradients=scalar_gradients).backward(adj_f_0=f_0)
    cotangent = wp.clone(f_0)
    wp.synchronize()
    base = _memory(wp, f_0.device)
    seconds = []
    for _ in range(2):  # (see the module docstring: the first also allocates)
        start = time.perf_counter()
        result = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, steps, progress=False,
                                                 scalar_gradients=scalar_gradients, **budget)
        gradient, _ = result.backward(adj_f_0=cotangent)
        wp.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds, result, _memory(wp, f_0.device, high=True) - base, gradient.numpy()


def run_case(label: str, size: int, steps: int, memory=None, snapshots: int | None = None) -> list[dict]:
    """One row per plan kind the case has (segments where the module has residuals, then binomial)."""
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.runtime.plan import plan_for, reverses_fresh
    from adjointgen.tools.bench import tiled_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    shape = (size,) * config.dim
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    f_0 = wp.array(tiled_state(config, size, np.float64 if config.is_fp64 else np.float32), dtype=f_1.dtype)
    omega = wp.float64(1.6) if config.is_fp64 else 1.6
    forward = xlb_forward_rollout(wp, stepper, f_0, f_1, bc_mask, missing_mask, steps, omega)
    rows, gradients = [], []
    budget = {"memory": memory} if snapshots is None else {"snapshots": snapshots}  # --snapshots wins over --memory
    for scalar_gradients in (False, True)[1 - bool(step.manifest.residuals):]:
        plan = plan_for(step, f_0, bc_mask, steps, scalar_gradients=scalar_gradients, **budget)
        fresh = reverses_fresh(step.manifest, plan.storage)
        times = _step_times(wp, step, f_0, f_1, bc_mask, missing_mask, steps, fresh)
        expected = plan.expected_seconds(times)
        print(f"{label} {'x'.join(map(str, shape))}, T={steps}: plan {plan}; expected {expected:.3f} s "
              f"(XLB's forward rollout {forward:.3f} s)", file=sys.stderr)
        seconds, result, extra, gradient = _timed_rollout(wp, step, (f_0, f_1, bc_mask, missing_mask), steps, budget,
                                                        scalar_gradients)
        if result.plan != plan:
            raise AssertionError(f"the rollout followed another plan than the one timed: {result.plan}")
        stats, total = result.stats, seconds[-1]
        gradients.append(gradient)
        rows.append({
            "case": config.label, "grid": list(shape), "steps": steps, "plan": str(plan),
            "plan_kind": "segments" if plan.segment else "binomial", "snapshots": plan.snapshots,
            "segments": plan.segments, "plan_memory_gb": plan.memory_bytes / 1e9, "plan_forward_steps": plan.forward_steps,
            "forward_steps": stats.forward_steps, "xlb_forward_s": forward, "gradient_s": total,
            "gradient_first_s": seconds[0],
            "ratio_to_forward": total / forward, "ag_forward_step_ms": 1e3 * times.forward,
            "adjoint_kernel": "adjoint_fresh" if fresh else "adjoint", "ag_adjoint_step_ms": 1e3 * times.adjoint,
            "ag_forward_residuals_step_ms": 1e3 * times.forward_residuals,
            "ag_adjoint_residuals_step_ms": 1e3 * times.adjoint_residuals,
            "floor_s": expected, "ratio_floor_to_forward": expected / forward, "ratio_to_floor": total / expected,
            "extra_memory_gb": extra / 1e9, "gradient_finite": bool(np.isfinite(gradient).all()),
        })
    for row in rows:  # every plan gives the same gradient (bit for bit on the CPU, tests/test_segments.py)
        row["max_difference_between_plans"] = float(max(np.max(np.abs(g - gradients[0])) for g in gradients))
    return rows


def run(cases, size: int, steps: int, memory=None, snapshots: int | None = None) -> dict:
    import os

    import warp as wp

    # XLB brings JAX, whose GPU client takes 75 % of the device when it starts: a plan of more
    # than a quarter of the device would not fit next to it (the caller's setting wins)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    wp.init()
    results = {"device": wp.get_device().name, "warp": wp.__version__, "date": time.strftime("%Y-%m-%d"),
               "size": size, "steps": steps, "memory": memory, "cases": []}
    for label in cases:
        results["cases"] += run_case(label, size, steps, memory, snapshots)
    return results


def markdown(results: dict) -> str:
    from adjointgen.runtime.plan import format_bytes

    def gb(value):
        return "-" if value != value else format_bytes(value * 1e9)  # NaN: not measured (CPU)

    lines = [f"Rollout gradients on {results['device']} (Warp {results['warp']}, {results['date']}), T = {results['steps']}",
             "", "| case | grid | plan | snapshots | plan memory | forward steps | XLB forward | gradient | / forward "
             "| floor / forward | / floor | extra memory |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        kind = f"{case['segments']} segments" if case.get("plan_kind") == "segments" else "binomial"
        lines.append(f"| {case['case']} | {'x'.join(map(str, case['grid']))} | {kind} | {case['snapshots']} | "
                     f"{gb(case['plan_memory_gb'])} | {case['forward_steps']} | {case['xlb_forward_s']:.3f} s | "
                     f"{case['gradient_s']:.3f} s | {case['ratio_to_forward']:.2f}x | {case['ratio_floor_to_forward']:.2f}x | "
                     f"{case['ratio_to_floor']:.2f} | {gb(case['extra_memory_gb'])} |")
    return "\n".join(lines) + "\n"


def cmd(args, cases) -> int:
    """``adjointgen bench --rollout`` (arguments parsed by tools/cli.py)."""
    from adjointgen.tools.bench import write_results

    results = run(cases, args.size, args.steps, args.memory, args.snapshots)
    write_results(args.out, "rollout", results, markdown(results))
    return 0 if all(case["gradient_finite"] for case in results["cases"]) else 1
