"""Strong and weak scaling of the JAX face over the GPUs of one host (jax.shard_map along x).

For D3Q19 FP32 periodic BGK it times, on 1 device and on all devices of the host, the median over
repeats of
- ``forward``: one step of the JAX face (generated Warp forward kernel) under jax.jit;
- ``gradient``: jax.grad of <c, f_new> through one step (forward, then the generated adjoint);
both at a fixed global grid (strong scaling: ``--strong N`` -> N^3) and at a fixed grid per device
(weak scaling: ``--weak N`` -> (devices*N) x N x N). Efficiency: strong t1 / (P tP), weak t1 / tP.
Usage (device machine): ``python benchmarks/bench_scaling.py --strong 256 --weak 192 --out $OUT``;
on a CPU, with XLA_FLAGS=--xla_force_host_platform_device_count=4 and small sizes, it checks the
plumbing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import _source_tree_packages  # noqa: E402


def _timed(fn, repeats: int, inner: int) -> float:
    fn().block_until_ready()
    fn().block_until_ready()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        out.block_until_ready()
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return statistics.median(samples)


def measure(shape, devices, repeats, inner) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adjointgen.config import Configuration
    from adjointgen.jax_face import jax_step
    from adjointgen.sharding import sharded_step
    from adjointgen.xlb_support import make_stepper, prepare_fields

    config = Configuration.parse("D3Q19/BGK/FP32FP32")
    stepper = make_stepper(config, "warp", shape)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    step = jax_step(stepper)
    rng = np.random.default_rng(0)
    w = np.asarray(stepper.velocity_set._w, dtype=np.float32).reshape(-1, 1, 1, 1)
    f0 = (w * (1 + 0.01 * rng.standard_normal((19, *shape)))).astype(np.float32)
    c = rng.standard_normal(f0.shape).astype(np.float32)
    mesh = Mesh(np.array(devices), ("x",))
    place = NamedSharding(mesh, P(None, "x"))
    arrays = [jax.device_put(jnp.asarray(a), place) for a in (f0, f_1.numpy(), bc_mask.numpy(), missing_mask.numpy(), c)]
    f0, f1, bc, mm, c = arrays
    run = sharded_step(step, mesh) if len(devices) > 1 else step
    omega = jnp.float32(1.6)
    forward = jax.jit(lambda f: run(f, f1, bc, mm, omega)[1])
    gradient = jax.jit(jax.grad(lambda f: jnp.sum(c * run(f, f1, bc, mm, omega)[1])))
    return {"grid": list(shape), "devices": len(devices),
            "forward_ms": _timed(lambda: forward(f0), repeats, inner),
            "gradient_ms": _timed(lambda: gradient(f0), repeats, inner)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strong", type=int, default=256)
    parser.add_argument("--weak", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    _source_tree_packages()
    import jax
    import warp as wp

    wp.init()
    everything = jax.devices()
    results = {"devices": [str(d) for d in everything], "device_kind": everything[0].device_kind,
               "jax": jax.__version__, "warp": wp.__version__, "date": time.strftime("%Y-%m-%d"), "rows": []}
    n = len(everything)
    cases = [("strong", (args.strong,) * 3, everything[:1]), ("strong", (args.strong,) * 3, everything),
             ("weak", (args.weak,) * 3, everything[:1]), ("weak", (n * args.weak, args.weak, args.weak), everything)]
    for kind, shape, devices in cases:
        row = measure(shape, devices, args.repeats, args.inner)
        row["kind"] = kind
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    lines = [f"# JAX face scaling: {n} x {results['device_kind']}, JAX {results['jax']}, Warp {results['warp']}, {results['date']}",
             "", "D3Q19 FP32 periodic BGK, one step; median of repeats.", "",
             "| scaling | grid | devices | forward ms | gradient ms | forward efficiency | gradient efficiency |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("strong", "weak"):
        one, many = [r for r in results["rows"] if r["kind"] == kind]
        for row in (one, many):
            p = row["devices"]
            eff = {}
            for key in ("forward_ms", "gradient_ms"):
                eff[key] = one[key] / (p * row[key]) if kind == "strong" else one[key] / row[key]
            lines.append(f"| {kind} | {'x'.join(map(str, row['grid']))} | {p} | {row['forward_ms']:.3f} | "
                         f"{row['gradient_ms']:.3f} | {eff['forward_ms']:.2f} | {eff['gradient_ms']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "bench_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
