"""Verification: generated kernels against independent oracles.

For one configuration, :func:`verify_configuration` measures

- ``forward``: the generated forward step against XLB's own Warp stepper kernel;
- ``forward``: both arrays the step leaves (the new state, and ``f_0``, into which ZouHe and
  Regularized conditions write their data back), except where XLB's Warp stepper does not
  compile (:data:`XLB_WARP_FAILS`);
- ``grad_1`` and ``grad_5``: ``d <c, F(f_0)> / d f_0`` through the generated adjoint (XLB's own
  two-buffer loop on a ``wp.Tape``, through :func:`adjointgen.differentiable`) against
  ``jax.vjp`` of XLB's JAX stepper over 1 and 5 steps;
- ``omega``: ``d <c, F(f_0)> / d omega`` over 5 steps (omega passed as a one-element array)
  against the same ``jax.vjp`` (for FP32 configurations, XLB-JAX in FP64 on the same inputs,
  within 1e-4: the sum over the grid cancels, and XLB-JAX's own FP32 value is off by up to 3.4e-5);
- ``bc_values``: ``d <c, F(f_0)> / d`` (each boundary condition's prescribed values) over 5
  steps against central differences of the generated FP64 forward (XLB-JAX's steppers keep
  these values out of ``jax.vjp``'s reach): EquilibriumBC's density and velocity through a module
  built with ``boundary_parameters=True`` (whose ``d/d f_0`` must also still match XLB-JAX over
  one step; the worse of the two is shown), and ZouHe's and Regularized's prescribed value, which
  XLB keeps in ``f_1`` at the condition's cells (its gradient is ``f_1.grad`` there);
- ``field`` and ``field_fd`` (configurations whose collision reads a design field, e.g.
  ``PorousBGK``): ``d <c, F(f_0)> / d field`` per cell over 5 steps against ``jax.vjp`` of XLB's
  JAX stepper running the operator's own JAX implementation with the field traced
  (:func:`adjointgen.xlb.design.jax_step`), and, in FP64, at probe cells (fluid, solid, gray and
  fluid next to solid) over 1 and 5 steps against central differences of the generated forward.
  Their ``forward`` is against XLB-JAX (XLB's Warp stepper has no per-cell inputs);
- ``fd``: (FP64 configurations) the projection test ``<J t, c>`` by central differences of the
  generated forward against ``<t, J^T c>`` from the generated adjoint, for random ``t``, ``c``,
  and the same for omega; the worse of the two is reported.

Errors are max-norm relative errors, ``max|a - b| / max|b|``. Inputs are a random perturbation
of a random equilibrium (no kinks in BGK). Every check takes the module to test as an argument,
so a planted wrong adjoint can be shown to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adjointgen.config import DESIGN_COLLISIONS, Configuration
from adjointgen.xlb.support import make_stepper, prepare_fields

TOLERANCES = {
    # forward parity, gradient vs XLB-JAX, d/d omega (a sum over the grid), FD projection
    "FP32FP32": {"forward": 1e-6, "grad": 1e-5, "omega": 1e-4, "fd": None},
    "FP64FP64": {"forward": 1e-12, "grad": 1e-10, "omega": 1e-10, "fd": 1e-7},
    # computed in float64, stored in float32: every step rounds the state to float32
    "FP64FP32": {"forward": 1e-6, "grad": 1e-5, "omega": 1e-4, "fd": None},
}
OMEGA = 1.6
STEPS = 5  # the longer rollout of grad_N, omega and bc_values
#: Where XLB 0.3.1's own Warp stepper does not compile (on Warp 1.19): no forward parity there,
#: gradients still against XLB-JAX. Smagorinsky in FP64 mixes float32 constants into float64
#: arithmetic (FINDINGS); in FP64FP32, ZouHe's and Regularized's functionals multiply a float32
#: value read from f_1 into float64 vectors.
XLB_WARP_FAILS = {("SmagorinskyLESBGK", "FP64FP64"), ("ForcedSmagorinskyLESBGK", "FP64FP64")}
_AUX_MIXES = ("channel", "outflow", "regularized", "extrapolation", "obstacle")


def xlb_warp_fails(config: Configuration) -> bool:
    return ((config.collision, config.precision) in XLB_WARP_FAILS
            or (config.precision == "FP64FP32" and config.boundaries in _AUX_MIXES))
#: (boundaries, precision) where XLB's JAX and Warp steppers disagree on the forward step beyond
#: the tolerance: our forward follows XLB's Warp functionals, and d/d f_0 and d/d omega are
#: checked against FP64 finite differences of it (projections on 3 random directions), marked FD.
JAX_DIFFERS = {
    ("extrapolation", "FP64FP64"): "XLB-Warp's extrapolation outlet rounds its 1/sqrt(3) to float32 (XLB-JAX: float64), "
                                   "a 1.8e-8 relative difference",
}
DEFAULT_SHAPES = {2: (6, 5), 3: (4, 5, 3)}
BOUZIDI_SHAPES = {2: (9, 8), 3: (8, 8, 8)}


def default_shape(config: Configuration) -> tuple:
    """The small grid a configuration is verified on. XLB-JAX's extrapolation outlet takes its
    normal from the most frequent coordinate of the outlet's indices; on a 4x5x3 grid the outlet
    face (x = 3, y in 1..3, z = 1) ties x with z, XLB-JAX extrapolates along z and disagrees with
    XLB-Warp (0.44 in d/d f_0); a 6x5x4 grid has no tie."""
    if config.dim == 3 and config.boundaries == "extrapolation":
        return (6, 5, 4)
    if config.boundaries == "bouzidi":  # room for a body, its ring of wall cells and fluid around them
        return BOUZIDI_SHAPES[config.dim]
    return DEFAULT_SHAPES[config.dim]


@dataclass
class Row:
    config: Configuration
    shape: tuple
    results: dict = field(default_factory=dict)  # name -> (error, tolerance)
    against_fd: set = field(default_factory=set)  # results checked against finite differences instead of XLB-JAX

    @property
    def passed(self) -> bool:
        return all(tol is None or (np.isfinite(err) and err <= tol) for err, tol in self.results.values())


def _enable_x64():
    """Configure JAX as an oracle: float64 available, and float32 products at full precision (on
    recent NVIDIA GPUs XLA's default float32 matmul precision rounds inputs to TF32, which puts
    XLB-JAX's own FP32 step ~1e-3 off; on CPUs this changes nothing)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (scale if scale > 0 else 1.0))


def random_state(config: Configuration, shape: tuple, seed: int) -> np.ndarray:
    """A random perturbation of a random equilibrium, shaped (q, nx, ny, nz) for Warp."""
    from adjointgen.xlb.support import import_xlb

    xlb = import_xlb()
    from xlb.compute_backend import ComputeBackend
    from xlb.precision_policy import PrecisionPolicy

    vs = getattr(xlb.velocity_set, config.velocity_set)(precision_policy=PrecisionPolicy.FP64FP64, compute_backend=ComputeBackend.JAX)
    c, w = np.asarray(vs._c, dtype=np.float64), np.asarray(vs._w, dtype=np.float64)
    rng = np.random.default_rng(seed)
    grid = tuple(shape) + (1,) * (3 - len(shape))
    rho = 1.0 + 0.05 * rng.standard_normal(grid)
    u = 0.05 * rng.standard_normal((config.dim,) + grid)
    cu = 3.0 * np.tensordot(c, u, axes=(0, 0))
    usqr = 1.5 * np.sum(u * u, axis=0)
    feq = rho * w.reshape((-1, 1, 1, 1)) * (1.0 + cu * (1.0 + 0.5 * cu) - usqr)
    return feq * (1.0 + 0.01 * rng.standard_normal(feq.shape))


def _dtype(config: Configuration):
    """The store precision: the dtype of the state arrays."""
    return np.float64 if config.precision.endswith("FP64") else np.float32


def design_fields(shapes: dict, seed: int = 0) -> dict:
    """{field name: values} for design fields of the given array ``shapes`` ({name: (components,
    nx, ny, nz)}, Warp's layout: ``step.field_shapes``). A field of one component (porosity):
    about a quarter of the cells at its lower bound (fluid), a quarter at its upper bound (solid),
    the rest between, so every kind of cell and interface occurs. A field of several (a wall
    distance per link): uniform over the upper 95 % of its range, so both of Bouzidi's branches
    (q < 1/2, q >= 1/2) occur."""
    from adjointgen.xlb.fields import declared

    rng = np.random.default_rng(seed + 7)
    values = {}
    for name, size in shapes.items():
        spec = declared(name)
        width = spec.high - spec.low
        if size[0] == 1:
            values[name] = np.clip(rng.uniform(spec.low - width / 2, spec.high + width / 2, size), spec.low, spec.high)
        else:
            values[name] = rng.uniform(spec.low + 0.05 * width, spec.high, size)
    return values


def probe_links(values: np.ndarray, missing: np.ndarray, wall: np.ndarray, opposite) -> list:
    """Elements ``(l, i, j, k)`` of a per-link field (a wall distance) to check by finite
    differences, at ``wall`` cells (boolean, one per cell): the first missing link with q < 1/2 and
    a fluid cell behind, one with q >= 1/2, one with q < 1/2 and a solid cell behind (halfway
    fallback: no gradient) and the first link that is not missing (no gradient)."""
    links = [(l, *cell) for cell in zip(*np.nonzero(wall)) for l in range(values.shape[0])]
    tests = (lambda e: missing[e] and values[e] < 0.5 and not missing[(opposite[e[0]], *e[1:])],
             lambda e: missing[e] and values[e] >= 0.5,
             lambda e: missing[e] and values[e] < 0.5 and missing[(opposite[e[0]], *e[1:])],
             lambda e: not missing[e])
    return sorted({pick for test in tests if (pick := next((e for e in links if test(e)), None)) is not None})


def probe_cells(values: np.ndarray, eligible: np.ndarray | None = None) -> list:
    """Cells of a field (Warp layout) to check by finite differences: the first solid (1) and gray
    cell, the first fluid (0) cell with a solid neighbour (an interface) and the first without,
    among the ``eligible`` cells (a boolean mask like ``values``; default: all)."""
    shape = values.shape[1:]

    def solid_neighbour(cell):
        return any(values[(0,) + tuple((cell[1 + a] + d * (a == b)) % shape[a] for a in range(3))] == 1.0
                   for b in range(3) if shape[b] > 1 for d in (-1, 1))

    tests = (lambda c: values[c] == 1.0, lambda c: 0.0 < values[c] < 1.0,
             lambda c: values[c] == 0.0 and solid_neighbour(c), lambda c: values[c] == 0.0 and not solid_neighbour(c))
    cells = [c for c in np.ndindex(values.shape) if eligible is None or eligible[c]]
    return sorted({pick for test in tests if (pick := next((c for c in cells if test(c)), None)) is not None})


class GeneratedSide:
    """The generated kernels of one module, driven as a user would (wp.Tape)."""

    def __init__(self, config: Configuration, shape: tuple, module=None, boundary_parameters: bool = False):
        import warp as wp

        from adjointgen.runtime.step import DifferentiableStep, load_module

        self.wp = wp
        self.config = config
        self.stepper = make_stepper(config, "warp", shape)
        module = module or load_module(self.stepper, config, boundary_parameters)
        # design fields the module reads: fixed values, new arrays (fresh gradients) per rollout
        grid = tuple(shape) + (1,) * (3 - len(shape))
        self.field_values = design_fields({name: module.manifest.field_shape(name, grid) for name in module.manifest.fields})
        fields = {name: wp.array(values.astype(_dtype(config))) for name, values in self.field_values.items()}
        self.step = DifferentiableStep(self.stepper, module, config, boundary_parameters, fields)
        _, f_1, self.bc_mask, self.missing_mask = prepare_fields(self.stepper, config)
        self.f1_prepared = f_1.numpy().astype(np.float64)

    def rollout(self, f0: np.ndarray, steps: int, cotangent: np.ndarray | None = None, omega: float = OMEGA,
                f1: np.ndarray | None = None, cotangent_f0: np.ndarray | None = None, field_values: dict | None = None):
        """XLB's own loop on a ``wp.Tape`` (two buffers, swapped after each step), from ``f0`` and
        ``f1`` (default: the ``f_1`` of ``prepare_fields``, holding boundary data). Returns the
        final new state and, with a cotangent of it, the gradient with respect to ``f0``; then
        also ``self.f1_gradient`` and ``self.omega_gradient`` (omega is a one-element array).
        ``cotangent_f0`` adds a cotangent for the other final buffer (what the last step left in
        its ``f_0``). ``field_values`` replaces the design fields' values ({name: array});
        ``self.field_gradients`` holds their gradients after a rollout with a cotangent."""
        wp = self.wp
        dtype = _dtype(self.config)
        f1 = self.f1_prepared if f1 is None else f1
        first = wp.array(f0.astype(dtype), requires_grad=True)
        second = wp.array(f1.astype(dtype), requires_grad=True)
        omega_array = wp.array([omega], dtype=self.step.compute_dtype, requires_grad=True)
        for name, values in (field_values or self.field_values).items():
            self.step.fields[name] = wp.array(values.astype(dtype), requires_grad=True)
        tape = wp.Tape()
        f_0, f_1 = first, second
        with tape:
            for t in range(steps):
                f_0, f_1 = self.step(f_0, f_1, self.bc_mask, self.missing_mask, omega_array, t)
                f_0, f_1 = f_1, f_0
        final, other = f_0, f_1  # after the swap: f_0 holds the new state
        self.final_other = other.numpy().astype(np.float64)
        result = final.numpy().astype(np.float64)
        if cotangent is None:
            return result, None
        grads = {final: wp.array(cotangent.astype(dtype))}
        if cotangent_f0 is not None:
            grads[other] = wp.array(cotangent_f0.astype(dtype))
        tape.backward(grads=grads)
        self.omega_gradient = float(omega_array.grad.numpy()[0])
        self.f1_gradient = second.grad.numpy().astype(np.float64)
        self.field_gradients = {name: array.grad.numpy().astype(np.float64) for name, array in self.step.fields.items()}
        return result, first.grad.numpy().astype(np.float64)


def xlb_warp_forward(config: Configuration, shape: tuple, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of XLB's own Warp stepper: (new state, what it left in ``f_0``; boundary
    conditions that keep data in ``f_1`` write it back there)."""
    import warp as wp

    stepper = make_stepper(config, "warp", shape)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    f_0 = wp.array(f0.astype(_dtype(config)))
    omega = wp.float64(OMEGA) if config.precision.startswith("FP64") else OMEGA
    f_0, f_1 = stepper(f_0, f_1, bc_mask, missing_mask, omega, 0)
    return f_1.numpy().astype(np.float64), f_0.numpy().astype(np.float64)


def jax_vjp(config: Configuration, shape: tuple, f0: np.ndarray, cotangent: np.ndarray, steps: int):
    """(final state, d<c, F(f0)>/d f0, d<c, F(f0)>/d omega) from XLB's JAX stepper, in Warp's
    (q, nx, ny, nz) layout (see :func:`jax_reference`)."""
    reference = jax_reference(config, shape, f0, cotangent, steps)
    return reference.final, reference.grad, reference.grad_omega


@dataclass
class JaxReference:
    final: np.ndarray  # the state after the steps, Warp layout
    grad: np.ndarray  # d<c, F>/d f0
    grad_omega: float
    grad_fields: dict = field(default_factory=dict)  # design field name -> d<c, F>/d field, Warp layout (components, nx, ny, nz)


def jax_reference(config: Configuration, shape: tuple, f0: np.ndarray, cotangent: np.ndarray, steps: int,
                  fields: dict | None = None) -> JaxReference:
    """The final state and ``jax.vjp`` of ``<c, F(f0)>`` through XLB's JAX stepper, in Warp's
    layout. With design ``fields`` ({name: values, Warp layout}) the stepper's collision reads
    them (:func:`adjointgen.xlb.design.jax_step`) and their gradients are returned too.

    XLB's JAX stepper has no solid nodes: where the Warp masks say ``bc_mask == 255`` (the
    ``obstacle`` mix), XLB's Warp kernel returns early and the cell keeps what its output buffer
    held. The oracle adds exactly that around XLB-JAX's step, ``new = where(solid, f_1, step(f))``,
    and carries the two buffers as XLB's loop swaps them; nothing else changes."""
    _enable_x64()
    import jax
    import jax.numpy as jnp

    stepper = make_stepper(config, "jax", shape)
    _, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    jax_shape = (f0.shape[0],) + tuple(shape)
    dtype = _dtype(config)
    _, warp_f_1, warp_bc_mask, _ = prepare_fields(make_stepper(config, "warp", shape), config)
    solid_mask = warp_bc_mask.numpy()[0].reshape(shape) == 255
    solid = jnp.asarray(solid_mask)
    # the buffer XLB's Warp loop passes as f_1 in the first step: prepare_fields' f_1
    first_f1 = jnp.asarray(warp_f_1.numpy().reshape(jax_shape).astype(dtype))

    names = sorted(fields or {})

    def run(f, omega, *values):
        other = first_f1
        for t in range(steps):
            if names:
                from adjointgen.xlb.design import jax_step

                _, new = jax_step(stepper, f, f_1, bc_mask, missing_mask, omega, t, dict(zip(names, values)))
            else:
                _, new = stepper(f, f_1, bc_mask, missing_mask, omega, t)
            if solid_mask.any():
                new = jnp.where(solid, other, new)
            f, other = new, f
        return f

    x = jnp.asarray(f0.reshape(jax_shape).astype(dtype))
    values = [jnp.asarray(fields[name].reshape((fields[name].shape[0],) + tuple(shape)).astype(dtype)) for name in names]
    final, pullback = jax.vjp(run, x, jnp.asarray(OMEGA, dtype=dtype), *values)
    grad, grad_omega, *grad_values = pullback(jnp.asarray(cotangent.reshape(jax_shape).astype(dtype)))
    return JaxReference(np.asarray(final, np.float64).reshape(f0.shape), np.asarray(grad, np.float64).reshape(f0.shape),
                        float(grad_omega),
                        {name: np.asarray(g, np.float64).reshape(fields[name].shape) for name, g in zip(names, grad_values)})


