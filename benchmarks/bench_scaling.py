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


_START = time.perf_counter()


def _log(message: str) -> None:
    """Progress on stderr with the seconds since start (a run that stalls shows where)."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def _timed(fn, repeats: int, inner: int) -> float:
    """Median milliseconds of ``fn()`` (an array or a tuple of them), after two warm-up calls."""
    import jax

    jax.block_until_ready(fn())  # compiles (XLA, and the Warp module on first use)
    jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return statistics.median(samples)


def measure(shape, devices, repeats, inner, keep_gradient=False):
    """The timings of one row, and (``keep_gradient``) the gradient itself on the host."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adjointgen.config import Configuration
    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.runtime.sharding import sharded_step
    from adjointgen.xlb.support import make_stepper, prepare_fields

    _log(f"{'x'.join(map(str, shape))} on {len(devices)} device(s): XLB stepper")
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
    run = sharded_step(step, mesh, writes_f_0=step.writes_f_0) if len(devices) > 1 else step
    omega = jnp.float32(1.6)
    # every array is an argument (a closure would make it a constant compiled into the program)
    forward = jax.jit(lambda f, f1, bc, mm: run(f, f1, bc, mm, omega)[1])
    gradient = jax.jit(jax.grad(lambda f, f1, bc, mm, c: jnp.sum(c * run(f, f1, bc, mm, omega)[1])))
    _log("arrays placed; timing the forward")
    forward_ms = _timed(lambda: forward(f0, f1, bc, mm), repeats, inner)
    _log(f"forward {forward_ms:.3f} ms; timing the gradient")
    gradient_ms = _timed(lambda: gradient(f0, f1, bc, mm, c), repeats, inner)
    _log(f"gradient {gradient_ms:.3f} ms")
    row = {"grid": list(shape), "devices": len(devices), "forward_ms": forward_ms, "gradient_ms": gradient_ms}
    return row, (np.asarray(gradient(f0, f1, bc, mm, c)) if keep_gradient else None)


def start_jax_and_warp() -> tuple[list, dict]:
    """JAX (not preallocating the device's memory: Warp shares it) and Warp from this source tree:
    the devices, and the run's header (card, versions, date)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    _source_tree_packages()
    import jax
    import warp as wp

    wp.init()
    devices = jax.devices()
    return devices, {"device_kind": devices[0].device_kind, "jax": jax.__version__, "warp": wp.__version__,
                     "date": time.strftime("%Y-%m-%d")}


def write_results(out: Path, name: str, results: dict, lines: list) -> None:
    """``name``.json (the results) and ``name``.md (the table ``lines``) into ``out``; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strong", type=int, default=256)
    parser.add_argument("--weak", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    everything, header = start_jax_and_warp()
    import numpy as np

    results = {"devices": [str(d) for d in everything], **header, "rows": []}
    n = len(everything)
    cases = [("strong", (args.strong,) * 3, everything[:1]), ("strong", (args.strong,) * 3, everything),
             ("weak", (args.weak,) * 3, everything[:1]), ("weak", (n * args.weak, args.weak, args.weak), everything)]
    gradients = []
    for kind, shape, devices in cases:
        row, gradient = measure(shape, devices, args.repeats, args.inner, keep_gradient=kind == "strong")
        row["kind"] = kind
        if gradient is not None:
            gradients.append(gradient)
        if len(gradients) == 2:  # the same grid on 1 and on all devices: the gradients must agree
            one, many = gradients
            row["gradient_vs_one_device"] = float(np.max(np.abs(many - one)) / np.max(np.abs(one)))
            gradients = []
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    agreement = [r["gradient_vs_one_device"] for r in results["rows"] if "gradient_vs_one_device" in r]
    lines = [f"# JAX face scaling: {n} x {results['device_kind']}, JAX {results['jax']}, Warp {results['warp']}, {results['date']}",
             "", "D3Q19 FP32 periodic BGK, one step; median of repeats.",
             f"Sharded gradient vs the single-device one (strong grid, max relative): {agreement[0]:.1e}."
             if agreement else "", "",
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
    write_results(Path(args.out), "bench_scaling", results, lines)


if __name__ == "__main__":
    main()
