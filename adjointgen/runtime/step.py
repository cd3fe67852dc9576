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
Where the module has ``forward_save`` and the mask no kept cell, the forward itself writes that
copy while it reads ``f_0`` (``save_in_forward``); else ``wp.clone`` before the forward. Where
the module has residuals and no parameter gradient is asked for, a recorded step keeps those
instead, a few values per cell (``tape_residuals``; :mod:`adjointgen.compiler.residuals`).
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from typing import Any

import numpy as np
import warp as wp

from adjointgen.compiler import parameters
from adjointgen.runtime import modules
from adjointgen.manifest import adjoint_kernel_name, forward_kernel_name
from adjointgen.runtime.launches import Launches, PackedAdjoint
from adjointgen.runtime.modules import GeneratedModule
from adjointgen.runtime.plan import has_kept_cells
from adjointgen.config import Configuration
from adjointgen.errors import RuntimeArgumentError

def _identity(stepper, boundary_parameters: bool):
    """``(identity, processed)``: see :func:`adjointgen.runtime.identities.identity_of`."""
    from adjointgen.runtime.identities import identity_of

    return identity_of(stepper, parameters.lifted_parameters(stepper) if boundary_parameters else {})


def stepper_identity(stepper, boundary_parameters: bool = False) -> str:
    """The identity a generated module must carry to serve ``stepper`` (see pipeline.program_identity)."""
    return _identity(stepper, boundary_parameters)[0]


def load_module(stepper, config: Configuration, boundary_parameters: bool = False) -> GeneratedModule:
    """The checked generated module for ``stepper`` (see :mod:`adjointgen.runtime.modules`). The
    identity comes from a kept dependency record when one replays (:mod:`adjointgen.runtime.identities`),
    else from the source passes, whose result then also feeds the rest of the pipeline if the
    module must be generated."""
    from adjointgen.compiler.pipeline import generate
    from adjointgen.runtime.identities import CachedRuns

    identity, processed = _identity(stepper, boundary_parameters)
    return modules.load_module(stepper, config, identity, lambda: generate(
        stepper, config, boundary_parameters=boundary_parameters, passes=processed, store=CachedRuns()))


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


class SavedBuffers:
    """Arrays that held copies of recorded steps' inputs, kept for the next recording.

    Every step recorded on a tape keeps a copy of its input (a state-sized array). Allocating one
    per step from the device's memory pool cost more than the forward step itself on an H200
    (D3Q19 FP32 192^3: 1.1 ms per recorded step against 0.28 ms for XLB's forward), so a copy
    whose record the tape has released (``tape.reset()``, or the tape dropped) comes back here
    and serves the next recorded step of the same shape. The arrays stay allocated while the
    step lives: ``step.saved_buffers.clear()`` gives them back."""

    def __init__(self):
        self._free: dict = {}  # (shape, dtype, device) -> [arrays]

    @staticmethod
    def _key(array) -> tuple:
        return tuple(array.shape), array.dtype, str(array.device)

    def take(self, like) -> wp.array:
        """An array shaped, typed and placed like ``like`` (contents undefined)."""
        return self.take_shaped(like.shape, like.dtype, like.device)

    def take_shaped(self, shape, dtype, device) -> wp.array:
        """An array of that shape, dtype and device (contents undefined)."""
        free = self._free.get((tuple(shape), dtype, str(device)))
        if free:
            return free.pop()
        return wp.empty(shape, dtype=dtype, device=device)

    def give(self, arrays) -> None:
        for array in arrays:
            self._free.setdefault(self._key(array), []).append(array)

    def clear(self) -> None:
        self._free.clear()

    def __len__(self) -> int:
        return sum(len(arrays) for arrays in self._free.values())