def fd_projection(side: GeneratedSide, f0: np.ndarray, seed: int, eps: float = 1e-6, steps: int = 1) -> float:
    """|<J t, c> - <t, J^T c>| / max(|.|) with central differences (FP64 only), for the step as
    the map (f_0, f_1) -> (f_0 after the step, new state): tangents on both inputs (f_1 carries
    boundary data), cotangents on both outputs (f_0 takes recovered boundary data back)."""
    rng = np.random.default_rng(seed)
    f1 = side.f1_prepared
    t0, t1 = rng.standard_normal(f0.shape) * np.abs(f0), rng.standard_normal(f1.shape) * (np.abs(f1) + 1e-2)
    c, c0 = rng.standard_normal(f0.shape), rng.standard_normal(f0.shape)
    outputs = []
    for sign in (1, -1):
        new, _ = side.rollout(f0 + sign * eps * t0, steps, f1=f1 + sign * eps * t1)
        outputs.append((new, side.final_other))
    jt_c = float(np.sum((outputs[0][0] - outputs[1][0]) / (2 * eps) * c) + np.sum((outputs[0][1] - outputs[1][1]) / (2 * eps) * c0))
    _, g0 = side.rollout(f0, steps, c, f1=f1, cotangent_f0=c0)
    t_jtc = float(np.sum(t0 * g0) + np.sum(t1 * side.f1_gradient))
    return abs(jt_c - t_jtc) / max(abs(jt_c), abs(t_jtc), 1e-300)


