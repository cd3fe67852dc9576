"""A/B timing of two generated modules for one configuration, in one process on one GPU.

Ratios between separate ``adjointgen bench`` runs move with the card's state (XLB's forward at
D3Q19 FP32 192^3 took 0.264 ms in one H200 run and 0.310 ms in another), so a change to the
emitted kernels is judged here: both modules' kernels (forward and every adjoint variant) run on the
same inputs, each launched with the arrays its own parameter list names (so modules of different
layouts compare), alternating A, B, A, B, ... and each kernel's time is the
median over all its rounds. The modules are files (e.g. one from main's ``generated/`` and one
built by an experimental branch with ``adjointgen build --out``).

    python benchmarks/module_ab.py --config D3Q19/BGK/FP32FP32 --a old.py --b new.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402


def _load(path: str, name: str):
    """A generated module file, checked and with its manifest (both files must be intact)."""
    from adjointgen.runtime.modules import load_checked

    return load_checked(Path(path), name)


def kernel_inputs(config, size: int, cotangent: str = "random", slot_count: int = 0, residual_count: int = 0):
    """Every array or value a generated kernel's parameter list may name, by label (so modules of
    different layouts, and variants of one, are launched alike): the tiled random state on a
    ``size``^d grid, XLB's masks, the output adjoints (``cotangent``: "random" or "zero"), and,
    with ``slot_count``, the adjoint's slots, with ``residual_count`` the residuals' array (one
    slot, a stand-in, without). Returns (arrays, the output adjoints as NumPy)."""
    import numpy as np
    import warp as wp

    from adjointgen.tools.bench import tiled_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    shape = (size,) * config.dim
    stepper = make_stepper(config, "warp", shape)
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    dtype = np.float64 if config.is_fp64 else np.float32
    compute = wp.float64 if config.precision.startswith("FP64") else wp.float32
    f_0 = wp.array(tiled_state(config, size, dtype), dtype=f_0.dtype)
    adjoints = np.random.default_rng(1).standard_normal(f_0.shape).astype(dtype)
    if cotangent == "zero":
        adjoints[:] = 0
    arrays = {"f_0": f_0, "f_1": f_1, "bc_mask": bc_mask, "missing_mask": missing_mask, "omega": compute(1.6), "omega_in": compute(1.6),
              "timestep": 0, "adj_f_0": wp.zeros_like(f_0), "adj_f_1": wp.array(adjoints, dtype=f_0.dtype),
              "adj_omega_cells": wp.zeros(shape + (1,) * (3 - config.dim), dtype=compute),
              "saved_f_0": wp.empty_like(f_0)}  # forward_save's copy (forward takes it and leaves it alone)
    if slot_count:
        arrays["adj_slots"] = wp.zeros((*f_0.shape[1:], slot_count), dtype=compute)
    arrays["residuals"] = wp.zeros((max(residual_count, 1), *f_0.shape[1:]), dtype=compute)
    return arrays, adjoints


def timed_batch(fn, sync, inner: int) -> float:
    """Milliseconds per call of ``fn`` over ``inner`` calls, from a synchronised start (work queued
    before, such as restoring the inputs, is not counted) to a synchronised end."""
    sync()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    sync()
    return (time.perf_counter() - start) * 1e3 / inner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--a", required=True, help="module file A")
    parser.add_argument("--b", required=True, help="module file B")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--cotangent", choices=("random", "zero"), default="random",
                        help="the output adjoints the adjoints start from (zero: where no cotangent has arrived, "
                             "e.g. a loss on part of the grid)")
    parser.add_argument("--forward-only", action="store_true",
                        help="time the forward kernels only (also for steps with slots or in-place arrays)")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    from adjointgen.config import Configuration
    from adjointgen.runtime.plan import has_kept_cells

    config = Configuration.parse(args.config)
    arrays, cotangent = kernel_inputs(config, args.size, args.cotangent)
    f_0, f_1, bc_mask = arrays["f_0"], arrays["f_1"], arrays["bc_mask"]
    modules = {"A": _load(args.a, "module_a"), "B": _load(args.b, "module_b")}
    if not args.forward_only and any(m.manifest.slot_count or m.manifest.in_place for m in modules.values()):
        raise SystemExit("module_ab.py launches the kernels directly: only for steps without slots or in-place arrays")
    fresh = not has_kept_cells(bc_mask) and all(m.manifest.has("adjoint_fresh") for m in modules.values())
    kernels = [k for k in ("forward", "forward_save", "adjoint", "adjoint_fresh", "adjoint_state", "adjoint_fresh_state")
               if all(m.manifest.has(k) for m in modules.values()) and (fresh or "fresh" not in k)]
    kernels = [k for k in kernels if k.startswith("forward")] if args.forward_only else kernels
    # the inputs, restored before each equality launch (an in-place step changes f_0; f_1 holds
    # ZouHe's and Regularized's data, which zeros would turn into NaN)
    state, prepared_f_1 = f_0.numpy(), f_1.numpy()

    adjoints = [k for k in kernels if k.startswith("adjoint")]

    def launch(module, name):
        kernel = module.kernel(name)
        inputs = [arrays[arg.label] for arg in kernel.adj.args]
        wp.launch(kernel, dim=f_0.shape[1:], inputs=inputs, block_dim=128 if name.startswith("adjoint") else 256)

    samples = {(v, k): [] for v in modules for k in kernels}
    gradients = {}
    for round_ in range(args.rounds + 1):  # round 0: compile, warm up and outputs for equality, not timed
        for variant, module in modules.items():
            for kernel in kernels:
                # the output adjoints as chosen, before each batch (an accumulating adjoint clears
                # them on its first launch: its other launches, and every variant after it, would
                # otherwise run on zeros)
                arrays["adj_f_1"].assign(cotangent)
                ms = timed_batch(lambda m=module, k=kernel: launch(m, k), wp.synchronize, args.inner)
                if round_:
                    samples[(variant, kernel)].append(ms)
            if round_:
                continue
            for kernel in [k for k in kernels if k.startswith("forward")]:  # outputs (and copy), for equality
                arrays["f_0"].assign(state)
                arrays["f_1"].assign(prepared_f_1)
                arrays["saved_f_0"].zero_()
                launch(module, kernel)
                gradients.setdefault(variant, {})[kernel] = (arrays["f_1"].numpy().copy(), arrays["saved_f_0"].numpy().copy())
            for kernel in adjoints:  # each adjoint once from the same inputs: its outputs, for equality
                arrays["adj_f_0"].zero_()
                arrays["adj_f_1"].assign(cotangent)
                launch(module, kernel)
                gradients.setdefault(variant, {})[kernel] = (arrays["adj_f_0"].numpy().copy(), arrays["adj_f_1"].numpy().copy())
    equal = {k: all(np.array_equal(a, b, equal_nan=True) for a, b in zip(gradients["A"][k], gradients["B"][k])) for k in kernels}
    result = {
        "device": wp.get_device().name, "warp": wp.config.version, "config": args.config, "size": args.size,
        "rounds": args.rounds, "inner": args.inner, "cotangent": args.cotangent, "a": args.a, "b": args.b, "bitwise_equal_outputs": equal,
        "median_ms": {f"{v}/{k}": statistics.median(s) for (v, k), s in samples.items()},
    }
    for kernel in kernels:
        result["median_ms"][f"B/A {kernel}"] = result["median_ms"][f"B/{kernel}"] / result["median_ms"][f"A/{kernel}"]
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"ab_{config.name}_{args.cotangent}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
