"""Launch block size of the adjoint kernels, timed in one process on one GPU.

Warp launches 256 threads per block by default. Occupancy is counted in warps per SM, limited by
registers per warp (allocated in units of 256) and by whole blocks: with 72 registers a thread
(D3Q19 FP32 ``adjoint_fresh_state``) an SM holds 3 blocks of 256 (24 warps) but 7 of 128 (28
warps). This times ``step.adjoint`` for each ``--config`` with each block size (the runtime's
``block_dim``), rounds alternating, medians. Usage:
``python benchmarks/block_sweep.py --config D3Q19/BGK/FP32FP32 --out $OUT``.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--blocks", default="64,128,256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.runtime.plan import has_kept_cells
    from adjointgen.manifest import adjoint_kernel_name
    from adjointgen.xlb.support import make_stepper, prepare_fields

    results = {"device": wp.get_device().name, "warp": wp.config.version, "size": args.size, "cases": {}}
    for label in args.config:
        config = Configuration.parse(label)
        shape = (args.size,) * config.dim
        stepper = make_stepper(config, "warp", shape)
        step = adjointgen.differentiable(stepper)
        f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
        dtype = np.float64 if config.is_fp64 else np.float32
        rng = np.random.default_rng(0)
        f_0 = wp.array((1.0 / 19 + 0.01 * rng.standard_normal(f_0.shape)).astype(dtype), dtype=f_0.dtype)
        adj_f_0 = wp.zeros_like(f_0)
        adj_f_1 = wp.array(rng.standard_normal(f_0.shape).astype(dtype), dtype=f_0.dtype)
        fresh = step.manifest.has("adjoint_fresh") and not has_kept_cells(bc_mask)
        samples: dict = {}
        for round_ in range(args.rounds + 1):
            for block in [int(b) for b in args.blocks.split(",")]:
                step.block_dim = block
                start = time.perf_counter()
                for _ in range(args.inner):
                    step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=fresh)
                wp.synchronize()
                if round_:
                    samples.setdefault(block, []).append((time.perf_counter() - start) * 1e3 / args.inner)
        kernel = adjoint_kernel_name(fresh, step.manifest.has(adjoint_kernel_name(fresh, True)))
        results["cases"][label] = {"kernel": kernel,
                                   "median_ms": {str(b): statistics.median(s) for b, s in samples.items()}}
        print(label, results["cases"][label], flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "block_sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