def fd_omega(side: GeneratedSide, f0: np.ndarray, seed: int, eps: float = 1e-4, steps: int = 1) -> float:
    """|d<c, F>/d omega by central differences - the adjoint's| / max(|.|), one step (FP64 only).
    The derivative is a sum with cancellation (small against its terms), so the difference step is
    larger than for the state: at 1e-6 rounding alone gave 4.6e-8 on a 6x5 channel, at 1e-4 2.7e-10."""
    c = np.random.default_rng(seed).standard_normal(f0.shape)
    plus, _ = side.rollout(f0, steps, omega=OMEGA + eps)
    minus, _ = side.rollout(f0, steps, omega=OMEGA - eps)
    finite = float(np.sum((plus - minus) / (2 * eps) * c))
    side.rollout(f0, steps, c)
    return abs(finite - side.omega_gradient) / max(abs(finite), abs(side.omega_gradient), 1e-300)


def boundary_value_gradients(side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, steps: int) -> np.ndarray:
    """d<c, F(f0)>/d (every lifted boundary value) through the generated adjoint, flattened."""
    for array in side.step.parameters.values():
        array.grad.zero_()
    side.rollout(f0, steps, cotangent)
    return np.concatenate([array.grad.numpy().astype(np.float64) for array in side.step.parameters.values()])


