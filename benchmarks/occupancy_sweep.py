"""Registers against occupancy for the adjoint kernels: the same generated kernel compiled with
``__launch_bounds__(256, B)`` for several B (at least B blocks of 256 threads per SM, so at most
65536 / (256 B) registers per thread), timed in one process on one GPU.

Usage (device machine): ``python benchmarks/occupancy_sweep.py --config D3Q19/BGK/FP32FP32 --out $OUT``.
Each row: kernel, B, registers, local memory (spills), ms (median), ratio to XLB's forward.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402


def sweep(label: str, size: int, repeats: int, inner: int, blocks: list[int], kernels=("adjoint_fresh",)) -> list[dict]:
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.tools.bench import _timed
    from adjointgen.config import Configuration
    from adjointgen.tools.verify import random_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    shape = (size,) * config.dim
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    tile = random_state(config, (16,) * config.dim, seed=0).astype(np.float64 if config.is_fp64 else np.float32)
    f_0 = wp.array(np.ascontiguousarray(np.tile(tile, (1, *(s // 16 for s in shape)))), dtype=f_1.dtype)
    adj_f_0, adj_f_1 = wp.zeros_like(f_0), wp.ones_like(f_0)
    cells = wp.empty(shape, dtype=step.compute_dtype)
    omega = step.compute_dtype(1.6)
    reference = _timed(lambda: stepper(f_0, f_1, bc_mask, missing_mask, omega, 0), wp.synchronize, repeats, inner)
    rows = []
    for name in kernels:
        original = getattr(step.module, name, None)
        if original is None or step.manifest.slot_count or step.manifest.in_place:
            continue  # periodic-like modules only: the kernel alone is the whole adjoint
        for b in blocks:
            kernel = original if b == 0 else wp.kernel(original.func, launch_bounds=(256, b))
            inputs = [f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, cells] + step._residual_argument(None, f_0.device)
            ms = _timed(lambda k=kernel, a=inputs: wp.launch(k, dim=shape, inputs=a), wp.synchronize, repeats, inner)
            resources = wp.get_cuda_kernel_properties(kernel) if wp.get_device().is_cuda else {}
            rows.append({"case": label, "kernel": name, "min_blocks": b or None, **resources,
                         "ms": ms, "ratio_to_xlb_forward": ms / reference})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--blocks", default="0,2,3,4", help="minimum blocks per SM to try (0: as generated)")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import warp as wp

    wp.init()
    rows = []
    for label in args.config or ["D3Q19/BGK/FP32FP32"]:
        rows += sweep(label, args.size, args.repeats, args.inner, [int(b) for b in args.blocks.split(",")])
    result = {"device": wp.get_device().name, "warp": wp.__version__, "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "occupancy_sweep.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
