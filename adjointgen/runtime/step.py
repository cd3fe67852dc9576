"""Runtime: an XLB stepper's call signature, backed by the generated forward and adjoint kernels.

``differentiable(stepper)`` finds the generated module of the stepper's configuration (in
``generated/``, when its manifest's program identity is the stepper's), or generates one into a
cache directory on first use (with a log line); :mod:`adjointgen.runtime.modules` checks every
file before it is used. It never falls back to
Warp's automatic adjoint. The returned step launches the forward kernel off the tape and, inside
a ``wp.Tape``, records the adjoint kernel with ``Tape.record_func``; ``tape.backward()`` then turns
``f_0.grad`` and ``f_1.grad`` (the adjoints of the two arrays as the step left them) into the
adjoints of their contents before the step. A recorded step keeps a copy of the inputs its adjoint
reads, so XLB's own loop (``f_0, f_1 = step(f_0, f_1, ...); f_0, f_1 = f_1, f_0``) can be recorded
as it is, unlike with Warp's automatic tape, which sees the buffers as the last step left them.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import warp as wp

from adjointgen.compiler import parameters
from adjointgen.runtime import modules
from adjointgen.manifest import adjoint_kernel_name
from adjointgen.runtime.modules import GeneratedModule
from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError

def stepper_identity(stepper, boundary_parameters: bool = False) -> str:
    """The identity a generated module must carry to serve ``stepper`` (see pipeline.program_identity)."""
    from adjointgen.compiler.frontend import stepper_kernel
    from adjointgen.compiler.pipeline import process_functionals, program_identity

    lifts = parameters.lifted_parameters(stepper) if boundary_parameters else {}
    return program_identity(process_functionals(stepper_kernel(stepper), lifts=lifts))


def load_module(stepper, config: Configuration, boundary_parameters: bool = False) -> GeneratedModule:
    """The checked generated module for ``stepper`` (see :mod:`adjointgen.runtime.modules`)."""
    from adjointgen.compiler.pipeline import generate

    return modules.load_module(stepper, config, stepper_identity(stepper, boundary_parameters),
                               lambda: generate(stepper, config, boundary_parameters=boundary_parameters))


@wp.kernel(enable_backward=False)
def _add_field(source: wp.array4d(dtype=Any), target: wp.array4d(dtype=Any)):
    i, j, k = wp.tid()
    target[0, i, j, k] = target[0, i, j, k] + source[0, i, j, k]


@wp.kernel(enable_backward=False)
def _add_into(source: wp.array(dtype=Any), target: wp.array(dtype=Any), index: int):
    target[index] = target[index] + source[0]


def _warp_runtime():
    for holder in ("warp._src.context", "warp.context"):
        module = sys.modules.get(holder)
        runtime = getattr(module, "runtime", None) if module is not None else None
        if runtime is not None and hasattr(runtime, "tape"):
            return runtime
    return None


def _active_tape():
    runtime = _warp_runtime()
    return runtime.tape if runtime is not None else None


@contextlib.contextmanager
def paused_tape():
    """Work that must not be recorded (copies of arrays that require gradients would be)."""
    runtime = _warp_runtime()
    tape = runtime.tape if runtime is not None else None
    if runtime is not None:
        runtime.tape = None
    try:
        yield tape
    finally:
        if runtime is not None:
            runtime.tape = tape


class DifferentiableStep:
    """``step(f_0, f_1, bc_mask, missing_mask, omega, timestep) -> (f_0, f_1)``, like the XLB
    stepper it wraps (the second array returned holds the new state)."""

    def __init__(self, stepper, generated: GeneratedModule, config: Configuration, boundary_parameters: bool = False,
                 fields: dict | None = None):
        self.stepper = stepper
        self.module = generated.module  # the generated Python module (its kernels)
        self.manifest = generated.manifest  # what it declares: kernel variants, arrays read and written
        self.config = config
        self.q = stepper.velocity_set.q
        self.store_dtype = wp.float64 if config.precision.endswith("FP64") else wp.float32
        self.compute_dtype = wp.float64 if config.precision.startswith("FP64") else wp.float32
        self._scratch_arrays: dict = {}
        # threads per block of the adjoint kernel's launch: 128 holds more warps per SM than Warp's default
        # 256 when the registers allow 3 blocks of 256 but 7 of 128 (benchmarks/NOTES.md v13)
        self.block_dim = 128
        # the kernels without per-cell parameter adjoints, when no parameter gradient is asked for:
        # None = on CUDA devices only (they save GPU registers; on a CPU they only cost a compile)
        self.state_kernels: bool | None = None
        # prescribed boundary values that the generated kernels take as parameters:
        # name -> a Warp array (requires_grad) holding the value(s); tape.backward() fills .grad
        self._lifts = parameters.lifted_parameters(stepper) if boundary_parameters else {}
        self._lifted_names = parameters.scalar_names(self._lifts)
        initial = parameters.values(stepper, self._lifts)
        self._scalars = {}  # parameter name -> the kernel's scalar parameter per component
        self.parameters = {}
        for entry in sorted((e for es in self._lifts.values() for e in es), key=lambda e: e.name):
            self._scalars[entry.name] = entry.scalar_names()
            self.parameters[entry.name] = wp.array([initial[n] for n in entry.scalar_names()],
                                                   dtype=self.compute_dtype, requires_grad=True)
        # ---- design fields (adjointgen.xlb.fields): name -> Warp array (1, nx, ny, nz); with
        # requires_grad, tape.backward() fills .grad. Replace an entry to change the design.
        self.fields = dict(fields or {})
        declared, given = set(self.manifest.fields), set(self.fields)
        if declared != given:
            raise RuntimeArgumentError(_fields_mismatch(config, declared, given))

    def parameter_values(self) -> list:
        """The lifted parameters' current values, in kernel order (read back from the arrays)."""
        values = {}
        for name, array in self.parameters.items():
            values.update(zip(self._scalars[name], array.numpy()))
        return [self.compute_dtype(float(values[name])) for name in self._lifted_names]

    def __repr__(self):
        return f"DifferentiableStep({self.config.label}, module={self.module.__name__})"

    # ------------------------------------------------------------------ checks
    def check_arrays(self, f_0, f_1, bc_mask, missing_mask):
        named = {"f_0": f_0, "f_1": f_1, "bc_mask": bc_mask, "missing_mask": missing_mask}
        for name, array in named.items():
            if not isinstance(array, wp.array):
                raise RuntimeArgumentError(f"{name} must be a warp array, got {type(array).__name__}")
            if array.ndim != 4:
                raise RuntimeArgumentError(f"{name} must be 4-dimensional (population, x, y, z), got shape {array.shape}")
        expected = {"f_0": self.store_dtype, "f_1": self.store_dtype, "bc_mask": wp.uint8, "missing_mask": wp.bool}
        for name, dtype in expected.items():
            if named[name].dtype != dtype:
                raise RuntimeArgumentError(
                    f"{name} has dtype {wp.types.type_repr(named[name].dtype)}, but {self.config.label} needs {dtype.__name__}")
        for name, rows in (("f_0", self.q), ("f_1", self.q), ("bc_mask", 1), ("missing_mask", self.q)):
            if named[name].shape[0] != rows:
                raise RuntimeArgumentError(f"{name} must have {rows} row(s) along its first axis for {self.config.label}; "
                                           f"got shape {named[name].shape}")
        grids = {name: tuple(array.shape[1:]) for name, array in named.items()}
        if len(set(grids.values())) != 1:
            raise RuntimeArgumentError(self._grid_blame(grids))
        grid = grids["f_0"]
        if self.config.dim == 2 and grid[2] != 1:
            raise RuntimeArgumentError(f"a 2D lattice needs arrays of shape (q, nx, ny, 1); got {f_0.shape}")
        self._check_fields(grid, f_0.device)
        devices = {str(a.device) for a in named.values()}
        if len(devices) != 1:
            raise RuntimeArgumentError(f"all arrays must be on one device; got {sorted(devices)}")
        if f_0.ptr == f_1.ptr:
            raise RuntimeArgumentError("f_0 and f_1 must be different buffers: the step reads f_0 and writes f_1")

    def field_arrays(self) -> list:
        """The design fields' arrays in kernel order (after the scalar parameters)."""
        return [self.fields[name] for name in self.manifest.fields]

    def _check_fields(self, grid: tuple, device) -> None:
        for name in self.manifest.fields:
            array = self.fields[name]
            if not isinstance(array, wp.array) or array.shape != (1, *grid) or array.dtype != self.store_dtype:
                found = (f"{array.shape} {wp.types.type_repr(array.dtype)}" if isinstance(array, wp.array)
                         else type(array).__name__)
                raise RuntimeArgumentError(f"the design field {name!r} must be a Warp array of shape {(1, *grid)} and dtype "
                                           f"{self.store_dtype.__name__} (like bc_mask, in the store precision); got {found}")
            if str(array.device) != str(device):
                raise RuntimeArgumentError(f"the design field {name!r} is on {array.device}, the state on {device}")

    def _grid_blame(self, grids: dict) -> str:
        """Which arrays come from another grid: those that differ from the stepper's own grid
        (else from the grid most arrays share)."""
        shape = tuple(self.stepper.grid.shape)
        reference = shape + (1,) * (3 - len(shape))
        if reference not in grids.values():
            reference = max(set(grids.values()), key=list(grids.values()).count)
        odd = [name for name, grid in grids.items() if grid != reference]
        listed = ", ".join(f"{name} {grid}" for name, grid in grids.items())
        return (f"the arrays are on different grids ({listed}): {' and '.join(odd)} do(es) not match the grid {reference} "
                "of the others and of the stepper; pass arrays from the same stepper.prepare_fields() or grid")

    # ------------------------------------------------------------------ launches
    def kernel_omega(self, omega):
        """omega as the kernels take it: a float, or a one-element Warp array (whose gradient
        ``tape.backward()`` then fills); the array's value is read back once per call."""
        if isinstance(omega, wp.array):
            if omega.shape != (1,) or omega.dtype != self.compute_dtype:
                raise RuntimeArgumentError(
                    f"omega as an array must have shape (1,) and dtype {self.compute_dtype.__name__}; "
                    f"got {omega.shape} {wp.types.type_repr(omega.dtype)}")
            return self.compute_dtype(float(omega.numpy()[0]))
        return self.compute_dtype(omega)

    def _scratch(self, name, shape, device, dtype=None):
        """A reusable uninitialised array (the kernels overwrite every element they later read)."""
        key = (name, tuple(shape), str(device))
        array = self._scratch_arrays.get(key)
        if array is None:
            array = self._scratch_arrays[key] = wp.empty(shape, dtype=dtype or self.compute_dtype, device=device)
        return array

    def forward(self, f_0, f_1, bc_mask, missing_mask, omega, timestep=0, lifted_values=None, check: bool = True):
        """Launch the generated forward kernel (never recorded on a tape). A caller that runs many
        steps on the same arrays (a rollout) checks them once and passes ``check=False`` and the
        ``lifted_values`` it read once (:meth:`parameter_values`), so a step costs one launch."""
        if check:
            self.check_arrays(f_0, f_1, bc_mask, missing_mask)
        lifted_values = self.parameter_values() if lifted_values is None else lifted_values
        wp.launch(self.module.forward, dim=f_0.shape[1:],
                  inputs=[f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega), int(timestep), *lifted_values,
                          *self.field_arrays()],
                  device=f_0.device, record_tape=False)

    def adjoint(self, f_0, f_1, bc_mask, missing_mask, omega, timestep, adj_f_0, adj_f_1, adj_omega=None,
                lifted_values=None, adj_parameters=None, fresh: bool = False, check: bool = True, adj_fields=None):
        """Launch the generated adjoint, in place on the gradient arrays. ``f_0`` and ``f_1`` hold the
        step's inputs; on entry ``adj_f_0`` and ``adj_f_1`` hold the adjoints of the two arrays as the
        step left them (``f_0`` is changed only where a boundary condition recovers its data into
        it), on return the adjoints of their contents before the step. With ``adj_omega`` (a
        one-element array) also ``adj_omega += d<adjoints, outputs>/d omega``, summed over the
        grid, and likewise into ``adj_parameters`` ({name: gradient array}) for lifted values.

        ``fresh=True`` (only where the manifest lists ``adjoint_fresh``) runs ``adjoint_fresh``: the caller
        guarantees that ``adj_f_0`` is zero and that no cell is kept (bc_mask 255); ``adj_f_0`` is
        then written instead of added to, and ``adj_f_1`` is left as it was instead of cleared.

        With no parameter gradient asked for (no ``adj_omega``, no ``adj_parameters``) the module's
        variants without per-cell parameter adjoints run (``adjoint_state``,
        ``adjoint_fresh_state``, where the manifest lists them, on CUDA devices unless
        ``self.state_kernels`` says otherwise): the same state gradients, from kernels that need
        fewer registers. ``check=False``: the caller has checked the gradient arrays (a rollout, once).
        ``adj_fields`` ({field name: array shaped like the field}): the design fields' gradients,
        always added to (also with ``fresh``); fields not named get a scratch gradient."""
        for name, grad, of in (("adj_f_0", adj_f_0, f_0), ("adj_f_1", adj_f_1, f_1)) if check else ():
            if not isinstance(grad, wp.array) or grad.shape != of.shape or grad.dtype != of.dtype:
                raise RuntimeArgumentError(f"{name} must be a warp array shaped and typed like the state")
        lifted_values = self.parameter_values() if lifted_values is None else lifted_values
        state = [f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega), int(timestep), *lifted_values,
                 *self.field_arrays()]
        grads = {"f_0": adj_f_0, "f_1": adj_f_1}
        field_grads = self._field_gradients(adj_fields or {}, fresh)
        inputs = state + [adj_f_0, adj_f_1] + [field_grads[name] for name in self.manifest.fields]
        in_place = self.manifest.in_place
        if in_place:
            # elements the step overwrote in place: their gradients move to seed arrays first
            seeds = [self._scratch(f"seed_{name}", f_0.shape, f_0.device, f_0.dtype) for name in in_place]
            wp.launch(self.module.adjoint_prepare, dim=f_0.shape[1:], inputs=state + [grads[n] for n in in_place] + seeds,
                      device=f_0.device, record_tape=False)
            inputs += seeds
        targets = [("omega", adj_omega, 0)] if adj_omega is not None else []
        for name, grad in (adj_parameters or {}).items():
            targets += [(scalar, grad, c) for c, scalar in enumerate(self._scalars[name])]
        # no parameter gradient asked for: the kernel variant without per-cell parameter adjoints
        # (fewer registers: it need not keep what d/d omega reads)
        wanted = f_0.device.is_cuda if self.state_kernels is None else self.state_kernels
        state_only = wanted and not targets and self.manifest.has(adjoint_kernel_name(fresh, state_only=True))
        # scratch arrays the adjoint kernel writes completely (every cell, kept cells included)
        # (every variant takes them: one body; the state-only variants leave them unwritten)
        cells = {name: self._scratch(name, f_0.shape[1:], f_0.device) for name in self.manifest.parameters}
        inputs += list(cells.values())
        slots = None
        if self.manifest.slot_count:
            # reads that are not scattered directly leave their adjoint in a slot of the reader;
            # adjoint_gather adds them to the owners' gradients (no atomics, no races)
            slots = self._scratch("slots", (self.manifest.slot_count, *f_0.shape[1:]), f_0.device)
            inputs.append(slots)
        try:
            kernel = getattr(self.module, self.manifest.adjoint_kernel(fresh, state_only))
        except KeyError as exc:
            raise RuntimeArgumentError(exc.args[0]) from None
        wp.launch(kernel, dim=f_0.shape[1:], inputs=inputs, device=f_0.device, record_tape=False, block_dim=self.block_dim)
        if slots is not None:
            wp.launch(self.module.adjoint_gather, dim=f_0.shape[1:],
                      inputs=[f_0, slots, bc_mask, *(grads[name] for name in self.manifest.gather_into)],
                      device=f_0.device, record_tape=False)
        for name, target in (adj_fields or {}).items():  # fresh wrote into scratch: add it to the caller's
            if field_grads[name] is not target:
                wp.launch(_add_field, dim=f_0.shape[1:], inputs=[field_grads[name], target], device=f_0.device, record_tape=False)
        for scalar, grad, component in targets:
            total = wp.zeros(1, dtype=self.compute_dtype, device=f_0.device)
            wp.utils.array_sum(cells[scalar], out=total)
            wp.launch(_add_into, dim=1, inputs=[total, grad, component], device=f_0.device, record_tape=False)

    def _field_gradients(self, adj_fields: dict, fresh: bool) -> dict:
        """{field: the array the adjoint kernel writes its gradient into}: the caller's (added to),
        or a scratch array (fresh variants write, so a caller's gradient is added afterwards)."""
        unknown = set(adj_fields) - set(self.manifest.fields)
        if unknown:
            raise RuntimeArgumentError(f"adj_fields names {', '.join(sorted(unknown))}, which {self.config.label} does not read")
        out = {}
        for name in self.manifest.fields:
            field_array = self.fields[name]
            given = adj_fields.get(name)
            if given is not None and (given.shape != field_array.shape or given.dtype != field_array.dtype):
                raise RuntimeArgumentError(f"adj_fields[{name!r}] must be shaped and typed like the field")
            use_scratch = given is None or fresh
            out[name] = self._scratch(f"adj_{name}", field_array.shape, field_array.device, field_array.dtype) if use_scratch else given
        return out

    def __call__(self, f_0, f_1, bc_mask, missing_mask, omega, timestep=0):
        tape = _active_tape()
        # A recorded step keeps a copy of the inputs its adjoint reads: f_0 always (so XLB's
        # ping-pong loop, which overwrites f_0 one step later, differentiates correctly), and f_1
        # when a boundary condition reads data from it (ZouHe's and Regularized's prescribed
        # values); the forward itself may overwrite both (manifest.overwritten_inputs).
        saved = {}
        if tape is not None:
            self.check_arrays(f_0, f_1, bc_mask, missing_mask)
            read_from_f_1 = self.manifest.reads_f_1
            with paused_tape():
                saved = {"f_0": wp.clone(f_0, requires_grad=False)}
                if read_from_f_1:
                    saved["f_1"] = wp.clone(f_1, requires_grad=False)
        self.forward(f_0, f_1, bc_mask, missing_mask, omega, timestep)
        if tape is not None:
            for name, array in (("f_0", f_0), ("f_1", f_1)):
                if array.grad is None:
                    raise RuntimeArgumentError(
                        f"{name} has no gradient array; create it with requires_grad=True "
                        f"(or set {name}.requires_grad = True) before recording the step on a wp.Tape")
            omega_value, step_value, lifted_values = self.kernel_omega(omega), timestep, self.parameter_values()
            adj_omega = omega.grad if isinstance(omega, wp.array) and omega.requires_grad else None
            adj_parameters = {name: array.grad for name, array in self.parameters.items() if array.requires_grad}
            adj_fields = {name: array.grad for name, array in self.fields.items() if array.requires_grad}

            def backward():
                self.adjoint(saved.get("f_0", f_0), saved.get("f_1", f_1), bc_mask, missing_mask, omega_value, step_value,
                             f_0.grad, f_1.grad, adj_omega, lifted_values, adj_parameters, adj_fields=adj_fields)

            recorded = [f_0, f_1] + ([omega] if adj_omega is not None else [])
            recorded += [array for array in self.parameters.values() if array.requires_grad]
            recorded += [array for array in self.fields.values() if array.requires_grad]
            tape.record_func(backward=backward, arrays=recorded)
        return f_0, f_1

    def prescribed_value_gradient(self, bc, bc_mask, f_1_grad):
        """For a ZouHe or Regularized condition ``bc`` of the stepper: ``d loss / d`` its prescribed
        value (normal velocity or density), per cell, as a NumPy array over the condition's cells
        (in ``np.nonzero(bc_mask[0] == bc.id)`` order), from the gradient of the ``f_1`` that
        held the prescribed values when the recording started (XLB keeps them in ``f_1[0]`` at
        the condition's cells and carries them from step to step). Sum it for a constant value."""
        if not getattr(bc, "needs_aux_recovery", False) or bc not in self.stepper.boundary_conditions:
            raise RuntimeArgumentError(
                f"{type(bc).__name__} is not one of this stepper's conditions that keep prescribed values in f_1 "
                "(ZouHeBC, RegularizedBC); EquilibriumBC's values are step.parameters with differentiable(..., boundary_parameters=True)")
        cells = bc_mask.numpy()[0] == bc.id
        return f_1_grad.numpy()[0][cells]