def boundary_value_fd(side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, steps: int, eps: float = 1e-6) -> np.ndarray:
    """The same by central differences of the generated forward (use an FP64 side)."""
    out = []
    for array in side.step.parameters.values():
        base = array.numpy().copy()
        for component in range(len(base)):
            shifted = []
            for sign in (1, -1):
                value = base.copy()
                value[component] += sign * eps
                array.assign(value)
                shifted.append(side.rollout(f0, steps)[0])
            array.assign(base)
            out.append(float(np.sum((shifted[0] - shifted[1]) / (2 * eps) * cotangent)))
    return np.array(out)


def aux_boundary_ids(stepper) -> dict:
    """{id: name} of the stepper's conditions whose prescribed values live in ``f_1`` (ZouHe,
    Regularized: XLB's auxiliary data, one value per cell in population 0)."""
    return {bc.id: f"{type(bc).__name__}({bc.bc_type})" for bc in stepper.boundary_conditions
            if getattr(bc, "needs_aux_recovery", False)}


def aux_value_gradients(side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, steps: int) -> np.ndarray:
    """d<c, F>/d (each aux-data condition's prescribed value, the same on all its cells): the
    sum of ``f_1``'s gradient over the condition's cells, population 0."""
    side.rollout(f0, steps, cotangent)
    mask = side.bc_mask.numpy()[0]
    return np.array([side.f1_gradient[0][mask == bc_id].sum() for bc_id in sorted(aux_boundary_ids(side.stepper))])


