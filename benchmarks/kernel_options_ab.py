"""A/B timing of Warp's per-kernel compile options on the generated adjoints, in one process on
one GPU: what a register limit, a minimum number of blocks per SM (``launch_bounds``) or spills
into shared memory (``enable_cuda_smem_spilling``, CUDA 13) would give each configuration's
``adjoint_fresh_state`` (what a rollout runs) and ``adjoint_fresh`` (what a tape's fused pair runs).

For each configuration the module is generated here (pipeline.generate, small grid; the kernels
do not depend on the grid's size); each variant is that text with options added to the adjoint
kernels' ``wp.kernel(...)`` call, imported from a temporary file (a benchmark-only module: not
checked, never used by the runtime). Every kernel runs on the same inputs (``module_ab.kernel_inputs``:
the tiled random state, XLB's masks, random output adjoints), launched with the arrays its own
parameter list names, blocks of 128 as the runtime launches adjoints; the variants alternate over
rounds and each time is the median of its rounds. The denominator is the base module's
``forward`` (within a few per cent of XLB's own forward: ``adjointgen bench``). The outputs of
every variant are compared with the base module's, bit for bit (the options change register
allocation, not arithmetic).

    python benchmarks/kernel_options_ab.py --config D3Q19/BGK/FP32FP32/cavity --size 192 --out $OUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402
from module_ab import kernel_inputs, timed_batch  # noqa: E402

_ADJOINT_FACTORY = 'return wp.kernel(enable_backward=False, module="unique")(adjoint)'

#: variant name -> the options added to the adjoint kernels' decorator
VARIANTS = {
    "base": "",
    "bounds128": "launch_bounds=128",
    "blocks3_smem": "launch_bounds=(128, 3), enable_cuda_smem_spilling=True",  # at most 170, spills in shared memory
    "blocks4_smem": "launch_bounds=(128, 4), enable_cuda_smem_spilling=True",  # at most 128
    "blocks5": "launch_bounds=(128, 5)",  # at most 102 registers (65536 / (5 x 128))
    "blocks6": "launch_bounds=(128, 6)",  # at most 85
    "blocks8": "launch_bounds=(128, 8)",  # at most 64
    "smem": "launch_bounds=128, enable_cuda_smem_spilling=True",
    "blocks5_smem": "launch_bounds=(128, 5), enable_cuda_smem_spilling=True",
}


def with_options(text: str, options: str) -> str:
    """``text`` with ``options`` in its adjoint kernels' decorator (unchanged for no options)."""
    if text.count(_ADJOINT_FACTORY) != 1:
        raise SystemExit("the generated module's adjoint factory line is not the one this script edits")
    return text.replace(_ADJOINT_FACTORY, _ADJOINT_FACTORY.replace('module="unique"', f'module="unique", {options}')) \
        if options else text


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from VARIANTS")
    parser.add_argument("--kernels", default="adjoint_fresh_state,adjoint_fresh")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _source_tree_packages()
    import numpy as np
    import warp as wp

    from adjointgen.compiler.pipeline import generate
    from adjointgen.config import Configuration
    from adjointgen.xlb.support import make_stepper

    wp.init()
    config = Configuration.parse(args.config)
    text = generate(make_stepper(config, "warp", (5, 4, 4) if config.dim == 3 else (5, 4)), config)
    folder = Path(tempfile.mkdtemp())
    modules = {}
    for name in args.variants.split(","):
        path = folder / f"variant_{name}.py"
        path.write_text(with_options(text, VARIANTS[name]))
        modules[name] = _import(path, f"kernel_options_{config.name}_{name}")
    arrays, cotangent = kernel_inputs(config, args.size, "random", modules["base"].MANIFEST["slot_count"])
    kernels = args.kernels.split(",")

    def launch(module, kernel_name):
        kernel = getattr(module, kernel_name)
        wp.launch(kernel, dim=arrays["f_0"].shape[1:], inputs=[arrays[a.label] for a in kernel.adj.args],
                  block_dim=128 if kernel_name.startswith("adjoint") else 256)

    launch(modules["base"], "forward")  # compiles the denominator's kernel
    outputs = {}
    for name, module in modules.items():  # compiles; each adjoint's outputs from the same inputs
        for kernel in kernels:
            arrays["adj_f_0"].zero_(), arrays["adj_f_1"].assign(cotangent), arrays["adj_omega_cells"].zero_()
            launch(module, kernel)
            outputs[(name, kernel)] = [arrays[a].numpy().copy() for a in ("adj_f_0", "adj_f_1", "adj_omega_cells")]
    samples = {key: [] for key in [("base", "forward")] + [(n, k) for n in modules for k in kernels]}
    for _ in range(args.rounds):
        for name, kernel in samples:
            samples[(name, kernel)].append(timed_batch(lambda m=modules[name], k=kernel: launch(m, k), wp.synchronize, args.inner))
    ms = {f"{n}/{k}": statistics.median(s) for (n, k), s in samples.items()}
    forward = ms["base/forward"]
    equal = {f"{n}/{k}": all(np.array_equal(a, b, equal_nan=True) for a, b in zip(outputs[(n, k)], outputs[("base", k)]))
             for n, k in outputs}
    result = {"device": wp.get_device().name, "warp": wp.config.version, "config": config.label, "size": args.size,
              "rounds": args.rounds, "inner": args.inner, "options": {n: VARIANTS[n] for n in modules},
              "median_ms": ms, "over_forward": {key: value / forward for key, value in ms.items()},
              "bitwise_equal_to_base": equal}
    lines = [f"# Kernel options on {config.label}: {result['device']}, Warp {result['warp']}, {args.size}^3, "
             f"{time.strftime('%Y-%m-%d')}", "", f"forward (base module): {forward:.3f} ms", "",
             "| variant | options | " + " | ".join(f"{k} ms (/ forward)" for k in kernels) + " | same bits |",
             "|---|---|" + "---|" * len(kernels) + "---|"]
    for name in modules:
        cells = [f"{ms[f'{name}/{k}']:.3f} ({ms[f'{name}/{k}'] / forward:.2f}x)" for k in kernels]
        same = all(equal[f"{name}/{k}"] for k in kernels)
        lines.append(f"| {name} | `{VARIANTS[name] or '-'}` | " + " | ".join(cells) + f" | {same} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"kernel_options_{config.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"kernel_options_{config.name}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