def _fields_mismatch(config: Configuration, declared: set, given: set) -> str:
    if not declared:
        return f"{config.label} reads no design field, but fields= names {', '.join(sorted(given))}"
    missing, extra = sorted(declared - given), sorted(given - declared)
    text = f"{config.label} reads the design field(s) {', '.join(sorted(declared))}: pass them as " \
           f"adjointgen.differentiable(stepper, fields={{{', '.join(repr(n) + ': array' for n in sorted(declared))}}})"
    return text + (f"; missing: {', '.join(missing)}" if missing else "") + (f"; not read: {', '.join(extra)}" if extra else "")


def differentiable(stepper, boundary_parameters: bool = False, fields: dict | None = None) -> DifferentiableStep:
    """``boundary_parameters=True`` makes the prescribed values of boundary conditions (today:
    EquilibriumBC's rho and u) kernel parameters with gradients, held in ``step.parameters``.
    Off by default: the kernels then fold those values as constants, which is faster (the lid
    of a 192^3 cavity: adjoint 4.7x instead of 6.1x XLB's forward on an H100). ``fields``: the
    design fields the stepper's operators read ({name: Warp array (1, nx, ny, nz), store dtype})."""
    from adjointgen.xlb.support import configuration_of

    config = configuration_of(stepper)
    return DifferentiableStep(stepper, load_module(stepper, config, boundary_parameters), config, boundary_parameters,
                              fields)