def aux_value_fd(side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, steps: int, eps: float = 1e-6) -> np.ndarray:
    mask = side.bc_mask.numpy()[0]
    out = []
    for bc_id in sorted(aux_boundary_ids(side.stepper)):
        shifted = []
        for sign in (1, -1):
            f1 = side.f1_prepared.copy()
            f1[0][mask == bc_id] += sign * eps
            shifted.append(side.rollout(f0, steps, f1=f1)[0])
        out.append(float(np.sum((shifted[0] - shifted[1]) / (2 * eps) * cotangent)))
    return np.array(out)


def field_fd(side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, steps: int, eps: float = 1e-6) -> tuple:
    """(the adjoint's, central differences') d<c, F>/d field at :func:`probe_cells` of every
    design field, over ``steps`` steps of the generated forward (use an FP64 side)."""
    side.rollout(f0, steps, cotangent)
    ours, finite = [], []
    # cells without a boundary condition: there the collision's result is the cell's output (a
    # full-way bounce-back cell discards it, and its field gradient is zero on both sides)
    mask = side.bc_mask.numpy()
    interior = mask == 0
    for name, values in side.field_values.items():
        if values.shape[0] == 1:
            probes = probe_cells(values, interior)
        else:  # a per-link field of a wall: its missing links and one that is not
            opposite = side.stepper.velocity_set.opp_indices
            probes = probe_links(values, side.missing_mask.numpy(), (mask[0] != 0) & (mask[0] != 255), opposite)
        for cell in probes:
            ours.append(side.field_gradients[name][cell])
            shifted = []
            for sign in (1, -1):
                moved = dict(side.field_values)
                moved[name] = values.copy()
                moved[name][cell] += sign * eps
                shifted.append(side.rollout(f0, steps, field_values=moved)[0])
            finite.append(float(np.sum((shifted[0] - shifted[1]) / (2 * eps) * cotangent)))
    if not np.any(finite):
        return np.array([np.inf]), np.array([1.0])  # nothing was probed: not a pass
    return np.array(ours), np.array(finite)


