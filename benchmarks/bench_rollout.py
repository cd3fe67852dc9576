"""Gradient of a T-step rollout on one GPU: adjointgen's checkpointed rollout, Warp's tape, jax.grad.

One mode per process (the Warp-tape mode changes global Warp switches that would also change
XLB's own kernels):

- ``adjointgen``: XLB's Warp stepper rolled out T steps (the forward baseline, two buffers), then
  ``adjointgen.checkpointed_rollout`` with ``--snapshots`` forward and backward (d/d f_0 of
  ``<c, f_T>``); reports the total gradient time over the forward time, the recomputed steps, and
  the extra memory (Warp mempool high-water mark over what the fields use);
- ``tape``: Warp's automatic tape on XLB's stepper with ``max_unroll = 64`` and
  ``enable_vector_component_overwrites = True`` (the switches that make its gradient right,
  FINDINGS) and one state array per step, as XLB's differentiable example does; T as memory allows;
- ``jax``: ``jax.grad`` of the same loss through XLB's JAX stepper over T steps, plain and with
  ``jax.checkpoint`` around each step; peak memory from the device's statistics;
- ``parts``: the pieces of a rollout's backward timed alone over T calls (generated forward step,
  generated adjoint step, copying a step's input).

``adjointgen bench --rollout`` (adjointgen/tools/bench_rollout.py) is the ``adjointgen`` mode for one
plan, with the floor, from the CLI; this script keeps the other modes and several plans per process.
Each mode times XLB's Warp forward over its own T in the same process for its ratio. Usage (on the
device machine): ``python benchmarks/bench_rollout.py --mode adjointgen --size 192 --steps 1000
--snapshots 15 --out $OUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402


def _setup(size: int, label: str = "D3Q19/BGK/FP32FP32"):
    import numpy as np
    import warp as wp

    from adjointgen.config import Configuration
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    stepper = make_stepper(config, "warp", (size, size, size))
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    rng = np.random.default_rng(0)
    w = np.asarray(stepper.velocity_set.w, dtype=np.float32).reshape(-1, 1, 1, 1)
    f_0.assign((w * (1.0 + 0.01 * rng.standard_normal(f_0.shape, dtype=np.float32))).astype(np.float32))
    wp.synchronize()
    return config, stepper, f_0, f_1, bc_mask, missing_mask


def _memory(wp, device, high: bool = False) -> float:
    """Warp's mempool use on a GPU (current or high-water mark), bytes; NaN on the CPU."""
    if not device.is_cuda:
        return float("nan")
    return float(wp.get_mempool_used_mem_high(device) if high else wp.get_mempool_used_mem_current(device))


def _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, steps: int) -> float:
    from adjointgen.tools.bench_rollout import xlb_forward_rollout  # after _source_tree_packages()

    return xlb_forward_rollout(wp, stepper, f_0, f_1, bc_mask, missing_mask, steps)


def _timed(wp, fn, steps: int) -> float:
    from adjointgen.tools.bench_rollout import timed

    return timed(wp, fn, steps)


def run_adjointgen(args) -> dict:
    """One process: XLB's forward rollout, the generated step's parts (for the floor), then one
    checkpointed rollout per ``--snapshots`` value, in increasing order (the mempool high-water
    mark then belongs to the largest run so far)."""
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.runtime.plan import StepTimes

    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    step = adjointgen.differentiable(stepper)
    device = f_0.device
    if args.mempool_keep_gb and device.is_cuda:
        # keep freed memory in Warp's pool instead of returning it to the driver at each sync
        wp.set_mempool_release_threshold(device, int(args.mempool_keep_gb * 1e9))
    state_bytes = 2 * f_0.size * 4
    forward = _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, args.steps)
    # the floor's parts, as the rollout runs them: a generated forward step and the adjoint its reverse sweep uses
    adj_0, adj_1 = wp.zeros_like(f_0), wp.clone(f_0)
    ag_forward = _timed(wp, lambda: step.forward(f_0, f_1, bc_mask, missing_mask, 1.6, 0, [], check=False), args.steps)
    ag_adjoint = _timed(wp, lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_0, adj_1, fresh=True, check=False),
                        args.steps)
    adj_0 = adj_1 = None  # freed before the rollouts
    # warm-up of the rollout's own path (a short rollout)
    adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, 4, 2, progress=False).backward(adj_f_0=f_0)
    cotangent = wp.clone(f_0)
    runs = []
    budgets = [{"snapshots": n} for n in sorted(args.snapshots)] + [{"memory": m} for m in args.memory]
    for budget in budgets:
        plan = adjointgen.plan_rollout(step, f_0, bc_mask, args.steps, budget["memory"]) if "memory" in budget else None
        if plan is not None:
            print(f"plan for memory={budget['memory']}: {plan}; expected "
                  f"{plan.expected_seconds(StepTimes(ag_forward / args.steps, ag_adjoint / args.steps)):.3f} s", file=sys.stderr)
        wp.synchronize()
        base = _memory(wp, device)
        start = time.perf_counter()
        result = adjointgen.checkpointed_rollout(step, f_0, f_1, bc_mask, missing_mask, 1.6, args.steps, progress=False,
                                                 **budget)
        wp.synchronize()
        forward_sweep = time.perf_counter() - start
        gradient, _ = result.backward(adj_f_0=cotangent)
        wp.synchronize()
        total = time.perf_counter() - start
        high = _memory(wp, device, high=True)
        floor = result.plan.expected_seconds(StepTimes(ag_forward / args.steps, ag_adjoint / args.steps))
        runs.append({
            **budget, "plan": str(result.plan), "plan_memory_gb": result.plan.memory_bytes / 1e9,
            "snapshots": result.plan.snapshots, "ag_forward_sweep_s": forward_sweep, "ag_gradient_total_s": total,
            "ratio_gradient_to_forward": total / forward, "forward_steps": result.stats.forward_steps,
            "peak_stored_states": result.stats.peak_stored_states, "extra_memory_gb": (high - base) / 1e9,
            "floor_s": floor, "ratio_to_floor": total / floor, "ratio_floor_to_forward": floor / forward,
            "gradient_finite": bool(np.isfinite(gradient.numpy()).all()),
        })
        del result, gradient
    return {
        "mode": "adjointgen", "steps": args.steps, "xlb_forward_s": forward, "ag_forward_step_ms": 1e3 * ag_forward / args.steps,
        "ag_adjoint_fresh_step_ms": 1e3 * ag_adjoint / args.steps, "mempool_keep_gb": args.mempool_keep_gb,
        "state_pair_gb": state_bytes / 1e9, "runs": runs,
    }


