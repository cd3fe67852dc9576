"""A/B timing of two generated modules for one configuration, in one process on one GPU.

Ratios between separate ``adjointgen bench`` runs move with the card's state (XLB's forward at
D3Q19 FP32 192^3 took 0.264 ms in one H200 run and 0.310 ms in another), so a change to the
emitted kernels is judged here: both modules' ``adjoint`` and ``adjoint_fresh`` kernels run on the
same inputs through the same runtime, alternating A, B, A, B, ... and each kernel's time is the
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


def _round(fn, sync, inner: int) -> float:
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
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.runtime.plan import has_kept_cells
    from adjointgen.tools.bench import tiled_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(args.config)
    shape = (args.size,) * config.dim
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    dtype = np.float64 if config.is_fp64 else np.float32
    state = tiled_state(config, args.size, dtype)
    f_0 = wp.array(state, dtype=f_0.dtype)
    adj_f_0 = wp.zeros_like(f_0)
    cotangent = np.random.default_rng(1).standard_normal(f_0.shape).astype(dtype)
    adj_f_1 = wp.array(cotangent, dtype=f_0.dtype)
    modules = {"A": _load(args.a, "module_a"), "B": _load(args.b, "module_b")}
    fresh = not has_kept_cells(bc_mask) and all(m.manifest.has("adjoint_fresh") for m in modules.values())
    kernels = ["adjoint"] + (["adjoint_fresh"] if fresh else [])
    samples = {(v, k): [] for v in modules for k in kernels}
    gradients = {}
    for round_ in range(args.rounds + 1):  # round 0: compile and warm up, not counted
        for variant, loaded in modules.items():
            step.module, step.manifest = loaded.module, loaded.manifest
            for kernel in kernels:
                def run(fresh_kernel=kernel == "adjoint_fresh"):
                    step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=fresh_kernel)
                ms = _round(run, wp.synchronize, args.inner)
                if round_:
                    samples[(variant, kernel)].append(ms)
            adj_f_0.zero_()
            adj_f_1.assign(cotangent)  # the accumulating adjoint clears it
            step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=fresh)
            gradients[variant] = adj_f_0.numpy().copy()
    scale = float(np.abs(gradients["A"]).max())
    result = {
        "device": wp.get_device().name, "warp": wp.config.version, "config": args.config, "size": args.size,
        "rounds": args.rounds, "inner": args.inner, "a": args.a, "b": args.b,
        "gradient_max_abs_difference_relative": float(np.abs(gradients["A"] - gradients["B"]).max()) / scale,
        "median_ms": {f"{v}/{k}": statistics.median(s) for (v, k), s in samples.items()},
    }
    for kernel in kernels:
        result["median_ms"][f"B/A {kernel}"] = result["median_ms"][f"B/{kernel}"] / result["median_ms"][f"A/{kernel}"]
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"ab_{config.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