def _field_checks(row: Row, side: GeneratedSide, f0: np.ndarray, cotangent: np.ndarray, checks) -> None:
    """``field`` (per cell, 5 steps, against XLB-JAX with the field traced) and ``field_fd`` (FP64:
    probe cells, 1 and 5 steps, against central differences of the generated forward)."""
    config, tol = row.config, TOLERANCES[row.config.precision]
    if "field" in checks:
        side.rollout(f0, STEPS, cotangent)
        reference = jax_reference(config, row.shape, f0, cotangent, STEPS, side.field_values)
        row.results["field"] = (max(relative_error(side.field_gradients[name], reference.grad_fields[name])
                                    for name in side.field_values), tol["grad"])
    if "field_fd" in checks and config.is_fp64:
        # per-link wall distances: a larger step, since their gradients are small in D3Q19 (1e-3)
        # and rounding sets the error at 1e-6 there (1.2e-7); at 1e-5 it is 4.7e-8 (D2Q9: 1.1e-9),
        # at 1e-4 truncation in q >= 1/2 sets it (D2Q9: 6.4e-8)
        eps = 1e-5 if any(values.shape[0] > 1 for values in side.field_values.values()) else 1e-6
        errors = [relative_error(*field_fd(side, f0, cotangent, steps, eps)) for steps in (1, STEPS)]
        row.results["field_fd"] = (max(errors), tol["fd"])