class DifferentiableStep:
    """``step(f_0, f_1, bc_mask, missing_mask, omega, timestep) -> (f_0, f_1)``, like the XLB
    stepper it wraps (the second array returned holds the new state)."""

    # steps recorded next to each other on a tape with fresh adjoints where that is exact (see
    # _TapeRecord); False: every recorded step runs the accumulating adjoint
    tape_fusion = True
    # a recorded step copies its input with forward_save (one extra write, no extra read) where
    # that copy is exact (see saves_in_forward); False: wp.clone, then forward
    save_in_forward = True
    # a recorded step keeps forward_residuals' values (manifest.residual_count per cell: 4 for
    # D3Q19 BGK) instead of a copy of its input, where the module has them and no parameter
    # gradient is asked for (see _keeps_residuals): None = on CUDA devices only (like
    # state_kernels: on a CPU they cost compiles), True = on every device, False = never
    tape_residuals: bool | None = None

    def __init__(self, stepper, generated: GeneratedModule, config: Configuration, boundary_parameters: bool = False,
                 fields: dict | None = None):
        self.stepper = stepper
        self.generated = generated  # the loaded module; its kernels through self.kernel(name)
        self.manifest = generated.manifest  # what it declares: kernel variants, arrays read and written
        self._kept_cells = weakref.WeakKeyDictionary()  # bc_mask -> whether a cell is kept (read once)
        self._listed = weakref.WeakKeyDictionary()  # bc_mask -> the cells of the listed ids (read once)
        self._gathered = weakref.WeakKeyDictionary()  # bc_mask -> the cells with slots to gather (read once)
        self.config = config
        self.q = stepper.velocity_set.q
        self.store_dtype = wp.float64 if config.precision.endswith("FP64") else wp.float32
        self.compute_dtype = wp.float64 if config.precision.startswith("FP64") else wp.float32
        self._scratch_arrays: dict = {}
        # copies of recorded steps' inputs, reused once their tape lets go of them (see SavedBuffers)
        self.saved_buffers = SavedBuffers()
        # threads per block of the adjoint kernel's launch: 128 holds more warps per SM than Warp's default
        # 256 when the registers allow 3 blocks of 256 but 7 of 128 (benchmarks/NOTES.md v13)
        self.block_dim = 128
        # the kernels without per-cell parameter adjoints, when no parameter gradient is asked for:
        # None = on CUDA devices only (they save GPU registers; on a CPU they only cost a compile)
        self.state_kernels: bool | None = None
        # split steps (Manifest.listed_ids: ZouHe, Regularized, extrapolation): the adjoint runs in two
        # launches, the listed ids' cells from a list and the rest without their code (fewer
        # registers); None = on CUDA devices only (on a CPU it saves nothing and costs compiles)
        self.split_listed: bool | None = None
        # split steps without a list (the JAX and PyTorch faces; split_listed False): the rest part and,
        # per listed id, a launch over the grid whose threads return at the other cells, instead of the
        # whole-grid kernel (which spills: 300-500 bytes in the obstacle channel, NOTES v56); None = on
        # CUDA devices only (on a CPU it saves nothing)
        self.split_grid: bool | None = None
        # adjoint_gather over a list of the cells that have slots to gather (where the module has
        # adjoint_gather_listed), not over every cell; None = on CUDA devices only (a launch over
        # every cell costs there what a list saves; on a CPU it only costs compiles)
        self.gather_listed: bool | None = None
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
        # ---- design fields (adjointgen.xlb.fields): name -> Warp array (components, nx, ny, nz); with
        # requires_grad, tape.backward() fills .grad. Replace an entry to change the design.
        self.fields = dict(fields or {})
        declared, given = set(self.manifest.fields), set(self.fields)
        if declared != given:
            raise RuntimeArgumentError(_fields_mismatch(config, declared, given))

    @property
    def module(self):
        """The generated Python module."""
        return self.generated.module

    def kernel(self, name: str):
        """The generated kernel ``name`` (one the manifest lists: checked when the module was loaded)."""
        return self.generated.kernel(name)

    def parameter_values(self) -> list:
        """The lifted parameters' current values, in kernel order (read back from the arrays)."""
        values = {}
        for name, array in self.parameters.items():
            values.update(zip(self._scalars[name], array.numpy()))
        return [self.compute_dtype(float(values[name])) for name in self._lifted_names]

    def __repr__(self):
        return f"DifferentiableStep({self.config.label}, module={self.module.__name__})"

    # ------------------------------------------------------------------ checks
    def check_arrays(self, f_0, f_1, bc_mask, missing_mask, field_values=None):
        """Refuse arrays of the wrong kind, dtype, shape or device with a message; ``field_values``:
        the design fields' arrays in manifest order (default: ``self.fields``)."""
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
        self._check_fields(grid, f_0.device, self.field_arrays() if field_values is None else list(field_values))
        devices = {str(a.device) for a in named.values()}
        if len(devices) != 1:
            raise RuntimeArgumentError(f"all arrays must be on one device; got {sorted(devices)}")
        if f_0.ptr == f_1.ptr:
            raise RuntimeArgumentError("f_0 and f_1 must be different buffers: the step reads f_0 and writes f_1")

    def field_arrays(self) -> list:
        """The design fields' arrays in kernel order (after the scalar parameters)."""
        return [self.fields[name] for name in self.manifest.fields]

    def _check_fields(self, grid: tuple, device, values: list) -> None:
        for name, array in zip(self.manifest.fields, values):
            shape = self.manifest.field_shape(name, grid)
            if not isinstance(array, wp.array) or array.shape != shape or array.dtype != self.store_dtype:
                found = (f"{array.shape} {wp.types.type_repr(array.dtype)}" if isinstance(array, wp.array)
                         else type(array).__name__)
                raise RuntimeArgumentError(f"the design field {name!r} must be a Warp array of shape {shape} and dtype "
                                           f"{self.store_dtype.__name__} (the store precision); got {found}")
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
    def kernel_omega(self, omega, device_omega: bool = False):
        """omega as the kernels take it: a float, or a one-element Warp array (whose gradient
        ``tape.backward()`` then fills); the array's value is read back once per call. With
        ``device_omega`` the array itself, for the module's ``_device_omega`` variants, which read
        it on the device (no read-back; :attr:`Manifest.device_omega`)."""
        if isinstance(omega, wp.array):
            if omega.shape != (1,) or omega.dtype != self.compute_dtype:
                raise RuntimeArgumentError(
                    f"omega as an array must have shape (1,) and dtype {self.compute_dtype.__name__}; "
                    f"got {omega.shape} {wp.types.type_repr(omega.dtype)}")
            if device_omega:
                return omega
            return self.compute_dtype(float(omega.numpy()[0]))
        if device_omega:
            raise RuntimeArgumentError(f"device_omega=True needs omega as a one-element Warp array; got {type(omega).__name__}")
        return self.compute_dtype(omega)

    def _device_omega_variants(self, device_omega: bool) -> bool:
        """``device_omega``, refused with a message where the module has no such variants."""
        if device_omega and not self.manifest.device_omega:
            raise RuntimeArgumentError(f"{self.config.label}'s module has no device_omega variants (its adjoint_prepare "
                                       "reads omega): pass omega as a number")
        return device_omega

    def _scratch(self, name, shape, device, dtype=None):
        """A reusable uninitialised array (the kernels overwrite every element they later read)."""
        key = (name, tuple(shape), str(device))
        array = self._scratch_arrays.get(key)
        if array is None:
            array = self._scratch_arrays[key] = wp.empty(shape, dtype=dtype or self.compute_dtype, device=device)
        return array

    def forward(self, f_0, f_1, bc_mask, missing_mask, omega, timestep=0, lifted_values=None, check: bool = True,
                field_values=None, device_omega: bool = False, listed=None):
        """Launch the generated forward kernel (never recorded on a tape). A caller that runs many
        steps on the same arrays (a rollout) checks them once and passes ``check=False`` and the
        ``lifted_values`` it read once (:meth:`parameter_values`), so a step costs one launch.
        ``field_values``: the design fields' arrays in manifest order (default: ``self.fields``).
        ``device_omega``: omega is a one-element array read on the device (see :meth:`kernel_omega`).
        ``listed``: for a split step, its listed cells as rows
        ``i, j, k`` (an int32 Warp array) given by the caller instead of read back from the mask
        (:meth:`listed_cells`); rows at kept cells are no-ops (a caller may pad a list with them)."""
        fields = self.field_arrays() if field_values is None else list(field_values)
        if check:
            self.check_arrays(f_0, f_1, bc_mask, missing_mask, fields)
        lifted_values = self.parameter_values() if lifted_values is None else lifted_values
        device_omega = self._device_omega_variants(device_omega)
        listed = self._list_for(bc_mask, listed)
        inputs = self._forward_inputs(f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega, device_omega), timestep,
                                      lifted_values, fields, listed=listed)
        for kernel, dim in self._forward_parts(listed, f_0.shape[1:], f_0.device, device_omega):
            wp.launch(kernel, dim=dim, inputs=inputs, device=f_0.device, record_tape=False)

    def _forward_parts(self, listed, grid: tuple, device, device_omega: bool = False) -> list:
        """(kernel, launch dimensions) of the forward's parts (:meth:`_parts`)."""
        return [(self.kernel(forward_kernel_name(False, part, device_omega)), dim)
                for part, dim in self._parts(listed, grid, device, adjoint=False)]

    def _parts(self, listed, grid: tuple, device, adjoint: bool) -> list:
        """(part, launch dimensions) of a step's forward or adjoint: the whole grid in one launch;
        for a split step with a list of its listed cells (``listed``, :meth:`_list_for`) the rest
        part over the grid and the listed cells over the list (the forward in one launch, the
        adjoint in one per listed id); without a list, where :attr:`split_grid` allows it, the
        listed cells' launches over the grid. The parts run disjoint cells: the same stores as one
        launch, and every gradient element keeps one writer."""
        ids = self.manifest.listed_ids
        if listed is not None:
            count = listed.shape[0]
            return [("rest", grid)] + ([(f"listed_{k}", count) for k in ids] if adjoint else [("listed", count)])
        wanted = device.is_cuda if self.split_grid is None else self.split_grid
        if ids and wanted:
            return [("rest", grid)] + ([(f"grid_{k}", grid) for k in ids] if adjoint else [("grid", grid)])
        return [("", grid)]

    def _forward_inputs(self, f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values, fields=None,
                        saved=None, residuals=None, listed=None) -> list:
        """The arguments of every forward variant (one parameter list): ``saved`` is forward_save's
        copy (f_0 stands in for the others, which leave it alone), ``residuals`` forward_residuals'
        array (a stand-in for the others); ``fields``: default ``self.fields`` as it is now."""
        fields = self.field_arrays() if fields is None else list(fields)
        return [f_0, f_1, bc_mask, missing_mask, omega_value, int(timestep), *lifted_values, *fields,
                f_0 if saved is None else saved, *self._cells_argument(bc_mask, listed),
                *self._residual_argument(residuals, f_0.device)]

    def _residual_argument(self, residuals, device) -> list:
        """The kernels' last argument where the module has residuals: ``residuals``, or a stand-in
        that the variants other than forward_residuals and the _residuals adjoints never touch."""
        if not self.manifest.residual_count:
            return []
        return [residuals if residuals is not None else self._scratch("no_residuals", (1, 1, 1, 1), device)]

    def _cells_argument(self, bc_mask, listed=None) -> list:
        """A split step's kernels' last argument: the listed cells (``listed``, else those of
        ``bc_mask``; or a stand-in nothing reads)."""
        if not self.manifest.listed_ids:
            return []
        listed = self._list_for(bc_mask, listed)
        return [listed if listed is not None else self._scratch("no_cells", (1, 3), bc_mask.device, wp.int32)]

    def _list_for(self, bc_mask, listed):
        """The list a split step runs its listed part over: the caller's ``listed`` (refused where
        the step is not split), else :meth:`listed_cells`."""
        if listed is None:
            return self.listed_cells(bc_mask)
        if not self.manifest.listed_ids:
            raise RuntimeArgumentError(f"listed=: {self.config.label} is not split (no listed boundary ids)")
        return listed

    def adjoint(self, f_0, f_1, bc_mask, missing_mask, omega, timestep, adj_f_0, adj_f_1, adj_omega=None,
                lifted_values=None, adj_parameters=None, fresh: bool = False, check: bool = True, adj_fields=None,
                field_values=None, carry=None, device_omega: bool = False, kept_cells: bool | None = None,
                residuals=None, listed=None):
        """Launch the generated adjoint, in place on the gradient arrays. ``f_0`` and ``f_1`` hold the
        step's inputs; on entry ``adj_f_0`` and ``adj_f_1`` hold the adjoints of the two arrays as the
        step left them (``f_0`` is changed only where a boundary condition recovers its data into
        it), on return the adjoints of their contents before the step. With ``adj_omega`` (a
        one-element array) also ``adj_omega += d<adjoints, outputs>/d omega``, summed over the
        grid, and likewise into ``adj_parameters`` ({name: gradient array}) for lifted values.

        ``fresh=True`` (only where the manifest lists ``adjoint_fresh``) runs ``adjoint_fresh``:
        ``adj_f_0`` is then written instead of added to, and ``adj_f_1`` is left as it was instead of
        cleared. Without ``carry`` the caller guarantees that ``adj_f_0`` is zero, that no cell is
        kept (bc_mask 255) and that the step updates nothing in place. With ``carry`` (an array
        like the state; needed where the step updates ``f_0`` in place or cells are kept) the
        adjoint of ``f_0`` as the step left it is read from ``carry`` instead of ``adj_f_0``, and
        must be zero except at the elements the step overwrites in place and at kept cells; on
        return ``carry`` holds the adjoint of the step's input ``f_1``, likewise zero elsewhere (a
        rollout passes it from step to step; it starts as zeros).

        With no parameter gradient asked for (no ``adj_omega``, no ``adj_parameters``) the module's
        variants without per-cell parameter adjoints run (``adjoint_state``,
        ``adjoint_fresh_state``, where the manifest lists them, on CUDA devices unless
        ``self.state_kernels`` says otherwise): the same state gradients, from kernels that need
        fewer registers. ``check=False``: the caller has checked the gradient arrays (a rollout, once).
        ``adj_fields`` ({field name: array shaped like the field}): the design fields' gradients,
        always added to (also with ``fresh``); fields not named get a scratch gradient.
        ``device_omega``: as in :meth:`forward` (whole grid: ``adjoint_device_omega``,
        ``adjoint_fresh_device_omega``). ``kept_cells`` (with ``fresh`` and ``carry``): whether the
        mask may have kept cells, so that adjoint_kept runs; None reads the mask (once per mask
        object), True is always right where the module has adjoint_kept. ``residuals``: what
        ``forward_residuals`` stored for this step (:meth:`forward_residuals`); the state-only
        ``_residuals`` variant then runs from them and never reads ``f_0`` or ``f_1`` (which give
        only the grid), and no parameter gradient can be asked for. ``listed``: as in :meth:`forward`."""
        for name, grad, of in (("adj_f_0", adj_f_0, f_0), ("adj_f_1", adj_f_1, f_1)) if check else ():
            check_like_state(name, grad, of)
        if not (fresh and carry is not None):
            kept_cells = False
        elif kept_cells is None:
            kept_cells = self._has_kept_cells(bc_mask)
        self.adjoint_launches(f_0, f_1, bc_mask, missing_mask, omega, timestep, adj_f_0, adj_f_1, adj_omega, lifted_values,
                              adj_parameters, fresh, adj_fields, field_values, carry, kept_cells, device_omega, residuals,
                              listed).run()

    def forward_launch(self, f_0, f_1, bc_mask, missing_mask, omega, timestep=0, lifted_values=None):
        """The forward launches, packed (a :class:`~adjointgen.runtime.launches.Launches`: ``.launch()``
        runs them; parameter 0 is f_0, 1 f_1, 5 the timestep), for callers that run it many times
        (:mod:`adjointgen.runtime.launches`)."""
        lifted_values = self.parameter_values() if lifted_values is None else lifted_values
        inputs = self._forward_inputs(f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega), timestep, lifted_values)
        return Launches([wp.launch(kernel, dim=dim, record_cmd=True, device=f_0.device, record_tape=False, inputs=inputs)
                         for kernel, dim in self._forward_parts(self.listed_cells(bc_mask), f_0.shape[1:], f_0.device)])

    def forward_save_launch(self, f_0, f_1, bc_mask, missing_mask, omega, lifted_values, saved):
        """``forward_save`` packed (a ``warp.Launch``; parameters 0 f_0, 1 f_1, 5 the timestep,
        ``saved_f_0`` the copy): the forward that also copies its input ``f_0`` into ``saved``,
        exact where :meth:`saves_in_forward` says so (the caller checks)."""
        return wp.launch(self.kernel(forward_kernel_name(save=True)), dim=f_0.shape[1:], device=f_0.device, record_tape=False,
                         record_cmd=True, inputs=self._forward_inputs(f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega),
                                                                      0, lifted_values, saved=saved))

    def adjoint_launches(self, f_0, f_1, bc_mask, missing_mask, omega, timestep, adj_f_0, adj_f_1, adj_omega=None,
                         lifted_values=None, adj_parameters=None, fresh: bool = False, adj_fields=None,
                         field_values=None, carry=None, kept_cells: bool = False, device_omega: bool = False,
                         residuals=None, listed=None) -> PackedAdjoint:
        """The launches of :meth:`adjoint` (same arguments), packed: ``.run()`` runs them; ``.set(f_0=...,
        f_1=..., timestep=..., adj_f_0=..., adj_f_1=...)`` changes the step between runs. ``field_values``:
        the design fields' arrays the step ran with (default: ``self.fields`` as it is now).
        ``kept_cells`` (with ``fresh`` and ``carry``): the mask has kept cells, so adjoint_kept runs
        after the adjoint (the caller knows; :meth:`adjoint` reads the mask)."""
        lifted_values = self.parameter_values() if lifted_values is None else lifted_values
        fields = self.field_arrays() if field_values is None else list(field_values)
        device_omega = self._device_omega_variants(device_omega)
        state = [f_0, f_1, bc_mask, missing_mask, self.kernel_omega(omega, device_omega), int(timestep), *lifted_values, *fields]
        # adjoint_prepare takes omega as a number; with device_omega it does not read it (the manifest's promise)
        prepare_state = state[:4] + [self.compute_dtype(0.0)] + state[5:] if device_omega else state
        roles = {"f_0": 0, "f_1": 1, "timestep": 5}  # parameter indices of the state's arrays in every kernel but the gather
        grads = {"f_0": adj_f_0, "f_1": adj_f_1}
        field_grads = self._field_gradients(adj_fields or {}, fields)
        inputs = state + [adj_f_0, adj_f_1] + [field_grads[name] for name in self.manifest.fields]
        device, dim = f_0.device, f_0.shape[1:]
        launches = []
        in_place = self.manifest.in_place
        if fresh and (in_place or kept_cells) and carry is None:
            raise RuntimeArgumentError(f"a fresh adjoint of {self.config.label} on this mask needs carry= (see adjoint)")
        if fresh and in_place:
            inputs.append(carry)  # the seeds of the overwritten elements, and where their f_1 adjoints go
        elif in_place:
            # elements the step overwrote in place: their gradients move to seed arrays first
            seeds = [self._scratch(f"seed_{name}", f_0.shape, f_0.device, f_0.dtype) for name in in_place]
            prepare = wp.launch(self.kernel("adjoint_prepare"), dim=dim, inputs=prepare_state + [grads[n] for n in in_place] + seeds,
                                device=device, record_tape=False, record_cmd=True)
            launches.append((prepare, {**roles, **{f"adj_{n}": len(state) + i for i, n in enumerate(in_place)}}))
            inputs += seeds
        targets = [("omega", adj_omega, 0)] if adj_omega is not None else []
        for name, grad in (adj_parameters or {}).items():
            targets += [(scalar, grad, c) for c, scalar in enumerate(self._scalars[name])]
        # no parameter gradient asked for: the kernel variant without per-cell parameter adjoints
        # (fewer registers: it need not keep what d/d omega reads)
        wanted = f_0.device.is_cuda if self.state_kernels is None else self.state_kernels
        state_only = wanted and not targets and not device_omega and self.manifest.has(adjoint_kernel_name(fresh, state_only=True))
        if residuals is not None:  # the state-only variant that starts from the residuals
            self._check_residuals(residuals, f_0, targets, device_omega)
            state_only = bool(self.manifest.parameters)
        # scratch arrays the adjoint kernel writes completely (every cell, kept cells included)
        # (every variant takes them: one body; the state-only variants leave them unwritten)
        cells = {name: self._scratch(name, f_0.shape[1:], f_0.device) for name in self.manifest.parameters}
        inputs += list(cells.values())
        slots = None
        if self.manifest.slot_count:
            # reads that are not scattered directly leave their adjoint in a slot of the reader;
            # adjoint_gather adds them to the owners' gradients (no atomics, no races)
            slots = self._scratch("slots", (*f_0.shape[1:], self.manifest.slot_count), f_0.device)  # cell-major
            inputs.append(slots)
        listed = self._list_for(bc_mask, listed)
        inputs += self._cells_argument(bc_mask, listed)  # a split step's kernels take the list (only the listed part reads it)
        inputs += self._residual_argument(residuals, device)
        try:
            parts = self._parts(listed, dim, device, adjoint=True) if residuals is None else [("", dim)]
            kernels = [(self.kernel(self.manifest.adjoint_kernel(fresh, state_only, part, device_omega, residuals is not None)),
                        count) for part, count in parts]
        except KeyError as exc:
            raise RuntimeArgumentError(exc.args[0]) from None
        for kernel, count in kernels:  # the parts run disjoint cells, and every element still has one writer
            main = wp.launch(kernel, dim=count, inputs=inputs, device=device, record_tape=False, block_dim=self.block_dim,
                             record_cmd=True)
            residual_role = {"residuals": len(inputs) - 1} if residuals is not None else {}
            launches.append((main, {**roles, "adj_f_0": len(state), "adj_f_1": len(state) + 1, **residual_role}))
        if fresh and kept_cells:
            launches.append((self.kept_launch(f_0, bc_mask, adj_f_0, adj_f_1, carry), {"f_0": 0, "adj_f_0": 2, "adj_f_1": 3}))
        if slots is not None:
            gather = self._gather(f_0, slots, bc_mask, [grads[name] for name in self.manifest.gather_into])
            if gather is not None:
                launches.append((gather, {"f_0": 0, **{f"adj_{n}": 3 + i for i, n in enumerate(self.manifest.gather_into)}}))
        reductions = []
        for scalar, grad, component in targets:
            total = wp.zeros(1, dtype=self.compute_dtype, device=device)
            add = wp.launch(_add_into, dim=1, inputs=[total, grad, component], device=device, record_tape=False, record_cmd=True)
            reductions.append((cells[scalar], total, add))
        return PackedAdjoint(launches, reductions)

    def kept_launch(self, f_0, bc_mask, adj_f_0, adj_f_1, carry):
        """``adjoint_kept`` (recorded, not run: ``.launch()``), which completes a fresh adjoint at
        the kept cells of ``bc_mask`` after ``adjoint_fresh`` has run at every cell that is not kept,
        in one launch or in several over disjoint cells (:mod:`adjointgen.runtime.overlap`); see
        :meth:`adjoint` for ``carry``."""
        if not self.manifest.has("adjoint_kept"):
            raise RuntimeArgumentError(f"{self.config.label} has no adjoint_kept kernel: no fresh adjoint where cells are kept")
        return wp.launch(self.kernel("adjoint_kept"), dim=f_0.shape[1:], inputs=[f_0, bc_mask, adj_f_0, adj_f_1, carry],
                         device=f_0.device, record_tape=False, record_cmd=True)

    def _check_residuals(self, residuals, f_0, targets: list, device_omega: bool) -> None:
        """Refuse residuals the module cannot use, of the wrong shape, or with a parameter gradient."""
        if not self.manifest.residuals:
            raise RuntimeArgumentError(f"{self.config.label}'s module has no residual variants (manifest.residual_count 0)")
        if targets or device_omega:
            raise RuntimeArgumentError("the residual adjoints are state-only: no adj_omega, adj_parameters or device_omega")
        shape = (self.manifest.residual_count, *f_0.shape[1:])
        if not isinstance(residuals, wp.array) or residuals.shape != shape or residuals.dtype != self.compute_dtype:
            raise RuntimeArgumentError(f"residuals must be a Warp array of shape {shape} and dtype "
                                       f"{self.compute_dtype.__name__}, as forward_residuals writes it")

    def forward_residuals(self, f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values, residuals,
                          record_cmd: bool = False):
        """The forward step that also writes ``residuals`` (shape ``(manifest.residual_count, nx,
        ny, nz)``, compute precision): what the state-only adjoint needs of this step, in place of
        its input (see :mod:`adjointgen.compiler.residuals`). ``record_cmd``: return the launch
        packed instead (parameters 0 f_0, 1 f_1, 5 the timestep, the last the residuals)."""
        return wp.launch(self.kernel(forward_kernel_name(False, residuals=True)), dim=f_0.shape[1:], device=f_0.device,
                         record_tape=False, record_cmd=record_cmd,
                         inputs=self._forward_inputs(f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values,
                                                     residuals=residuals))

    def _field_gradients(self, adj_fields: dict, field_values: list) -> dict:
        """{field: the array every adjoint variant adds its gradient into}: the caller's, or, for
        a field whose gradient the caller does not want, a scratch array (zeroed when the launches
        are prepared; nothing reads it)."""
        unknown = set(adj_fields) - set(self.manifest.fields)
        if unknown:
            raise RuntimeArgumentError(f"adj_fields names {', '.join(sorted(unknown))}, which {self.config.label} does not read")
        out = {}
        for name, field_array in zip(self.manifest.fields, field_values):
            given = adj_fields.get(name)
            if given is not None and (given.shape != field_array.shape or given.dtype != field_array.dtype):
                raise RuntimeArgumentError(f"adj_fields[{name!r}] must be shaped and typed like the field")
            if given is None:
                given = self._scratch(f"adj_{name}", field_array.shape, field_array.device, field_array.dtype)
                given.zero_()
            out[name] = given
        return out

    def __call__(self, f_0, f_1, bc_mask, missing_mask, omega, timestep=0):
        tape = _active_tape()
        if tape is None:
            self.forward(f_0, f_1, bc_mask, missing_mask, omega, timestep)
            return f_0, f_1
        self.check_arrays(f_0, f_1, bc_mask, missing_mask)
        for name, array in (("f_0", f_0), ("f_1", f_1)):
            if array.grad is None:
                raise RuntimeArgumentError(
                    f"{name} has no gradient array; create it with requires_grad=True "
                    f"(or set {name}.requires_grad = True) before recording the step on a wp.Tape")
        # omega and the lifted parameters are read back once per call (a read-back waits for the device)
        omega_value, lifted_values = self.kernel_omega(omega), self.parameter_values()
        adj_omega = omega.grad if isinstance(omega, wp.array) and omega.requires_grad else None
        adj_parameters = {name: array.grad for name, array in self.parameters.items() if array.requires_grad}
        adj_fields = {name: array.grad for name, array in self.fields.items() if array.requires_grad}
        # A recorded step keeps what its adjoint reads: where it can, the residuals (a few values
        # per cell, see _keeps_residuals); else a copy of the inputs: f_0 always (so XLB's
        # ping-pong loop, which overwrites f_0 one step later, differentiates correctly), and f_1
        # when a boundary condition reads data from it (ZouHe's and Regularized's prescribed
        # values); the forward itself may overwrite both (manifest.overwritten_inputs).
        residuals = None
        if self._keeps_residuals(f_0.device, adj_omega, adj_parameters):
            with paused_tape():
                residuals = self.saved_buffers.take_shaped((self.manifest.residual_count, *f_0.shape[1:]), self.compute_dtype,
                                                           f_0.device)
            self.forward_residuals(f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values, residuals)
            saved_f_0, saved_f_1 = f_0, f_1  # only their shapes are read: the _residuals adjoints read no state
        else:
            saved_f_0, saved_f_1 = self._forward_keeping_inputs(f_0, f_1, bc_mask, missing_mask, omega_value, timestep,
                                                                lifted_values)
        # the design fields as they are now (the caller may put other arrays in step.fields later)
        record = _TapeRecord(self, (saved_f_0, saved_f_1, bc_mask, missing_mask, omega_value, timestep), lifted_values,
                             f_0, f_1, adj_omega, adj_parameters, self._fusable(bc_mask), adj_fields, self.field_arrays(),
                             residuals)
        previous = tape.launches[-1] if tape.launches else None
        if isinstance(previous, _TapeRecord) and previous.fusable and record.fusable:
            previous.next_f_1, record.previous_f_0 = f_1, previous.f_0  # adjacent: see _TapeRecord
        recorded = [f_0, f_1] + ([omega] if adj_omega is not None else [])
        recorded += [array for array in self.parameters.values() if array.requires_grad]
        recorded += [array for array in self.fields.values() if array.requires_grad]
        tape.record_func(backward=record, arrays=recorded)
        # the copies go back to self.saved_buffers when the tape lets go of the record (reset, or dropped)
        kept = [residuals] if residuals is not None else [array for array in (saved_f_0, saved_f_1) if array is not f_1]
        weakref.finalize(record, self.saved_buffers.give, kept)
        return f_0, f_1

    def _keeps_residuals(self, device, adj_omega, adj_parameters: dict) -> bool:
        """Whether a recorded step keeps the residuals instead of its input: the module has them
        (``manifest.residuals``), no gradient of omega or of a lifted parameter is asked for (the
        residual adjoints are state-only), and ``tape_residuals`` allows it on ``device``."""
        wanted = device.is_cuda if self.tape_residuals is None else self.tape_residuals
        return wanted and self.manifest.residuals and adj_omega is None and not adj_parameters

    def _forward_keeping_inputs(self, f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values) -> tuple:
        """Run the forward and return copies of the inputs its adjoint will read ``(f_0, f_1)``;
        ``f_1`` itself where the adjoint does not read it. The copies come from
        ``self.saved_buffers``; where ``forward_save`` applies the forward writes the copy of
        ``f_0`` while it reads it, else ``wp.copy`` makes it before the forward."""
        with paused_tape():
            saved_f_0 = self.saved_buffers.take(f_0)
        if self.saves_in_forward(bc_mask):
            wp.launch(self.kernel(forward_kernel_name(save=True)), dim=f_0.shape[1:], device=f_0.device, record_tape=False,
                      inputs=self._forward_inputs(f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values,
                                                  saved=saved_f_0))
            return saved_f_0, f_1
        with paused_tape():
            wp.copy(saved_f_0, f_0)
            saved_f_1 = f_1
            if self.manifest.reads_f_1:
                saved_f_1 = self.saved_buffers.take(f_1)
                wp.copy(saved_f_1, f_1)
        self.forward(f_0, f_1, bc_mask, missing_mask, omega_value, timestep, lifted_values, check=False)
        return saved_f_0, saved_f_1

    def _fusable(self, bc_mask) -> bool:
        """Whether a recorded step on ``bc_mask`` may join a fused pair (see _TapeRecord): its
        ``adjoint_fresh`` writes every element of ``adj_f_0`` and its accumulating adjoint clears
        every element of ``adj_f_1`` (no kept cells, nothing in place), and it reads no ``f_1``.
        Whether ``bc_mask`` has kept cells is read back once per mask (a mask edited in place
        after its first recorded step needs ``tape_fusion = False``)."""
        manifest = self.manifest
        if not (self.tape_fusion and manifest.has("adjoint_fresh") and not manifest.in_place
                and not manifest.reads_f_1 and "f_1" not in manifest.gather_into):
            return False
        return not self._has_kept_cells(bc_mask)

    def _gather(self, f_0, slots, bc_mask, gradients):
        """adjoint_gather's launch (recorded, not run): over the grid, or where the module has
        adjoint_gather_listed and :meth:`gather_cells` gives a list, over its cells; None where
        the list is empty (no reader left a slot)."""
        inputs = [f_0, slots, bc_mask, *gradients]
        if not self.manifest.has("adjoint_gather_listed"):
            return wp.launch(self.kernel("adjoint_gather"), dim=f_0.shape[1:], inputs=inputs, device=f_0.device,
                             record_tape=False, record_cmd=True)
        cells = self.gather_cells(f_0, slots, bc_mask, gradients)
        if cells is not None and cells.shape[0] == 0:
            return None
        # the list (a stand-in for the grid launch) and the marks array (a stand-in: only the marks read it)
        inputs += [cells if cells is not None else self._scratch("no_cells", (1, f_0.ndim - 1), f_0.device, wp.int32),
                   self._scratch("no_marks", (1,) * (f_0.ndim - 1), f_0.device, wp.int32)]
        name, dim = ("adjoint_gather", f_0.shape[1:]) if cells is None else ("adjoint_gather_listed", cells.shape[0])
        return wp.launch(self.kernel(name), dim=dim, inputs=inputs, device=f_0.device, record_tape=False, record_cmd=True)

    def gather_cells(self, f_0, slots, bc_mask, gradients):
        """The cells whose slots adjoint_gather collects on ``bc_mask`` (those adjoint_gather_marks
        marks; read back once per mask, which must not change in place afterwards), rows of grid
        coordinates; None where the module has no listed gather or ``gather_listed`` says no (by
        default on CPUs)."""
        wanted = bc_mask.device.is_cuda if self.gather_listed is None else self.gather_listed
        if not (wanted and self.manifest.has("adjoint_gather_listed")):
            return None
        if bc_mask not in self._gathered:
            grid = f_0.shape[1:]
            marks = wp.zeros(grid, dtype=wp.int32, device=f_0.device)
            wp.launch(self.kernel("adjoint_gather_marks"), dim=grid, device=f_0.device,
                      inputs=[f_0, slots, bc_mask, *gradients, self._scratch("no_cells", (1, len(grid)), f_0.device, wp.int32),
                              marks])
            cells = np.argwhere(marks.numpy()).astype(np.int32)
            self._gathered[bc_mask] = wp.array(cells.reshape(-1, len(grid)), dtype=wp.int32, device=f_0.device)
        return self._gathered[bc_mask]

    def listed_cells(self, bc_mask):
        """The coordinates (an int32 array, one row ``i, j, k`` per cell, in grid order) of the cells
        of ``bc_mask`` with the module's listed ids, for a split adjoint (read back once per mask);
        None where the step is not split, the mask has none, or ``split_listed`` says no (by
        default: not on a CPU)."""
        wanted = bc_mask.device.is_cuda if self.split_listed is None else self.split_listed
        if not (wanted and self.manifest.listed_ids):
            return None
        if bc_mask not in self._listed:
            ids = bc_mask.numpy()[0]
            cells = np.argwhere(np.isin(ids, self.manifest.listed_ids)).astype(np.int32)  # (i, j, k) rows
            self._listed[bc_mask] = wp.array(cells, dtype=wp.int32, device=bc_mask.device) if len(cells) else None
        return self._listed[bc_mask]

    def _has_kept_cells(self, bc_mask) -> bool:
        """Whether ``bc_mask`` has a kept cell (255), read back once per mask."""
        kept = self._kept_cells.get(bc_mask)
        if kept is None:
            kept = self._kept_cells[bc_mask] = has_kept_cells(bc_mask)
        return kept

    def saves_in_forward(self, bc_mask) -> bool:
        """Whether a recorded step on ``bc_mask`` copies its input ``f_0`` with ``forward_save``:
        the module has it (the compiler proved that every element of f_0 is loaded by exactly one
        thread past the early exit: nothing in place, f_0 not written), no cell is kept (a kept
        cell returns before its loads, so its neighbours' elements would not be copied) and the
        adjoint reads no ``f_1`` (which would still need its own copy). Like :meth:`_fusable`, a
        mask edited in place after its first recorded step needs ``save_in_forward = False``."""
        manifest = self.manifest
        if not (self.save_in_forward and manifest.has(forward_kernel_name(save=True)) and not manifest.in_place
                and not manifest.reads_f_1):
            return False
        return not self._has_kept_cells(bc_mask)

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


