"""The porous (gray) collision's cost against plain BGK, one process, one device (issue 17's goals).

    python benchmarks/bench_porous.py --size 192 --out $OUT

D3Q19 FP32 on an N^3 periodic grid, a porosity field with fluid, solid and gray cells
(``verify.design_fields``). Rows, each the median of batches of calls, synchronised around:

- ``xlb_bgk_forward``: XLB's own Warp stepper with BGK (the yardstick);
- ``ag_bgk_forward`` / ``ag_porous_forward``: the generated forwards;
- ``ag_bgk_adjoint_state``: BGK's ``adjoint_fresh`` without parameter adjoints (what a rollout's
  reverse sweep runs for a state gradient);
- ``ag_porous_adjoint_field``: the porous ``adjoint_fresh`` with the porosity gradient asked for
  (added per cell into the caller's array by the kernel itself; before v22, written into scratch
  and added by a second launch);
- ``ag_porous_adjoint_field_no_add``: the same without a caller's array (the gradient added into a
  scratch array, zeroed by a memset per call).
With the registers and local memory (spills) of the kernels that ran, on CUDA devices.
Goals: porous forward <= 1.1x XLB's BGK forward; porous adjoint with the field gradient <= 1.3x
the BGK state-only adjoint. Writes ``porous_<size>.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.tools.bench import _kernel_resources, _timed, tiled_state
    from adjointgen.tools.verify import design_fields
    from adjointgen.xlb.support import make_stepper

    adjointgen.quiet()
    shape = (args.size,) * 3
    bgk_config, porous_config = Configuration.parse("D3Q19/BGK/FP32FP32"), Configuration.parse("D3Q19/PorousBGK/FP32FP32")
    bgk, porous = make_stepper(bgk_config, "warp", shape), make_stepper(porous_config, "warp", shape)
    f_0, f_1, bc_mask, missing_mask = bgk.prepare_fields()
    f_0 = wp.array(tiled_state(bgk_config, args.size, np.float32))
    gamma = wp.array(design_fields({"porosity": (1, *shape)})["porosity"].astype(np.float32), requires_grad=True)
    step_bgk = adjointgen.differentiable(bgk)
    step_porous = adjointgen.differentiable(porous, fields={"porosity": gamma})
    adj_f_0, adj_f_1 = wp.zeros_like(f_0), wp.array(np.random.default_rng(1).standard_normal(f_0.shape).astype(np.float32))
    adj_gamma = wp.zeros_like(gamma)
    def _median_ms(fn) -> float:  # the bench's timing: median over 7 batches of 20 calls, synchronised
        return _timed(fn, wp.synchronize, 7, 20)

    rows = {
        "xlb_bgk_forward": _median_ms(lambda: bgk(f_0, f_1, bc_mask, missing_mask, 1.6, 0)),
        "ag_bgk_forward": _median_ms(lambda: step_bgk.forward(f_0, f_1, bc_mask, missing_mask, 1.6, 0, check=False)),
        "ag_porous_forward": _median_ms(lambda: step_porous.forward(f_0, f_1, bc_mask, missing_mask, 1.6, 0, check=False)),
        "ag_bgk_adjoint_state": _median_ms(lambda: step_bgk.adjoint(
            f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=True, check=False)),
        "ag_porous_adjoint_field": _median_ms(lambda: step_porous.adjoint(
            f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=True, check=False,
            adj_fields={"porosity": adj_gamma})),
        # the same kernel without a caller's array: its field gradient goes into a zeroed scratch
        "ag_porous_adjoint_field_no_add": _median_ms(lambda: step_porous.adjoint(
            f_0, f_1, bc_mask, missing_mask, 1.6, 0, adj_f_0, adj_f_1, fresh=True, check=False)),
    }
    kernels = {f"bgk/{name}": step_bgk.kernel(name) for name in ("forward", "adjoint_fresh_state")}
    kernels.update({f"porous/{name}": step_porous.kernel(name) for name in ("forward", "adjoint_fresh_state")})
    result = {
        "card": wp.get_device().name, "warp": wp.config.version, "size": args.size, "ms": rows,
        "porous_forward_over_xlb_bgk_forward": rows["ag_porous_forward"] / rows["xlb_bgk_forward"],
        "porous_adjoint_field_over_bgk_adjoint_state": rows["ag_porous_adjoint_field"] / rows["ag_bgk_adjoint_state"],
        "field_gradient_finite": bool(np.isfinite(adj_gamma.numpy()).all()),
        "kernels": _kernel_resources(wp, wp.get_device(), kernels),  # registers, spills (CUDA)
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"porous_{args.size}.json").write_text(text + "\n")
    return 0 if result["field_gradient_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