def verify_configuration(config: Configuration, shape: tuple | None = None, module=None, seed: int = 0,
                         checks=("forward", "grad_1", f"grad_{STEPS}", "omega", "bc_values", "field", "field_fd", "fd")) -> Row:
    shape = tuple(shape or default_shape(config))
    tol = TOLERANCES[config.precision]
    row = Row(config, shape)
    f0 = random_state(config, shape, seed)
    if _dtype(config) == np.float32:
        f0 = f0.astype(np.float32).astype(np.float64)
    cotangent = np.random.default_rng(seed + 1).standard_normal(f0.shape)
    exact = cotangent.astype(np.float32).astype(np.float64) if not config.is_fp64 else cotangent
    side = GeneratedSide(config, shape, module)
    fields = side.field_values  # design fields: the oracle is XLB-JAX (XLB-Warp has no per-cell inputs)
    if "forward" in checks and fields:
        ours, _ = side.rollout(f0, 1)
        row.results["forward"] = (relative_error(ours, jax_reference(config, shape, f0, cotangent, 1, fields).final),
                                  tol["forward"])
    elif "forward" in checks and not xlb_warp_fails(config):
        ours, _ = side.rollout(f0, 1)
        new, left_in_f_0 = xlb_warp_forward(config, shape, f0)
        row.results["forward"] = (max(relative_error(ours, new), relative_error(side.final_other, left_in_f_0)), tol["forward"])
    differs = (config.boundaries, config.precision) in JAX_DIFFERS
    for steps in (1, STEPS):
        name = f"grad_{steps}"
        if name in checks and differs:
            error = max(fd_projection(side, f0, seed + 10 * k, steps=steps) for k in range(3))
            row.results[name] = (error, tol["fd"])
            row.against_fd.add(name)
            if steps == STEPS and "omega" in checks:
                row.results["omega"] = (fd_omega(side, f0, seed + 3, steps=steps), tol["fd"])
                row.against_fd.add("omega")
        elif name in checks:
            _, ours = side.rollout(f0, steps, cotangent)
            jax_side = jax_reference(config, shape, f0, cotangent, steps, fields)
            reference, reference_omega = jax_side.grad, jax_side.grad_omega
            row.results[name] = (relative_error(ours, reference), tol["grad"])
            if steps == STEPS and "omega" in checks:
                if not config.is_fp64:
                    # d/d omega sums every cell's contribution over 5 steps, with cancellation (a
                    # random cotangent): FP32 rounding shows far more than in d/d f_0, in XLB-JAX as
                    # in ours. The reference is XLB-JAX in FP64 on the same FP32 inputs; XLB-JAX's
                    # own FP32 value is off it by 2.3e-6 to 3.4e-5 on the default rows (ours: 4.2e-6
                    # to 7.5e-5), hence the FP32 bound of 1e-4
                    reference_omega = jax_reference(config.with_precision("FP64FP64"), shape, f0, exact, steps, fields).grad_omega
                row.results["omega"] = (relative_error(side.omega_gradient, reference_omega), tol["omega"])
    if "bc_values" in checks:
        errors = []
        bc_tolerance = tol["grad"] if not config.is_fp64 else tol["fd"]
        fp64 = side if config.is_fp64 else None
        if aux_boundary_ids(side.stepper):
            fp64 = fp64 or GeneratedSide(config.with_precision("FP64FP64"), shape)
            errors.append(relative_error(aux_value_gradients(side, f0, cotangent, STEPS), aux_value_fd(fp64, f0, exact, STEPS)))
        from adjointgen.compiler.parameters import lifted_parameters

        if lifted_parameters(side.stepper):
            lifted = GeneratedSide(config, shape, boundary_parameters=True)
            # prescribed values XLB bakes into its kernel (boundary_parameters=True lifts them);
            # the lifted module's own state gradient must also still match XLB-JAX
            ours = boundary_value_gradients(lifted, f0, cotangent, STEPS)
            lifted64 = lifted if config.is_fp64 else GeneratedSide(config.with_precision("FP64FP64"), shape, boundary_parameters=True)
            errors.append(relative_error(ours, boundary_value_fd(lifted64, f0, exact, STEPS)))
            _, state_gradient = lifted.rollout(f0, 1, cotangent)
            _, jax_gradient, _ = jax_vjp(config, shape, f0, cotangent, 1)
            errors.append(relative_error(state_gradient, jax_gradient))
        if errors:
            row.results["bc_values"] = (max(errors), bc_tolerance)
    if fields:
        _field_checks(row, side, f0, cotangent, checks)
    if "fd" in checks and tol["fd"] is not None:
        row.results["fd"] = (max(fd_projection(side, f0, seed + 2), fd_omega(side, f0, seed + 3)), tol["fd"])
    return row


