"""Count the whole-state copies XLA puts into a rollout's compiled program (the optimised HLO),
per computation: where a JAX-face rollout moves more bytes than its kernels do.

    python benchmarks/hlo_copies.py --size 32 --steps 8 [--segment 4] [--overlap]

Prints, for ``sharded_rollout``'s forward and gradient on one device, every computation of the
optimised HLO that copies an array of the state's shape, with the number of such copies and of
the Warp calls (custom calls) in it. Runs on a CPU (XLA's CPU pipeline) or a GPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402


def copies_per_computation(text: str, shape: str) -> dict:
    """{computation name: (state-sized copies, custom calls)} for the computations that copy."""
    found, name = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name = head.group(1)
            found[name] = [0, 0]
        elif name and f"{shape}{{" in line and (" copy(" in line or "copy_fusion" in line.split(" = ")[0]):
            found[name][0] += 1  # a copy, or a fusion that ends in one
        elif name and "custom-call(" in line:
            found[name][1] += 1
    return {k: tuple(v) for k, v in found.items() if v[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--segment", type=int, default=4)
    parser.add_argument("--overlap", action="store_true", help="the overlapped steps (adjointgen.runtime.overlap)")
    args = parser.parse_args(argv)
    _source_tree_packages()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    from adjointgen.config import Configuration
    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.runtime.sharding import Crossing, sharded_rollout
    from adjointgen.xlb.support import make_stepper, prepare_fields

    shape = (args.size,) * 3
    config = Configuration.parse("D3Q19/BGK/FP32FP32")
    stepper = make_stepper(config, "warp", shape)
    f_0, f_1, bc, mm = [jnp.asarray(a.numpy()) for a in prepare_fields(stepper, config)]
    run = sharded_rollout(jax_step(stepper), Mesh(np.array(jax.devices()[:1]), ("x",)), args.steps,
                          Crossing.of(stepper.velocity_set), segment=args.segment, overlap=args.overlap)
    padded = f"f32[19,{args.size + 2},{args.size},{args.size}]"
    programs = {"forward": jax.jit(lambda f: run(f, f_1, bc, mm, 1.6)[0]),
                "gradient": jax.jit(jax.grad(lambda f: jnp.sum(run(f, f_1, bc, mm, 1.6)[0])))}
    for label, program in programs.items():
        text = program.lower(f_0).compile().as_text()
        print(f"{label} ({jax.devices()[0].platform}): state-sized copies per computation (copies, Warp calls)")
        for name, (copies, calls) in copies_per_computation(text, padded).items():
            print(f"  {name}: {copies} copies, {calls} Warp calls")


if __name__ == "__main__":
    main()