def check_like_state(name: str, given, like) -> None:
    """Refuse a gradient array that is not shaped, typed and placed like the state ``like`` (a
    launch or ``wp.copy`` would use what fits and leave a silently wrong gradient)."""
    if not isinstance(given, wp.array) or given.shape != like.shape or given.dtype != like.dtype:
        found = (f"shape {given.shape}, dtype {wp.types.type_repr(given.dtype)}" if isinstance(given, wp.array)
                 else type(given).__name__)
        raise RuntimeArgumentError(f"{name} must be a Warp array shaped and typed like the state (shape {like.shape}, "
                                   f"dtype {wp.types.type_repr(like.dtype)}); got {found}")
    if str(given.device) != str(like.device):
        raise RuntimeArgumentError(f"{name} is on {given.device}, the state on {like.device}")


def _same_buffer(a, b) -> bool:
    return (a is not None and b is not None and a.ptr == b.ptr and a.shape == b.shape and a.strides == b.strides
            and a.dtype == b.dtype and a.device == b.device)


class _TapeRecord:
    """One step recorded on a ``wp.Tape``: ``tape.backward()`` calls it to run the step's adjoint.

    Fused pairs. Take step k recorded with (f_0, f_1) = (A, B) and step k+1 recorded right after it
    (the next entry of the tape) with f_1 = A, as in XLB's ping-pong loop. The backward pass runs
    k+1's adjoint, then k's, with nothing in between. The accumulating adjoint of k+1 clears every
    element of its adj_f_1 = A.grad (no kept cells); that of k then adds into A.grad, i.e. writes
    into zeros. So k may run ``adjoint_fresh`` (write A.grad: every element has one writer) and k+1
    need not clear A.grad, which k overwrites before anything reads it: the pair's observable
    result (the gradients between non-adjacent entries of the tape) is exactly the accumulating
    one, 0 + x = x, whatever the gradient arrays held before. Only the buffers matter, so the
    condition, evaluated when the adjoints run, is that k's ``f_0.grad`` and k+1's ``f_1.grad`` are
    one buffer; both steps must be fusable (``DifferentiableStep._fusable``).

    A step then runs: ``adjoint_fresh`` when the step after it is fused with it (its adj_f_1 cleared
    too, unless the step before it is fused with it and overwrites that); else the accumulating
    ``adjoint`` (the last step of a run, whose adj_f_0 may hold a loss's cotangent)."""

    __slots__ = ("step", "inputs", "lifted_values", "f_0", "f_1", "adj_omega", "adj_parameters", "fusable", "next_f_1", "previous_f_0",
                 "adj_fields", "field_values", "residuals", "__weakref__")

    def __init__(self, step, inputs, lifted_values, f_0, f_1, adj_omega, adj_parameters, fusable: bool, adj_fields: dict,
                 field_values: list, residuals=None):
        # inputs: the adjoint's (f_0, f_1, bc_mask, missing_mask, omega, timestep), f_0 a saved copy
        self.step, self.inputs, self.lifted_values, self.f_0, self.f_1 = step, inputs, lifted_values, f_0, f_1
        self.adj_omega, self.adj_parameters, self.fusable = adj_omega, adj_parameters, fusable
        self.next_f_1 = None  # f_1 of the step recorded right after this one, when both are fusable
        self.previous_f_0 = None  # f_0 of the step recorded right before this one, when both are fusable
        self.adj_fields, self.field_values = adj_fields, field_values  # design fields' gradients (always added to), values
        self.residuals = residuals  # forward_residuals' values (then the inputs' arrays give only the grid), or None

    def kernels(self) -> tuple[bool, bool]:
        """(fresh: write adj_f_0, cleared later: the step before overwrites adj_f_1)."""
        fresh = self.next_f_1 is not None and _same_buffer(self.f_0.grad, self.next_f_1.grad)
        cleared_later = self.previous_f_0 is not None and _same_buffer(self.f_1.grad, self.previous_f_0.grad)
        return fresh, cleared_later

    def __call__(self):
        fresh, cleared_later = self.kernels()
        self.step.adjoint(*self.inputs, self.f_0.grad, self.f_1.grad, self.adj_omega, self.lifted_values, self.adj_parameters,
                          fresh=fresh, adj_fields=self.adj_fields, field_values=self.field_values, residuals=self.residuals)
        if fresh and not cleared_later:
            self.f_1.grad.zero_()  # what the accumulating adjoint would have cleared (every cell)


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