def verify_with_shape(config: Configuration, shape: tuple | None) -> Row:
    """:func:`verify_configuration` on ``shape`` where it has the configuration's dimension, else
    on the default grid (a worker process's unit of ``adjointgen verify``)."""
    return verify_configuration(config, shape if shape is not None and len(shape) == config.dim else None)


def format_table(rows: list[Row]) -> str:
    """A Markdown table, one row per configuration."""
    with_fields = any(row.config.has_design_fields for row in rows)
    columns = ["forward", "grad_1", f"grad_{STEPS}", "omega", "bc_values"] + ["field", "field_fd"] * with_fields + ["fd"]
    titles = ["configuration", "grid", "forward vs XLB-Warp", "d/d f_0 vs XLB-JAX, 1 step", f"d/d f_0 vs XLB-JAX, {STEPS} steps",
              f"d/d omega vs XLB-JAX, {STEPS} steps", f"d/d BC values vs FD (FP64), {STEPS} steps"]
    titles += [f"d/d field vs XLB-JAX, {STEPS} steps", f"d/d field vs FD (FP64), probes, 1 and {STEPS} steps"] * with_fields
    titles += ["FD projection (FP64)", "result"]
    table = []
    for row in rows:
        cells = [row.config.label, "x".join(map(str, row.shape))]
        for column in columns:
            if column in row.results:
                err, tol = row.results[column]
                cells.append(f"{err:.2e} (<= {tol:.2g})" + (" FD" if column in row.against_fd else ""))
            else:
                cells.append("-")
        cells.append("PASS" if row.passed else "FAIL")
        table.append(cells)
    widths = [max(len(titles[n]), *(len(r[n]) for r in table)) for n in range(len(titles))]
    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    text = "\n".join([line(titles), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in table])
    notes = sorted({f"{row.config.label}: {JAX_DIFFERS[(row.config.boundaries, row.config.precision)]}"
                    for row in rows if row.against_fd})
    if notes:
        text += "\n\nFD: checked against FP64 finite differences of the generated forward, because XLB's two backends differ:\n"
        text += "\n".join(f"- {note}" for note in notes)
    if with_fields:
        text += ("\n\nDesign-field rows (" + ", ".join(sorted(DESIGN_COLLISIONS)) + ", and the bouzidi mix's "
                 "BouzidiBounceBackBC): forward against XLB-JAX with the field (XLB's own Warp stepper has no "
                 "per-cell inputs).")
    skipped = sorted({row.config.label for row in rows if xlb_warp_fails(row.config)})
    if skipped:
        text += "\n\nNo forward parity for " + ", ".join(skipped) + ": XLB's own Warp stepper does not compile there."
    return text
