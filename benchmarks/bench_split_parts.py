"""A split step's three ways to run its listed cells, timed in one process (NOTES v56).

A step with ZouHe, Regularized or extrapolation cells (``Manifest.listed_ids``) runs its forward
and adjoint as parts: the rest of the cells in a kernel without those conditions' code, and the
listed cells either from a list read back once per mask (``listed``: the Warp faces and rollouts
on a GPU) or, where no list is kept (the JAX and PyTorch faces), in launches over the grid whose
threads return at the other cells (``grid``); or as one launch over the whole grid (``whole``, the
CPU's way). This times the forward, the fresh state-only adjoint (a rollout's reverse step) and
the accumulating adjoint (the tape's, the faces') each way, with XLB's Warp forward of the same
process as the unit, and checks that the three ways give the same gradient on this device.

    python benchmarks/bench_split_parts.py --config D3Q19/BGK/FP32FP32/obstacle --size 192 --out $OUT/split_parts
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402

MODES = {"whole": (False, False), "listed": (True, False), "grid": (False, True)}  # split_listed, split_grid


def measure(label: str, size: int, repeats: int, inner: int) -> dict:
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.tools.bench import _timed, tiled_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    stepper = make_stepper(config, "warp", (size,) * config.dim)
    step = adjointgen.differentiable(stepper)
    if not step.manifest.listed_ids:
        raise SystemExit(f"{label} is not a split step (no listed boundary ids)")
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    dtype = np.float64 if config.is_fp64 else np.float32
    state = tiled_state(config, size, dtype)
    f_0 = wp.array(state, dtype=f_0.dtype)
    f_1_prepared = wp.clone(f_1)  # the timed forwards change f_1 (and f_0 at the ZouHe cells)
    omega = 1.6
    cotangent = np.random.default_rng(1).standard_normal(f_0.shape).astype(dtype)
    sync = wp.synchronize
    times = {"xlb_forward": _timed(lambda: stepper(f_0, f_1, bc_mask, missing_mask, omega, 0), sync, repeats, inner)}
    gradients = {}
    adj_f_0, adj_f_1, carry = wp.zeros_like(f_0), wp.array(cotangent, dtype=f_0.dtype), wp.zeros_like(f_0)
    for mode, (split_listed, split_grid) in MODES.items():
        step.split_listed, step.split_grid = split_listed, split_grid
        adj_f_1.assign(cotangent)
        carry.zero_()
        times[f"forward_{mode}"] = _timed(lambda: step.forward(f_0, f_1, bc_mask, missing_mask, omega, 0), sync, repeats, inner)
        times[f"adjoint_fresh_{mode}"] = _timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, fresh=True, carry=carry),
            sync, repeats, inner)
        times[f"adjoint_{mode}"] = _timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1), sync, repeats, inner)
        # one accumulating adjoint from fixed inputs: the gradient each way
        adj_f_0.zero_()
        adj_f_1.assign(cotangent)
        step.adjoint(wp.array(state, dtype=f_0.dtype), wp.clone(f_1_prepared), bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1)
        gradients[mode] = adj_f_0.numpy()
    step.split_listed, step.split_grid = MODES["listed"]
    packed = step.adjoint_launches(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, fresh=True, carry=carry)
    for launch, _ in packed.launches:  # the fresh adjoint's launches one by one, with lists
        times[f"launch {launch.kernel.key}"] = _timed(launch.launch, sync, repeats, inner)
    step.split_listed = step.split_grid = None
    listed = int(np.isin(bc_mask.numpy()[0], step.manifest.listed_ids).sum())
    return {"case": label, "grid": [size] * config.dim, "device": wp.get_device().name, "listed_cells": listed,
            "times_ms": times, "ratios": {k: v / times["xlb_forward"] for k, v in times.items()},
            "max_abs_difference_to_whole": {m: float(np.abs(g - gradients["whole"]).max()) for m, g in gradients.items()},
            "nonfinite": {m: int((~np.isfinite(g)).sum()) for m, g in gradients.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="D3Q19/BGK/FP32FP32/obstacle")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=None, help="path stem of the .json and .md results")
    args = parser.parse_args()
    _source_tree_packages()
    result = measure(args.config, args.size, args.repeats, args.inner)
    lines = [f"{result['case']} {result['grid']} on {result['device']} ({result['listed_cells']} listed cells); "
             "ms, and ratio to XLB's Warp forward of this process", "", "| row | whole | listed | grid |", "|---|---|---|---|"]
    for row in ("forward", "adjoint_fresh", "adjoint"):
        cells = [f"{result['times_ms'][f'{row}_{m}']:.3f} ({result['ratios'][f'{row}_{m}']:.2f}x)" for m in MODES]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += [f"| launch {name[7:]} (lists, fresh) | {ms:.3f} ({result['ratios'][name]:.2f}x) | | |"
              for name, ms in result["times_ms"].items() if name.startswith("launch ")]
    lines += ["", f"XLB forward {result['times_ms']['xlb_forward']:.3f} ms; gradient max |difference| to whole: "
              f"{result['max_abs_difference_to_whole']}; non-finite: {result['nonfinite']}"]
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(result, indent=1))
        Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
