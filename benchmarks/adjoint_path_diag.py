"""Why ``adjointgen bench``'s ``ag_adjoint_fresh`` row and ``kernel_options_ab.py``'s direct launch of
the same ``adjoint_fresh_state`` differ (v32: KBC 3.17 against 1.67 ms, cavity 0.78 against 0.58):
times, in one process on one GPU, the runtime's ``step.adjoint(fresh=True)`` and a direct launch
of the step's own kernel, each with the output adjoints random and with them zero (the bench's
earlier accumulating rows leave ``adj_f_1`` cleared), and the kernels' registers.

    python benchmarks/adjoint_path_diag.py --config D3Q27/KBC/FP32FP32 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402
from module_ab import kernel_inputs, timed_batch  # noqa: E402


def _diagnose(label: str, args) -> dict:
    """{"ms": medians by path and output adjoints, "registers": of the step's fresh adjoints}."""
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.xlb.support import make_stepper

    config = Configuration.parse(label)
    step = adjointgen.differentiable(make_stepper(config, "warp", (args.size,) * config.dim))
    arrays, cotangent = kernel_inputs(config, args.size, "random", step.manifest.slot_count)
    f_0, f_1, bc_mask, missing_mask = (arrays[name] for name in ("f_0", "f_1", "bc_mask", "missing_mask"))
    adj_f_0, adj_f_1 = arrays["adj_f_0"], arrays["adj_f_1"]
    kernel = step.kernel("adjoint_fresh_state")

    def runtime():
        step.adjoint(f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=True)

    def direct():
        wp.launch(kernel, dim=f_0.shape[1:], inputs=[arrays[a.label] for a in kernel.adj.args], block_dim=128)

    gather = step.kernel("adjoint_gather") if step.manifest.slot_count else None

    def gathered():
        wp.launch(gather, dim=f_0.shape[1:], inputs=[f_0, arrays["adj_slots"], bc_mask, adj_f_0])

    runtime(), direct(), gather and gathered()
    samples = {}
    for _ in range(args.rounds):
        for adjoints in ("random", "zero"):
            adj_f_1.assign(cotangent) if adjoints == "random" else adj_f_1.zero_()
            for name, fn in (("runtime", runtime), ("direct", direct)) + ((("gather", gathered),) if gather else ()):
                samples.setdefault(f"{name}/{adjoints}", []).append(timed_batch(fn, wp.synchronize, args.inner))
    registers = {n: dict(wp.get_cuda_kernel_properties(step.kernel(n), wp.get_device()))
                 for n in step.manifest.kernels if n.startswith("adjoint_fresh")} if wp.get_device().is_cuda else {}
    return {"ms": {k: statistics.median(v) for k, v in samples.items()}, "registers": registers}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import warp as wp

    wp.init()
    results = {}
    for label in args.config:
        results[label] = _diagnose(label, args)
        print(label, json.dumps(results[label], indent=1), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "adjoint_path_diag.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
