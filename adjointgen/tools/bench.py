"""``adjointgen bench``: one step and its gradient, every way there is, in one process on one device.

For each configuration on an N^d grid, after warm-up, the median over ``repeats`` batches of
``inner`` calls (``wp.synchronize()`` / ``block_until_ready`` around each batch) of:

- ``copy``: a device-to-device copy of one state array: the bandwidth yardstick (read + write);
- ``xlb_forward``: XLB's own Warp stepper (the reference of every ratio);
- ``ag_forward``, ``ag_adjoint``, ``ag_forward_adjoint``: adjointgen's generated kernels;
  ``ag_adjoint_fresh`` where a rollout's reverse sweep runs it: that adjoint (writes adj_f_0,
  leaves adj_f_1; with the carry and adjoint_kept where the step updates f_0 in place or keeps
  cells), 3 state arrays of traffic instead of 5;
  these rows ask for no omega gradient, so the state-only kernels run where the module has them
  (``adjoint_state``, ``adjoint_fresh_state``); ``ag_adjoint_omega`` and ``ag_adjoint_fresh_omega``
  ask for it (per-cell omega adjoints written and summed); ``ag_forward_residuals`` and
  ``ag_adjoint_fresh_residuals`` where the module has residuals: what a recorded step and a
  segment plan's sweeps run (the forward that also stores the residuals, the state-only fresh
  adjoint that reads them instead of the input);
- ``tape_backward``: Warp's automatic tape on XLB's stepper, backward pass only, with
  ``max_unroll = 64`` for XLB's stepper module and ``wp.config.enable_vector_component_overwrites``
  on (its best case: the switches that make its gradient right, FINDINGS section 2); the row also
  reports the tape gradient's max relative difference to adjointgen's;
- ``jax_forward``, ``jax_grad``: XLB's JAX stepper, jitted, and ``jax.grad`` of ``<c, f_new>``.

Each row: ms, MLUPS, ratio to ``xlb_forward``, achieved bandwidth of the row's minimal traffic as a
percentage of the copy's, and the device memory the row needs beyond the two state arrays and
masks (Warp rows: what the mempool holds after the row minus before it, e.g. adjoint arrays or the
tape's gradients; JAX rows: XLA's memory analysis of the compiled function, temporaries plus
outputs; Warp rows are not measured on CPUs).
On CUDA devices each case also lists the compiled kernels' registers per thread and local memory
per thread (register spills), XLB's stepper kernel and ours: the first profile to read when an
adjoint falls short of the bandwidth.
Results go to ``bench.json`` and ``bench.md`` in ``--out``, with the device name and the date.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

DEFAULT_CASES = ("D3Q19/BGK/FP32FP32", "D3Q19/BGK/FP32FP32/cavity", "D3Q19/BGK/FP32FP32/obstacle",
                 "D3Q27/KBC/FP32FP32", "D3Q19/BGK/FP64FP64")
ROWS = ("copy", "xlb_forward", "ag_forward", "ag_adjoint", "ag_forward_adjoint", "ag_adjoint_fresh", "ag_adjoint_omega",
        "ag_adjoint_fresh_omega", "ag_forward_residuals", "ag_adjoint_fresh_residuals", "tape_backward", "jax_forward",
        "jax_grad")


def _timed(fn, sync, repeats: int, inner: int) -> float:
    for _ in range(2):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return statistics.median(samples)


class _WarpMemory:
    """Device memory a Warp row holds: the mempool's use after the row minus before it (Warp has
    no way to reset its high-water mark between rows, so peaks of later rows are not separable)."""

    def __init__(self, wp, device):
        self.wp, self.device = wp, device
        self.on = device.is_cuda and wp.is_mempool_enabled(device)

    def used(self) -> float:
        return float(self.wp.get_mempool_used_mem_current(self.device)) if self.on else float("nan")


def tiled_state(config, size: int, dtype) -> np.ndarray:
    """The benchmark's input state on an N^d grid: a random state of at most 16^d cells
    (``verify.random_state``, seed 0), tiled over the grid."""
    from adjointgen.tools.verify import random_state

    shape = (size,) * config.dim
    tile = random_state(config, (min(size, 16),) * config.dim, seed=0).astype(dtype)
    reps = tuple(int(np.ceil(s / tile.shape[1 + a])) for a, s in enumerate(shape)) + (1,) * (3 - config.dim)
    return np.ascontiguousarray(np.tile(tile, (1, *reps))[:, : shape[0], : shape[1], : (shape[2] if config.dim == 3 else 1)])


def run_case(label: str, size: int, repeats: int, inner: int, skip: set) -> dict:
    import warp as wp

    import adjointgen
    from adjointgen.config import Configuration
    from adjointgen.runtime.plan import has_kept_cells, reverses_fresh, storage
    from adjointgen.xlb.support import make_stepper, prepare_fields

    config = Configuration.parse(label)
    shape = (size,) * config.dim
    device = wp.get_device()
    memory = _WarpMemory(wp, device)
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    f_0, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    dtype = np.float64 if config.is_fp64 else np.float32
    state = tiled_state(config, size, dtype)
    f_0 = wp.array(state, dtype=f_0.dtype)
    omega = 1.6
    omega_x = wp.float64(omega) if config.is_fp64 else omega
    cotangent = np.random.default_rng(1).standard_normal(f_0.shape).astype(dtype)
    sync = wp.synchronize

    times, extra, notes = {}, {}, {}
    kernels = {}
    copy_target = wp.empty_like(f_0)
    times["copy"] = _timed(lambda: wp.copy(copy_target, f_0), sync, repeats, inner)
    copy_target = None  # freed before the next rows
    times["xlb_forward"] = _timed(lambda: stepper(f_0, f_1, bc_mask, missing_mask, omega_x, 0), sync, repeats, inner)
    times["ag_forward"] = _timed(lambda: step.forward(f_0, f_1, bc_mask, missing_mask, omega, 0), sync, repeats, inner)
    kernels.update(_kernel_resources(wp, device, {"xlb stepper": getattr(stepper, "warp_kernel", None)}))

    before = memory.used()
    adj_f_0 = wp.zeros_like(f_0)
    adj_f_1 = wp.array(cotangent, dtype=f_0.dtype)
    times["ag_adjoint"] = _timed(lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1), sync, repeats, inner)

    def forward_adjoint():
        step.forward(f_0, f_1, bc_mask, missing_mask, omega, 0)
        step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1)

    times["ag_forward_adjoint"] = _timed(forward_adjoint, sync, repeats, inner)
    fresh = reverses_fresh(step.manifest, storage(step, bc_mask))
    # the carry: where the step updates f_0 in place or keeps cells (adjoint_kept then runs too)
    carry = wp.zeros_like(f_0) if fresh and (step.manifest.in_place or has_kept_cells(bc_mask)) else None
    if fresh:
        # what a rollout's reverse sweep runs here (adj_f_0 written, adj_f_1 not cleared)
        times["ag_adjoint_fresh"] = _timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, fresh=True, carry=carry),
            sync, repeats, inner)
    # the same with the omega gradient asked for (the kernels that also write per-cell adjoints of
    # omega, which the runtime then sums); the rows above get the state-only kernels
    adj_omega = wp.zeros(1, dtype=step.compute_dtype)
    times["ag_adjoint_omega"] = _timed(
        lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, adj_omega), sync, repeats, inner)
    if "ag_adjoint_fresh" in times:
        times["ag_adjoint_fresh_omega"] = _timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, adj_omega, fresh=True, carry=carry),
            sync, repeats, inner)
    if step.manifest.residuals and "ag_adjoint_fresh" in times:
        kept = wp.empty((step.manifest.residual_count, *f_0.shape[1:]), dtype=step.compute_dtype)
        omega_c = step.compute_dtype(omega)
        times["ag_forward_residuals"] = _timed(
            lambda: step.forward_residuals(f_0, f_1, bc_mask, missing_mask, omega_c, 0, [], kept), sync, repeats, inner)
        times["ag_adjoint_fresh_residuals"] = _timed(
            lambda: step.adjoint(f_0, f_1, bc_mask, missing_mask, omega, 0, adj_f_0, adj_f_1, fresh=True, carry=carry,
                                 residuals=kept), sync, repeats, inner)
    extra.update(dict.fromkeys(("ag_adjoint", "ag_forward_adjoint", "ag_adjoint_fresh", "ag_adjoint_omega",
                                "ag_adjoint_fresh_omega", "ag_forward_residuals", "ag_adjoint_fresh_residuals"),
                               memory.used() - before))
    ours = _adjointgen_gradient(wp, step, state, cotangent, f_1, bc_mask, missing_mask, omega)
    kernels.update(_kernel_resources(wp, device, {name: step.kernel(name) for name in step.manifest.kernels}))
    adj_f_0 = adj_f_1 = None  # freed before Warp's tape and JAX run

    if "tape" not in skip:
        times["tape_backward"], extra["tape_backward"], notes["tape_backward"] = _tape(
            wp, stepper, state, cotangent, f_1, bc_mask, missing_mask, omega_x, ours, memory, repeats, inner)
    if "jax" not in skip:
        jax_times, jax_extra = _jax(config, shape, state, cotangent, omega, repeats, inner)
        times.update(jax_times)
        extra.update(jax_extra)

    bandwidth, rows = _rows(config, shape, f_0.shape[0], times, extra, notes, step.manifest.residual_count)
    return {"case": config.label, "grid": list(shape), "copy_GBps": bandwidth / 1e9, "rows": rows, "kernels": kernels}


def _rows(config, shape: tuple, q: int, times: dict, extra: dict, notes: dict, residual_count: int = 0) -> tuple[float, dict]:
    """(copy bandwidth in B/s, {row: ms, MLUPS, ratio to XLB's forward, % of the copy bandwidth that
    the row's minimal traffic reaches, extra memory, note}) for the rows that were timed."""
    cells = int(np.prod(shape))
    word = 8 if config.is_fp64 else 4
    state_bytes = q * cells * word
    bandwidth = 2 * state_bytes / (times["copy"] * 1e-3)
    # minimal traffic: a forward reads f_0 and writes f_1; an adjoint also reads adj_f_1 and
    # read-modify-writes adj_f_0 (and clears adj_f_1 for the tape): 5 state arrays; masks 1 B/cell
    residual_bytes = residual_count * cells * (8 if config.precision.startswith("FP64") else 4)  # compute precision
    minimal = {"copy": 2 * state_bytes, "xlb_forward": 2 * state_bytes + cells, "ag_forward": 2 * state_bytes + cells,
               "ag_forward_residuals": 2 * state_bytes + residual_bytes + cells,
               "ag_adjoint_fresh_residuals": 2 * state_bytes + residual_bytes + cells,
               "ag_adjoint": 5 * state_bytes + cells, "ag_forward_adjoint": 7 * state_bytes + 2 * cells,
               "ag_adjoint_fresh": 3 * state_bytes + cells, "ag_adjoint_omega": 5 * state_bytes + cells,
               "ag_adjoint_fresh_omega": 3 * state_bytes + cells,
               "tape_backward": 5 * state_bytes + cells, "jax_forward": 2 * state_bytes + cells,
               "jax_grad": 7 * state_bytes + 2 * cells}
    rows = {}
    for name in ROWS:
        if name not in times:
            continue
        ms = times[name]
        rows[name] = {"ms": ms, "mlups": cells / (ms * 1e-3) / 1e6, "ratio_to_xlb_forward": ms / times["xlb_forward"],
                      "percent_of_copy_bandwidth": 100 * (minimal[name] / (ms * 1e-3)) / bandwidth,
                      "extra_memory_gb": extra.get(name, float("nan")) / 1e9, "note": notes.get(name, "")}
    return bandwidth, rows


def _kernel_resources(wp, device, kernels: dict) -> dict:
    """{name: {"register_count", "local_memory_size"}} of the kernels that exist and have been
    launched on ``device`` (CUDA only: the driver's account of the compiled code)."""
    if not device.is_cuda:
        return {}
    found = {}
    for name, kernel in kernels.items():
        if getattr(kernel, "is_generic", False):  # XLB's stepper kernel: the one overload it launched
            overloads = list(getattr(kernel, "overloads", {}).values())
            kernel = overloads[0] if len(overloads) == 1 else None
        if kernel is None:
            continue
        try:
            found[name] = dict(wp.get_cuda_kernel_properties(kernel, device))
        except Exception as error:  # a kernel not loaded on this device: say so rather than guess
            found[name] = {"error": str(error).splitlines()[0]}
    return found


def _adjointgen_gradient(wp, step, state, cotangent, f_1, bc_mask, missing_mask, omega) -> np.ndarray:
    f_in = wp.array(state, dtype=f_1.dtype, requires_grad=True)
    f_out = wp.clone(f_1, requires_grad=True)
    tape = wp.Tape()
    with tape:
        step(f_in, f_out, bc_mask, missing_mask, omega, 0)
    tape.backward(grads={f_out: wp.array(cotangent, dtype=f_1.dtype)})
    return f_in.grad.numpy()


def _tape(wp, stepper, state, cotangent, f_1, bc_mask, missing_mask, omega_x, ours, memory, repeats, inner):
    """Warp's tape on XLB's stepper, with the switches that make its gradient right: max_unroll
    for XLB's stepper module, and the global enable_vector_component_overwrites (Warp 1.19 folds
    the global value into every module's build options; a module option is overridden)."""
    module = sys.modules[type(stepper).__module__]
    saved = (wp.get_module_options(module).get("max_unroll"), wp.config.enable_vector_component_overwrites)
    wp.config.enable_vector_component_overwrites = True
    wp.set_module_options({"max_unroll": 64}, module=module)  # also marks the module for a rebuild
    before = memory.used()
    f_in = wp.array(state, dtype=f_1.dtype, requires_grad=True)
    f_out = wp.clone(f_1, requires_grad=True)
    tape = wp.Tape()
    with tape:
        stepper(f_in, f_out, bc_mask, missing_mask, omega_x, 0)
    seed = wp.array(cotangent, dtype=f_1.dtype)
    tape.backward(grads={f_out: seed})
    theirs = f_in.grad.numpy()
    finite = np.isfinite(theirs) & np.isfinite(ours)
    difference = float(np.max(np.abs(theirs - ours)[finite]) / np.max(np.abs(ours[finite])))
    non_finite = int(np.size(theirs) - np.count_nonzero(np.isfinite(theirs)))

    def backward():
        tape.backward(grads={f_out: seed})

    ms = _timed(backward, wp.synchronize, repeats, inner)
    extra = memory.used() - before
    wp.config.enable_vector_component_overwrites = saved[1]
    wp.set_module_options({"max_unroll": saved[0]}, module=module)
    note = f"gradient vs adjointgen: {difference:.1e} (max relative)"
    if non_finite:
        note += f"; {non_finite} non-finite entries in the tape's gradient"
    return ms, extra, note


def _jax(config, shape, state, cotangent, omega, repeats, inner):
    import jax
    import jax.numpy as jnp

    from adjointgen.xlb.support import make_stepper

    stepper = make_stepper(config, "jax", shape)
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    f = jnp.asarray(state.reshape((state.shape[0], *shape)))
    c = jnp.asarray(cotangent.reshape(f.shape))
    forward = jax.jit(lambda f: stepper(f, f_1, bc_mask, missing_mask, omega, 0)[1])
    grad = jax.jit(jax.grad(lambda f: jnp.sum(c * stepper(f, f_1, bc_mask, missing_mask, omega, 0)[1])))
    times = {"jax_forward": _timed(lambda: forward(f).block_until_ready(), lambda: None, repeats, inner),
             "jax_grad": _timed(lambda: grad(f).block_until_ready(), lambda: None, repeats, inner)}

    def memory(function) -> float:
        """XLA's own account of the compiled function: temporaries plus outputs."""
        try:
            analysis = function.lower(f).compile().memory_analysis()
            return float(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)
        except Exception:  # not every backend reports it
            return float("nan")

    return times, {"jax_forward": memory(forward), "jax_grad": memory(grad)}


def write_results(out, stem: str, results: dict, table: str) -> None:
    """``<stem>.json`` and ``<stem>.md`` in the folder ``out`` (made if missing); the table printed."""
    import json
    from pathlib import Path

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(table)
    print(table)


def markdown(results: dict) -> str:
    lines = [f"# adjointgen bench: {results['device']}, Warp {results['warp']}, JAX {results.get('jax', '-')}, {results['date']}",
             "", "Median of repeats after warm-up; ratios to XLB's Warp forward in the same run.", "",
             "| case | grid | what | ms | MLUPS | / XLB forward | % of copy bandwidth | memory GB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        grid = "x".join(map(str, case["grid"]))
        for name, row in case["rows"].items():
            memory = "-" if row["extra_memory_gb"] != row["extra_memory_gb"] else f"{row['extra_memory_gb']:.2f}"
            lines.append(f"| {case['case']} | {grid} | {name} | {row['ms']:.3f} | {row['mlups']:.0f} | "
                         f"{row['ratio_to_xlb_forward']:.2f} | {row['percent_of_copy_bandwidth']:.0f} | {memory} | {row['note']} |")
    resources = [(case["case"], name, k) for case in results["cases"] for name, k in case.get("kernels", {}).items()]
    if resources:
        lines += ["", "Compiled kernels (CUDA driver): registers per thread, local memory per thread (spills).", "",
                  "| case | kernel | registers | local bytes |", "|---|---|---|---|"]
        for label, name, k in resources:
            lines.append(f"| {label} | {name} | {k.get('register_count', '-')} | {k.get('local_memory_size', k.get('error', '-'))} |")
    return "\n".join(lines) + "\n"


def run(cases, size: int, repeats: int, inner: int, skip: set) -> dict:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and Warp share the device
    import warp as wp

    wp.init()
    results = {"device": wp.get_device().name, "warp": wp.__version__, "date": time.strftime("%Y-%m-%d"),
               "size": size, "repeats": repeats, "inner": inner, "cases": []}
    if "jax" not in skip:
        import jax

        results["jax"] = jax.__version__
        results["jax_device"] = str(jax.devices()[0])
    for label in cases:
        results["cases"].append(run_case(label, size, repeats, inner, skip))
    return results
