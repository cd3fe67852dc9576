"""A/B timing of hand-edited porous adjoints against the generated one and BGK's, in one process
on one GPU: what issue 17's porous-adjoint goal would gain from a d/d porosity term written
through moments of the output adjoints, and from a register limit.

The variants of the D3Q19 FP32 PorousBGK module, made here from the module adjointgen generates
(for a small grid; the kernels do not depend on the grid's size):

- ``porous_a_generated``: as generated (128 registers, ptxas sm_90);
- ``porous_b_moment``: the d/d porosity accumulation ``sum_l a_l (f_opp(l) - fbgk_l)`` replaced
  by ``sum_l a_l f_opp(l) - (1 - omega) sum_l a_l f_l - omega rho ((1 - usqr) S0 + 3 u.S1 +
  4.5 u.S2.u)`` with S0, S1, S2 the weighted moments of the output adjoints a_l (127 registers);
- ``porous_c_moment_cap96``: the same with ``cuda_max_registers=96`` (96 registers, 4 B spilled);
- ``porous_d_generated_cap96``: the generated one with that limit (96 registers, 124 B spilled).

Only ``adjoint_fresh_state`` is timed (what a rollout runs), each launched with the arrays its
own parameter list names, alternating the modules over rounds; the median per module. BGK's
``adjoint_fresh_state`` (generated/d3q19_bgk_fp32fp32.py) is the denominator of the issue's goal.
The outputs are compared with the generated porous kernel's first (the same state gradient, the
porosity gradient to float32 rounding). ``--write DIR`` only writes the variants (for
``ptxas_registers.py``).

    python benchmarks/porous_adjoint_ab.py --size 192 --out $OUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import ROOT, _source_tree_packages  # noqa: E402

_FACTORY = '    return wp.kernel(enable_backward=False, module="unique")(adjoint)'


def generated_porous() -> str:
    """The module adjointgen generates for D3Q19/PorousBGK/FP32FP32 (periodic)."""
    from adjointgen.compiler.pipeline import generate
    from adjointgen.config import Configuration
    from adjointgen.xlb.support import make_stepper

    config = Configuration.parse("D3Q19/PorousBGK/FP32FP32")
    return generate(make_stepper(config, "warp", (5, 4, 4)), config)


def register_limit(text: str, registers: int) -> str:
    """``text`` with ``cuda_max_registers`` on its adjoint kernels."""
    assert _FACTORY in text
    return text.replace(_FACTORY, _FACTORY.replace('module="unique"', f'module="unique", cuda_max_registers={registers}'))


def moment_form(text: str, c, w) -> str:
    """``text`` with the porosity gradient's accumulation over the populations replaced by the
    moment form (see the module docstring); ``c`` (3, 19) and ``w`` (19,): D3Q19's velocities and
    weights in the module's order."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if "def _adjoint_variant" in line)
    sweep = next(i for i, line in enumerate(lines) if i > start and "# reverse sweep" in line)
    opposite = {}
    for line in lines[start:sweep]:  # the replay's fout_L_1 = f_0_OPP * porosity_0 + ...
        found = re.match(r"\s+fout_(\d+)_1 = f_0_(\d+) \* porosity_0", line)
        if found:
            opposite[int(found.group(1))] = int(found.group(2))
    assert len(opposite) == 19
    accumulation = re.compile(r"\s+adj_porosity_0 = (adj_porosity_0 \+ )?adj_fout_\d+_1 \* \(f_0_\d+ - fout_\d+\)$")
    kept = [line for i, line in enumerate(lines) if not (i > sweep and accumulation.match(line))]
    assert len(kept) == len(lines) - 19
    number = lambda x: f"wp.float32({float(x)!r})"  # noqa: E731
    a = [f"adj_fout_{q}_1" for q in range(19)]
    u = ["u_0_10", "u_1_10", "u_2_10"]
    pairs = [(d, e) for d in range(3) for e in range(d, 3)]
    moments = [f"m_opp = {' + '.join(f'{a[q]} * f_0_{opposite[q]}' for q in range(19))}",
               f"m_f = {' + '.join(f'{a[q]} * f_0_{q}' for q in range(19))}",
               f"s0 = {' + '.join(f'{number(w[q])} * {a[q]}' for q in range(19))}"]
    moments += [f"s1_{d} = " + " + ".join(f"{number(w[q] * c[d, q])} * {a[q]}" for q in range(19) if c[d, q]) for d in range(3)]
    moments += [f"s2_{d}{e} = " + " + ".join(f"{number(w[q] * c[d, q] * c[e, q])} * {a[q]}" for q in range(19)
                                            if c[d, q] * c[e, q]) for d, e in pairs]
    quadratic = " + ".join(f"{number(4.5 * (1 if d == e else 2))} * {u[d]} * {u[e]} * s2_{d}{e}" for d, e in pairs)
    moments += [f"m_feq = rho_17 * ((wp.float32(1.0) - usqr) * s0 + wp.float32(3.0) * ({u[0]} * s1_0 + {u[1]} * s1_1 + "
                f"{u[2]} * s1_2) + {quadratic})",
                "adj_porosity_0 = m_opp - (wp.float32(1.0) - omega) * m_f - omega * m_feq"]
    at = kept.index(lines[sweep]) + 1
    return "\n".join(kept[:at] + ["        " + line for line in moments] + kept[at:])


def variants() -> dict:
    """{name: module text} of the four porous variants."""
    import adjointgen.xlb.compat

    adjointgen.xlb.compat.apply()  # before XLB's first import
    import numpy as np
    from xlb.compute_backend import ComputeBackend
    from xlb.precision_policy import PrecisionPolicy
    from xlb.velocity_set import D3Q19

    lattice = D3Q19(precision_policy=PrecisionPolicy.FP32FP32, compute_backend=ComputeBackend.WARP)
    c, w = np.asarray(lattice._c), np.asarray(lattice._w)
    generated = generated_porous()
    moment = moment_form(generated, c, w)
    return {"porous_a_generated": generated, "porous_b_moment": moment,
            "porous_c_moment_cap96": register_limit(moment, 96), "porous_d_generated_cap96": register_limit(generated, 96)}


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
    arrays["residuals"] = wp.zeros((1, 1, 1, 1), dtype=wp.float32, device=device)  # a stand-in (modules with residuals)
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--out", default=".")
    parser.add_argument("--write", help="only write the variants' module files into this folder")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    wp.init()
    folder = Path(args.write or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"bgk": ROOT / "generated" / "d3q19_bgk_fp32fp32.py"}
    for name, text in variants().items():
        paths[name] = folder / f"{name}.py"
        paths[name].write_text(text)
    if args.write:
        return
    device = wp.get_device()
    arrays = _arrays(args.size, device)
    kernels = {name: _kernel(path) for name, path in paths.items()}
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
