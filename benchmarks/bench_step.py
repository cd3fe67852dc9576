"""Time one lattice Boltzmann step and its generated adjoint on one GPU, in one process.

For each case (lattice, boundaries, precision) on an N^3 grid it measures, after warm-up, the
median over repeats of:

- ``copy``: a device-to-device copy of one state array (bandwidth ceiling, bytes read + written);
- ``xlb_forward``: XLB's own Warp stepper kernel;
- ``ag_forward``: adjointgen's generated forward kernel;
- ``ag_adjoint``: the generated adjoint (kernel, plus ``adjoint_gather`` where the case has
  two-offset reads), d/d f_0 only;
- ``ag_adjoint_omega``: the same plus the per-cell omega adjoints and their reduction;

and reports ms, MLUPS, the ratio to XLB's forward, the achieved bandwidth of the minimal traffic
as a fraction of the copy's, and the forward's max difference to XLB's. Usage (on the device
machine, after staging Warp): ``python benchmarks/bench_step.py --size 192 --out $OUT``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_tree_packages():
    """Map adjointgen.templates/generated to the folders of this tree when not pip-installed."""
    sys.path.insert(0, str(ROOT))
    for name, folder in (("adjointgen.templates", "templates"), ("adjointgen.generated", "generated")):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            spec = importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                          submodule_search_locations=[str(ROOT / folder)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    if "pyvista" not in sys.modules:  # XLB imports pyvista at import time; not needed here
        try:
            importlib.import_module("pyvista")
        except ModuleNotFoundError:
            sys.modules["pyvista"] = types.ModuleType("pyvista")
    for name in ("matplotlib", "matplotlib.pylab", "matplotlib.cm"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            stub = types.ModuleType(name)
            stub.cm = stub
            stub.pylab = stub
            sys.modules[name] = stub


def timed(fn, wp, repeats: int, inner: int) -> float:
    """Median milliseconds per call over ``repeats`` batches of ``inner`` calls."""
    for _ in range(3):
        fn()
    wp.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        wp.synchronize()
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return statistics.median(samples)


def run_case(label: str, size: int, repeats: int, inner: int, block_dims=()) -> dict:
    import numpy as np
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.verify import random_state
    from adjointgen.xlb_support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    shape = (size,) * config.dim
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)  # boundary data in f_1; solid block
    dtype = np.float64 if config.is_fp64 else np.float32
    state = random_state(config, (min(size, 32),) * config.dim, seed=0).astype(dtype)
    tiles = tuple(int(np.ceil(s / state.shape[1 + a])) for a, s in enumerate(shape)) + (1,) * (3 - config.dim)
    full = np.tile(state, (1, *tiles))[:, : shape[0], : shape[1], : (shape[2] if config.dim == 3 else 1)]
    f_0 = wp.array(np.ascontiguousarray(full), dtype=f_0.dtype)
    omega = 1.6
    omega_x = wp.float64(omega) if config.is_fp64 else omega
    ref = wp.clone(f_1)  # the prepared f_1: ZouHe/Regularized read their prescribed values there
    ours = wp.clone(f_1)
    adj_f_0 = wp.zeros_like(f_0)
    adj_f_1 = wp.array(np.random.default_rng(1).standard_normal(f_0.shape).astype(dtype), dtype=f_0.dtype)
    adj_omega = wp.zeros(1, dtype=step.compute_dtype)
    copy_target = wp.empty_like(f_0)

    f_0_ref, f_0_ours = wp.clone(f_0), wp.clone(f_0)  # both steps may write boundary data back into f_0
    stepper(f_0_ref, ref, bc_mask, missing_mask, omega_x, 0)
    step.forward(f_0_ours, ours, bc_mask, missing_mask, omega, 0)
    wp.synchronize()
    parity = max(float(np.max(np.abs(ours.numpy() - ref.numpy()))), float(np.max(np.abs(f_0_ours.numpy() - f_0_ref.numpy()))))

    times = {
        "copy": timed(lambda: wp.copy(copy_target, f_0), wp, repeats, inner),
        "xlb_forward": timed(lambda: stepper(f_0, f_1, bc_mask, missing_mask, omega_x, 0), wp, repeats, inner),
        "ag_forward": timed(lambda: step.forward(f_0, f_1, bc_mask, missing_mask, omega, 0), wp, repeats, inner),
        "ag_adjoint": timed(lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1), wp, repeats, inner),
        "ag_adjoint_omega": timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, adj_omega), wp, repeats, inner),
    }
    if block_dims:
        # launch-shape experiment: the adjoint kernel alone at several block sizes
        adjoint_inputs = [f_0, f_1, bc_mask, missing_mask, step.compute_dtype(omega), 0, adj_f_0, adj_f_1,
                          wp.zeros(shape, dtype=step.compute_dtype)]
        for block in block_dims:
            times[f"ag_adjoint_block{block}"] = timed(
                lambda b=block: wp.launch(step.module.adjoint, dim=f_0.shape[1:], inputs=adjoint_inputs, block_dim=b),
                wp, repeats, inner)
    cells = int(np.prod(shape))
    q = f_0.shape[0]
    word = 8 if config.is_fp64 else 4
    state_bytes = q * cells * word
    bandwidth = 2 * state_bytes / (times["copy"] * 1e-3)  # bytes read + written per second
    # minimal traffic: forward reads f_0 and writes f_1 (+ 1 B mask); adjoint reads f_0 and
    # adj_f_1, writes adj_f_1 (cleared), read-modify-writes adj_f_0 (+ mask)
    minimal = {"xlb_forward": 2 * state_bytes + cells, "ag_forward": 2 * state_bytes + cells,
               "ag_adjoint": 5 * state_bytes + cells, "ag_adjoint_omega": 5 * state_bytes + cells + cells * word}
    minimal.update({name: minimal["ag_adjoint"] for name in times if name.startswith("ag_adjoint_block")})
    rows = {}
    for name, ms in times.items():
        rows[name] = {
            "ms": ms,
            "mlups": cells / (ms * 1e-3) / 1e6,
            "ratio_to_xlb_forward": ms / times["xlb_forward"],
            "fraction_of_copy_bandwidth": (minimal[name] / (ms * 1e-3)) / bandwidth if name in minimal else 1.0,
        }
    return {"case": config.label, "grid": list(shape), "copy_GBps": bandwidth / 1e9, "forward_max_abs_diff_vs_xlb": parity,
            "slots": step.module.SLOT_COUNT, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--cases", nargs="+", default=["D3Q19/BGK/FP32FP32", "D3Q19/BGK/FP32FP32/cavity",
                                                        "D3Q27/BGK/FP32FP32", "D3Q19/BGK/FP64FP64"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=".")
    parser.add_argument("--block-dims", type=int, nargs="*", default=[], help="also time the adjoint kernel at these block sizes")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import warp as wp

    wp.config.quiet = True
    wp.init()
    device = wp.get_device()
    results = {"device": device.name, "warp": wp.__version__, "date": time.strftime("%Y-%m-%d"), "cases": []}
    for label in args.cases:
        results["cases"].append(run_case(label, args.size, args.repeats, args.inner, args.block_dims))
        print(f"done {label}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_step.json").write_text(json.dumps(results, indent=2))
    lines = [f"# One step and its adjoint, {results['device']}, Warp {results['warp']}, {results['date']}", "",
             "| case | grid | kernel | ms | MLUPS | / XLB forward | % of copy bandwidth (minimal bytes) |",
             "|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        grid = "x".join(map(str, case["grid"]))
        for name, row in case["rows"].items():
            lines.append(f"| {case['case']} | {grid} | {name} | {row['ms']:.3f} | {row['mlups']:.0f} | "
                         f"{row['ratio_to_xlb_forward']:.2f} | {100 * row['fraction_of_copy_bandwidth']:.0f} |")
    lines.append("")
    for case in results["cases"]:
        lines.append(f"- {case['case']}: copy {case['copy_GBps']:.0f} GB/s; forward max |ours - XLB| = "
                     f"{case['forward_max_abs_diff_vs_xlb']:.2e}; adjoint slots per cell: {case['slots']}")
    (out / "bench_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