def run_tape(args) -> dict:
    import warp as wp

    wp.config.max_unroll = 64
    wp.config.enable_vector_component_overwrites = True
    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    device = f_0.device
    forward = _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, args.steps)
    out = {"mode": "tape", "steps": args.steps, "xlb_forward_s": forward}
    for attempt in ("warm-up", "timed"):
        wp.synchronize()
        base = _memory(wp, device)
        start = time.perf_counter()
        states = [wp.clone(f_0, requires_grad=True)]
        tape = wp.Tape()
        try:
            with tape:
                for t in range(args.steps if attempt == "timed" else 2):
                    new = wp.zeros_like(f_0, requires_grad=True)
                    stepper(states[-1], new, bc_mask, missing_mask, 1.6, t)
                    states.append(new)
            wp.synchronize()
            tape.backward(grads={states[-1]: wp.clone(f_0)})
            wp.synchronize()
        except RuntimeError as exc:  # out of memory
            out["error"] = str(exc)[:200]
            return out
        elapsed = time.perf_counter() - start
        high = _memory(wp, device, high=True)
        del tape, states
    out.update(tape_gradient_total_s=elapsed, ratio_gradient_to_forward=elapsed / forward,
               extra_memory_gb=(high - base) / 1e9)
    return out


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import warp as wp

    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    forward = _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, args.steps)
    from adjointgen.xlb.support import make_stepper

    jstepper = make_stepper(config, "jax", (args.size,) * 3)
    _, jf_1, jbc, jmissing = jstepper.prepare_fields()
    x = jnp.asarray(f_0.numpy().reshape((19,) + (args.size,) * 3))
    c = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape, dtype=np.float32))
    out = {"mode": "jax", "steps": args.steps, "xlb_forward_s": forward}
    for name, remat in (("jax_grad", False), ("jax_grad_checkpoint", True)):
        def one(f, t):
            return jstepper(f, jf_1, jbc, jmissing, 1.6, t)[1]

        body = jax.checkpoint(one, static_argnums=(1,)) if remat else one

        def loss(f, body=body):
            for t in range(args.steps):
                f = body(f, t)
            return jnp.sum(f * c)

        grad = jax.jit(jax.grad(loss))
        try:
            grad(x).block_until_ready()  # compile and warm up
            start = time.perf_counter()
            grad(x).block_until_ready()
            elapsed = time.perf_counter() - start
            stats = jax.devices()[0].memory_stats() or {}
            out[name] = {"total_s": elapsed, "ratio_gradient_to_forward": elapsed / forward,
                         "peak_memory_gb": stats.get("peak_bytes_in_use", float("nan")) / 1e9}
        except Exception as exc:  # noqa: BLE001 - out of memory is the expected failure
            out[name] = {"error": str(exc)[:200]}
    return out


def run_parts(args) -> dict:
    """What a checkpointed rollout's backward is made of, each part timed alone over T calls:
    the generated forward step, the generated adjoint step, the copy of a step's input f_0."""
    import warp as wp

    import adjointgen

    config, stepper, f_0, f_1, bc_mask, missing_mask = _setup(args.size)
    step = adjointgen.differentiable(stepper)
    adj_0, adj_1 = wp.zeros_like(f_0), wp.clone(f_0)

    def timed(fn) -> float:
        return _timed(wp, fn, args.steps)

    parts = {
        "xlb_forward_s": _xlb_forward(wp, stepper, f_0, f_1, bc_mask, missing_mask, args.steps),
        "ag_forward_s": timed(lambda: step.forward(f_0, f_1, bc_mask, missing_mask, 1.6, 0)),
        "ag_adjoint_s": timed(lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_0, adj_1)),
        "clone_f_0_s": timed(lambda: wp.clone(f_0)),
    }
    return {"mode": "parts", "steps": args.steps, **parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("adjointgen", "tape", "jax", "parts"), required=True)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, nargs="*", default=[15], help="adjointgen mode: one rollout per value")
    parser.add_argument("--memory", nargs="*", default=[], help="adjointgen mode: one rollout planned per budget, e.g. 20GB")
    parser.add_argument("--mempool-keep-gb", type=float, default=0.0,
                        help="adjointgen mode: Warp mempool release threshold (GB) during the run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import warp as wp

    wp.config.quiet = True
    result = {"adjointgen": run_adjointgen, "tape": run_tape, "jax": run_jax, "parts": run_parts}[args.mode](args)
    result["card"] = wp.get_device().name
    result["size"] = args.size
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"rollout_{args.mode}_{args.steps}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
