"""A/B timing of hand-edited porous adjoints (``benchmarks/experiments/``) against the generated
one and BGK's, in one process on one GPU: what issue 17's porous-adjoint goal would gain from a
d/d porosity term written through moments of the output adjoints, and from a register limit.

The experiment modules (D3Q19 FP32 PorousBGK, generated for a small grid; the kernels do not
depend on the grid's size):

- ``porous_a_generated``: as ``adjointgen build`` writes it (128 registers, ptxas sm_90);
- ``porous_b_moment``: the d/d porosity accumulation ``sum_l a_l (f_opp(l) - fbgk_l)`` replaced
  by ``sum_l a_l f_opp(l) - (1 - omega) sum_l a_l f_l - omega rho ((1 - usqr) S0 + 3 u.S1 +
  4.5 u.S2.u)`` with S0, S1, S2 the weighted moments of the output adjoints a_l (127 registers);
- ``porous_c_moment_cap96``: the same with ``cuda_max_registers=96`` (96 registers, 4 B spilled);
- ``porous_d_generated_cap96``: the generated one with that limit (96 registers, 124 B spilled).

Only ``adjoint_fresh_state`` is timed (what a rollout runs), each launched with the arrays its
own parameter list names, alternating the modules over rounds; the median per module. BGK's
``adjoint_fresh_state`` (generated/d3q19_bgk_fp32fp32.py) is the denominator of the issue's goal.
The outputs are compared with the generated porous kernel's first (the same state gradient, the
porosity gradient to float32 rounding).

    python benchmarks/porous_adjoint_ab.py --size 192 --out $OUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import ROOT, _source_tree_packages  # noqa: E402

MODULES = {"bgk": ROOT / "generated" / "d3q19_bgk_fp32fp32.py",
           **{name: ROOT / "benchmarks" / "experiments" / f"{name}.py" for name in
              ("porous_a_generated", "porous_b_moment", "porous_c_moment_cap96", "porous_d_generated_cap96")}}


def _kernel(path: Path):
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.adjoint_fresh_state


def _arrays(n: int, device) -> dict:
    """Every array or value the kernels name: a perturbed equilibrium at rest, a periodic mask, a
    porosity field with fluid, solid and gray cells, random output adjoints."""
    import numpy as np
    import warp as wp

    rng = np.random.default_rng(0)
    shape = (n, n, n)
    w = np.array([1 / 3] + [1 / 18] * 6 + [1 / 36] * 12)  # D3Q19's weights (their order does not matter here)
    f_0 = (w[:, None, None, None] * (1 + 0.01 * rng.standard_normal((19, *shape)))).astype(np.float32)
    porosity = rng.choice([0.0, 1.0, 0.3], size=(1, *shape)).astype(np.float32)
    values = {"f_0": f_0, "f_1": np.zeros_like(f_0), "adj_f_0": np.zeros_like(f_0),
              "adj_f_1": rng.standard_normal(f_0.shape).astype(np.float32), "porosity": porosity,
              "adj_porosity": np.zeros_like(porosity), "adj_omega_cells": np.zeros(shape, np.float32)}
    arrays = {name: wp.array(value, device=device) for name, value in values.items()}
    arrays["bc_mask"] = wp.zeros((1, *shape), dtype=wp.uint8, device=device)
    arrays["missing_mask"] = wp.zeros((19, *shape), dtype=wp.bool, device=device)
    arrays["omega"], arrays["timestep"] = 1.6, 0
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    wp.init()
    device = wp.get_device()
    arrays = _arrays(args.size, device)
    kernels = {name: _kernel(path) for name, path in MODULES.items()}
    launches = {name: (lambda k=k: wp.launch(k, dim=(args.size,) * 3, inputs=[arrays[a.label] for a in k.adj.args],
                                             device=device)) for name, k in kernels.items()}
    outputs = {}
    for name, launch in launches.items():  # compiles, and the outputs of one launch from zero
        arrays["adj_f_0"].zero_(), arrays["adj_porosity"].zero_()
        launch()
        outputs[name] = (arrays["adj_f_0"].numpy().copy(), arrays["adj_porosity"].numpy().copy())
    reference = outputs["porous_a_generated"]
    checks = {name: {"adj_f_0": float(np.abs(out[0] - reference[0]).max()),
                     "adj_porosity_relative": float(np.abs(out[1] - reference[1]).max() / np.abs(reference[1]).max())}
              for name, out in outputs.items() if name.startswith("porous")}
    samples = {name: [] for name in launches}
    for _ in range(args.rounds):
        for name, launch in launches.items():
            wp.synchronize()
            start = time.perf_counter()
            for _ in range(args.inner):
                launch()
            wp.synchronize()
            samples[name].append((time.perf_counter() - start) * 1e3 / args.inner)
    ms = {name: statistics.median(values) for name, values in samples.items()}
    results = {"device": device.name, "warp": wp.__version__, "date": time.strftime("%Y-%m-%d"), "size": args.size,
               "ms": ms, "checks": checks}
    lines = [f"# Porous adjoint experiments: {device.name}, Warp {wp.__version__}, {results['date']}, {args.size}^3", "",
             "| kernel (adjoint_fresh_state) | ms | / BGK's | / generated porous | adj_f_0 vs generated | adj_porosity vs generated |",
             "|---|---|---|---|---|---|"]
    for name, value in ms.items():
        check = checks.get(name, {})
        lines.append(f"| {name} | {value:.3f} | {value / ms['bgk']:.2f}x | {value / ms['porous_a_generated']:.3f} | "
                     f"{check.get('adj_f_0', '-')} | {check.get('adj_porosity_relative', '-')} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "porous_adjoint_ab.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "porous_adjoint_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
