"""The JAX face of a generated step: XLB's call, ``(f_0, f_1, bc_mask, missing_mask, omega) ->
(f_0, f_new)``, as a JAX function whose forward launches the generated Warp forward kernel and
whose VJP launches the generated adjoint kernels (through Warp's ``jax_callable``, inside a
``jax.custom_vjp``). It works under ``jax.jit``, ``jax.lax.scan`` and ``jax.checkpoint``, on the
CPU and on CUDA devices (JAX chooses from where the arrays live).

Guarantees: the inputs are never modified (JAX semantics; the kernels write into new buffers);
the backward pass needs only the step's inputs (``f_0``, and ``f_1`` only where a boundary
condition keeps data there), so a step stores nothing extra; ``omega`` is differentiable (a float or a 0-d/1-element array); ``bc_mask`` and
``missing_mask`` are not (their cotangents are zero). Arrays use the Warp layout, ``(q, nx, ny,
nz)`` with ``nz = 1`` in 2D (XLB's JAX backend drops that axis in 2D).

Design fields: where the stepper's operators read per-cell fields (``step.manifest.fields``, e.g.
:class:`~adjointgen.xlb.design.PorousBGK`'s ``porosity``) the function takes one more argument,
``fields``, a dict {name: array (components, nx, ny, nz)} (one component for ``porosity``, q for
:class:`~adjointgen.xlb.design.BouzidiBounceBackBC`'s ``wall_distance``); each is
differentiable, and its cotangent is the generated adjoint's per-cell field gradient. The fields
travel to the kernels stacked in one array (all components, nx, ny, nz), in manifest order.
"""
# (no ``from __future__ import annotations``: jax_callable reads the callables' annotations,
# which name local Warp types)


import contextlib
import contextvars
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import warp as wp

from adjointgen.errors import RuntimeArgumentError

# whether the JAX calls built now may run as CUDA graphs (see captured_calls)
_CAPTURED = contextvars.ContextVar("adjointgen_captured_calls", default=False)


@contextlib.contextmanager
def captured_calls(enabled: bool = True):
    """Within it, the JAX calls that the faces (and the sharded rollout's halo and overlapped steps)
    build are Warp-captured CUDA graphs (``wp.JaxCallableGraphMode.WARP``: captured once per set
    of buffer addresses, then replayed without running Python), where they read nothing back from
    the device; outside it, and for calls that read omega back, Warp runs their Python at every call.
    Only for CUDA devices (Warp refuses the mode on the CPU): ``sharded_rollout`` enters it on
    meshes of CUDA devices (``benchmarks/NOTES.md`` v53: the host time of the calls left the GPU
    waiting)."""
    token = _CAPTURED.set(enabled)
    try:
        yield
    finally:
        _CAPTURED.reset(token)


def captured() -> bool:
    """Whether the calls built now are in :func:`captured_calls`."""
    return _CAPTURED.get()


def graph_mode(reads_back: bool = False) -> wp.JaxCallableGraphMode:
    """The graph mode of a JAX call built now (see :func:`captured_calls`)."""
    return wp.JaxCallableGraphMode.WARP if captured() and not reads_back else wp.JaxCallableGraphMode.NONE


def jax_step(stepper, timestep: int = 0):
    """A JAX function for the XLB Warp ``stepper`` (see the module docstring): ``(f_0, f_1,
    bc_mask, missing_mask, omega) -> (f_0, f_new)``, with a sixth argument ``fields`` where the
    stepper reads design fields.

    Its attribute ``carried`` is the same step with a cheaper VJP for loops (None where the
    module has no chainable fresh adjoint, :func:`carries`, or reads design fields): it takes the
    cotangent of the ``f_0`` it returns as the carry of a Warp rollout's fresh sweep, so it is
    exact only where that cotangent is zero except at kept cells and where the step keeps data
    in ``f_1``, which holds where the returned ``f_0`` becomes the next step's ``f_1`` and nothing
    else (XLB's two-buffer loop, every step but the last; :func:`~adjointgen.runtime.sharding.sharded_rollout`).

    Both take ``listed=`` (keyword): for a split step (ZouHe, Regularized, extrapolation cells run
    from a list, the rest without their code: :attr:`Manifest.listed_ids`), the list of those
    cells, an int32 array of rows ``i, j, k`` (rows at kept cells are no-ops, for padding), e.g.
    :func:`listed_cells`. Without it, a mask known when JAX traces the call (a concrete JAX array:
    an eager call, or a mask the jitted function closes over) gets its list made once per mask
    object (``known_lists``, :class:`KnownLists`; on GPUs); a traced mask (a jit argument) runs
    the listed cells in launches over the grid (:attr:`DifferentiableStep.split_grid`), slower
    than a list but without the whole-grid kernel's spills (``benchmarks/NOTES.md`` v56)."""
    step = _step_of(stepper)
    names = tuple(step.manifest.fields)
    build = (lambda omega_value, _: _with_fields(step, timestep, names, omega_value)) if names else \
        (lambda omega_value, listed: _without_fields(step, timestep, omega_value, listed))
    known = KnownLists(() if names else step.manifest.listed_ids)
    apply, carried = _by_omega(build, known)
    apply.known_lists = known
    apply.carried = carried if carries(step.manifest) and not names else None
    apply.step = step
    apply.timestep = timestep
    apply.writes_f_0 = step.manifest.writes_f_0  # False: the returned f_0 is the input itself
    apply.fields = names
    grid = tuple(stepper.grid.shape) + (1,) * (3 - len(stepper.grid.shape))
    apply.field_shapes = {name: step.manifest.field_shape(name, grid) for name in names}  # Warp layout
    return apply


def listed_cells(face, bc_mask):
    """The list that the face of a split step takes as ``listed=`` (see :func:`jax_step`), for a
    ``bc_mask`` known now (a concrete array, not a tracer): the rows ``i, j, k`` (int32, in grid
    order) of its cells with the module's listed ids; None where the step is not split or the mask
    has none of them."""
    return _rows_with(face.step.manifest.listed_ids, bc_mask)


def _rows_with(ids: tuple, bc_mask):
    """The rows ``i, j, k`` (int32, grid order) of the cells of ``bc_mask`` with one of ``ids``."""
    if not ids:
        return None
    rows = np.argwhere(np.isin(np.asarray(bc_mask)[0], ids)).astype(np.int32)
    return rows if len(rows) else None


class KnownLists:
    """A face's lists of a split step's listed cells, for masks known when JAX traces the call:
    made once per mask object (a device read-back and a host scan of the mask), then reused. JAX
    arrays cannot change, so a list stays right for as long as its mask lives (the entry goes
    with it). None for traced masks, NumPy masks (which can change in place), masks on several
    devices, steps that are not split, and where ``wanted`` says no (None: masks on a GPU, where the list saves the grid
    parts' launches; on a CPU the whole grid runs in one launch)."""

    def __init__(self, ids: tuple):
        self.ids = ids
        self.wanted: bool | None = None
        self._lists: dict = {}  # id(mask) -> (weak reference to the mask, its list or None)

    def __call__(self, bc_mask):
        import jax

        if (not self.ids or isinstance(bc_mask, jax.core.Tracer) or not isinstance(bc_mask, jax.Array)
                or len(bc_mask.devices()) != 1):  # (sharded masks: sharded_rollout makes each device's list)
            return None
        device = next(iter(bc_mask.devices()))
        if not (self.wanted if self.wanted is not None else device.platform == "gpu"):
            return None
        key = id(bc_mask)
        entry = self._lists.get(key)
        if entry is None or entry[0]() is not bc_mask:
            rows = _rows_with(self.ids, bc_mask)
            gone = weakref.ref(bc_mask, lambda _, key=key: self._lists.pop(key, None))
            with jax.ensure_compile_time_eval():  # a device array, also while JAX traces (not a tracer)
                cells = None if rows is None else jax.device_put(rows, device)
            entry = self._lists[key] = (gone, cells)
        return entry[1]


def known_omega(omega) -> float | None:
    """omega's value where JAX traces the call with it known (a Python number, a NumPy value, a
    concrete JAX array), None where it is a tracer (a jit argument, or being differentiated)."""
    import jax

    return None if isinstance(omega, jax.core.Tracer) else float(np.asarray(omega).reshape(-1)[0])


def carries(manifest) -> bool:
    """Whether the face has a ``carried`` step (see :func:`jax_step`): the module's
    ``adjoint_fresh`` can chain through a carry (a step that keeps data in ``f_1`` without
    updating ``f_0`` in place has none, as in a Warp rollout), and ``adjoint_kept`` completes it
    at kept cells, which the face cannot look for in a traced mask."""
    return manifest.has("adjoint_fresh") and manifest.has("adjoint_kept") and bool(manifest.in_place or not manifest.reads_f_1)


@dataclass(frozen=True)
class _Faces:
    """One omega's step functions: ``plain`` (any cotangents) and ``carried`` (see :func:`jax_step`)."""

    plain: object
    carried: object


def _by_omega(build, known):
    """The step functions, plain and carried: where ``omega`` is known when JAX traces the call (a
    Python number, a NumPy value or a concrete JAX array, not a tracer), steps with that value
    built in (cached per value), whose kernels never read omega back from the device; else
    (omega traced: a jit argument, or differentiated) the steps whose kernels read it from its
    array on the device (the module's ``_device_omega`` variants; a module without them reads it
    back at every call). Without ``listed=``, the list ``known`` has for the mask, if any."""
    faces: dict = {}

    def of(omega, listed) -> _Faces:
        value = known_omega(omega)
        key = (value, captured(), listed is not None)
        if key not in faces:
            faces[key] = build(value, listed is not None)
        return faces[key]

    def apply(f_0, f_1, bc_mask, missing_mask, omega, *fields, listed=None):
        listed = known(bc_mask) if listed is None else listed
        return of(omega, listed).plain(f_0, f_1, bc_mask, missing_mask, omega, *fields, *_cells(listed, fields))

    def carried(f_0, f_1, bc_mask, missing_mask, omega, *fields, listed=None):
        listed = known(bc_mask) if listed is None else listed
        return of(omega, listed).carried(f_0, f_1, bc_mask, missing_mask, omega, *fields, *_cells(listed, fields))

    return apply, carried


def _cells(listed, fields) -> tuple:
    """The steps' last input where they take no design fields: the list ``listed``, or a stand-in."""
    import jax.numpy as jnp

    if fields:
        if listed is not None:
            raise RuntimeArgumentError("listed=: a step with design fields runs the whole grid in one launch")
        return ()
    return (jnp.zeros((1, 3), dtype=jnp.int32) if listed is None else listed,)


def _step_of(stepper):
    """The generated step; for a stepper that reads design fields, with stand-ins for them (every
    call passes the fields' values, see _with_fields)."""
    from adjointgen.runtime.step import DifferentiableStep, load_module
    from adjointgen.xlb.support import configuration_of

    config = configuration_of(stepper)
    generated = load_module(stepper, config)
    grid = tuple(stepper.grid.shape) + (1,) * (3 - len(stepper.grid.shape))
    store = wp.float64 if config.precision.endswith("FP64") else wp.float32
    stand_ins = {name: wp.zeros(generated.manifest.field_shape(name, grid), dtype=store) for name in generated.manifest.fields}
    step = DifferentiableStep(stepper, generated, config, fields=stand_ins)
    # a split step (ZouHe, ... cells from a list) and a listed gather read their lists back from the
    # mask once per mask object, and the callables get a new Warp array for the mask at every call:
    # the face passes its own lists (listed=, KnownLists), else the grid parts or one launch run
    # (no device read-back and host scan of the mask per step)
    step.split_listed = step.gather_listed = False
    return step


class CallTypes:
    """The Warp annotations of a step's JAX callables, the JAX dtype of omega, how the callables
    pass omega to the kernels and how Warp runs them (here and in :mod:`adjointgen.runtime.overlap`),
    for one omega (``fixed``: its value where built in, else None)."""

    def __init__(self, step, fixed: float | None):
        import jax.numpy as jnp

        self.state = wp.array4d(dtype=step.store_dtype)
        self.omega = wp.array(dtype=step.compute_dtype)
        self.compute = jnp.float64 if step.compute_dtype == wp.float64 else jnp.float32
        self.writes_f_0 = step.manifest.writes_f_0
        self.reads_f_1 = step.manifest.reads_f_1
        self.device_omega = step.manifest.device_omega
        self.carries = carries(step.manifest)
        # the calls' graph mode (graph_mode): a module without device-omega variants reads a traced
        # omega back from the device, which a captured graph cannot
        self.mode = graph_mode(reads_back=fixed is None and not self.device_omega)

    def omega_value(self, omega_array, fixed):
        """omega for the kernels: ``fixed`` where the step was built for one value; else the
        array itself, which the module's ``_device_omega`` variants read on the device; else (a
        module without them) read back from the device (a read-back waits for the device's queue)."""
        if fixed is not None:
            return fixed
        return omega_array if self.device_omega else float(omega_array.numpy()[0])

    def on_device(self, fixed) -> bool:
        """Whether the kernels read omega from its array (see :meth:`omega_value`)."""
        return fixed is None and self.device_omega

    @staticmethod
    def wanted_adj_omega(adj_omega, fixed):
        """Where omega's gradient goes: nowhere for a step built for one value (nothing
        differentiates a number; the step's VJP returns a zero for it, and the adjoint runs its
        variant without per-cell omega adjoints, which needs fewer registers), else ``adj_omega``."""
        return adj_omega if fixed is None else None

    def omega_array(self, omega):
        import jax.numpy as jnp

        return jnp.reshape(jnp.asarray(omega, dtype=self.compute), (1,))

    def forward_call(self, in_place, into_new):
        """The forward as a JAX call ``(f_0, f_1, bc_mask, missing_mask, omega, *extra)``.

        Where a condition keeps data in ``f_0`` (ZouHe, ...) the step writes into ``f_0`` and
        ``f_1`` in place (``in_place``: both in-out, so JAX hands the callable copies or buffers
        it no longer needs, never the caller's arrays). Every other step writes a new array
        (``into_new``, its last parameter ``f_new``): ``f_1`` is only read (at kept cells), so it
        need not be copied where JAX still holds it, e.g. as an input a reverse pass needs."""
        if self.writes_f_0:
            return wp.jax_callable(in_place, num_outputs=2, in_out_argnames=["f_0", "f_1"],
                                   graph_mode=self.mode)
        call = wp.jax_callable(into_new, num_outputs=1, graph_mode=self.mode)
        return lambda f_0, *rest: call(f_0, *rest, output_dims={"f_new": tuple(f_0.shape)})

    def carried_call(self, carried):
        """The carried backward as the backward call :func:`_custom_step` expects, ``(f_0, f_1,
        bc_mask, missing_mask, omega, cells, adj_f_0, adj_f_1) -> (adj_f_0, adj_f_1, adj_omega)``, where
        the incoming ``adj_f_0`` is the carry and goes out as ``adj_f_1`` (the input ``f_1``'s
        adjoint) and the outgoing ``adj_f_0`` is a new array the fresh adjoint writes; None where
        the module has no such adjoint (:func:`carries`)."""
        if not self.carries:
            return None
        call = wp.jax_callable(carried, num_outputs=3, in_out_argnames=["carry"], graph_mode=self.mode)

        def backward_call(f_0, f_1, bc_mask, missing_mask, omega, cells, carry, adj_f_1):
            carry, adj_f_0, adj_omega = call(f_0, f_1, bc_mask, missing_mask, omega, cells, adj_f_1, carry,
                                             output_dims={"adj_f_0": tuple(f_0.shape), "adj_omega": (1,)})
            return adj_f_0, carry, adj_omega

        return backward_call

    def new_state(self, f_0, outputs):
        return tuple(outputs[:2]) if self.writes_f_0 else (f_0, outputs[0])  # f_0 untouched: passed through


@wp.kernel
def _keep_kept_cells(bc_mask: wp.array4d(dtype=wp.uint8), before: wp.array4d(dtype=Any), after: wp.array4d(dtype=Any)):
    """``after`` takes ``before``'s populations at kept cells (bc_mask 255), which the step leaves alone."""
    i, j, k = wp.tid()
    if bc_mask[0, i, j, k] == wp.uint8(255):
        for q in range(before.shape[0]):
            after[q, i, j, k] = before[q, i, j, k]


def with_kept_cells(f_1, f_new, bc_mask):
    """``f_new`` (Warp arrays) ready to take a step's output: its kept cells hold ``f_1``'s old content."""
    wp.launch(_keep_kept_cells, dim=f_1.shape[1:], inputs=[bc_mask, f_1, f_new], device=f_1.device)
    return f_new


def _zero_cotangents(*masks):
    import jax

    return [np.zeros(m.shape, dtype=jax.dtypes.float0) for m in masks]


def _without_fields(step, timestep: int, fixed: float | None, listed: bool):
    """The step functions ``(f_0, f_1, bc_mask, missing_mask, omega, cells)`` for a step without
    design fields; ``cells`` (int32, rows ``i, j, k``) is the list of a split step's listed cells
    where ``listed`` (:meth:`~adjointgen.runtime.step.DifferentiableStep.forward`'s ``listed``),
    else a stand-in that is not read (one launch over the grid)."""
    t = CallTypes(step, fixed)
    rows = wp.array2d(dtype=wp.int32)

    def in_place(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, cells: rows):
        step.forward(f_0, f_1, bc_mask, missing_mask, t.omega_value(omega, fixed), timestep, device_omega=t.on_device(fixed),
                     listed=cells if listed else None)

    def into_new(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, cells: rows, f_new: t.state):
        in_place(f_0, with_kept_cells(f_1, f_new, bc_mask), bc_mask, missing_mask, omega, cells)

    def backward(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, cells: rows,
                 adj_f_0: t.state, adj_f_1: t.state, adj_omega: t.omega):
        adj_omega.zero_()
        step.adjoint(f_0, f_1, bc_mask, missing_mask, t.omega_value(omega, fixed), timestep, adj_f_0, adj_f_1,
                     t.wanted_adj_omega(adj_omega, fixed), device_omega=t.on_device(fixed), listed=cells if listed else None)

    def carried(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, cells: rows,
                adj_f_1: t.state, carry: t.state, adj_f_0: t.state, adj_omega: t.omega):
        adj_omega.zero_()
        step.adjoint(f_0, f_1, bc_mask, missing_mask, t.omega_value(omega, fixed), timestep, adj_f_0, adj_f_1,
                     t.wanted_adj_omega(adj_omega, fixed), device_omega=t.on_device(fixed), fresh=True, carry=carry,
                     kept_cells=True,  # adjoint_kept at every call: looking for kept cells would read the mask back
                     listed=cells if listed else None)

    backward_call = wp.jax_callable(backward, num_outputs=3, in_out_argnames=["adj_f_0", "adj_f_1"],
                                    output_dims={"adj_omega": (1,)}, graph_mode=t.mode)
    forward_call = t.forward_call(in_place, into_new)
    carried_call = t.carried_call(carried)

    def with_cells_cotangent(call):  # the list is an integer input: its cotangent is a float0 zero
        return call and (lambda *args: (*call(*args), *_zero_cotangents(args[5])))

    return _Faces(_custom_step(t, forward_call, with_cells_cotangent(backward_call), fixed),
                  carried_call and _custom_step(t, forward_call, with_cells_cotangent(carried_call), fixed))


def _custom_step(t: CallTypes, forward_call, backward_call, fixed: float | None):
    """``(f_0, f_1, bc_mask, missing_mask, omega, *extra) -> (f_0, f_new)`` as a ``jax.custom_vjp``
    over the two callables; the ``extra`` inputs (the stacked design fields, or a split step's list
    of cells) pass to both callables after omega, and their cotangents come back from the
    backward's last outputs (a float0 zero for the list)."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def apply(f_0, f_1, bc_mask, missing_mask, omega, *extra):
        return t.new_state(f_0, forward_call(f_0, f_1, bc_mask, missing_mask, t.omega_array(omega), *extra))

    def apply_fwd(f_0, f_1, *rest):
        # the adjoint reads the input f_1 only where a condition keeps data there: otherwise it
        # is not kept for the reverse pass (and f_0 stands in for it there, unread)
        return apply(f_0, f_1, *rest), (f_0, f_1 if t.reads_f_1 else None, *rest)

    def apply_bwd(residuals, cotangents):
        f_0, f_1, bc_mask, missing_mask, omega, *extra = residuals
        f_1 = f_0 if f_1 is None else f_1
        adj_f_0, adj_f_1 = cotangents
        adj_f_0, adj_f_1, adj_omega, *adj_extra = backward_call(
            f_0, f_1, bc_mask, missing_mask, t.omega_array(omega), *extra, adj_f_0.astype(f_0.dtype), adj_f_1.astype(f_1.dtype))
        if fixed is None:
            adj_omega = jnp.reshape(adj_omega, jnp.shape(omega)).astype(jnp.result_type(omega))
        else:  # omega was a number when traced: nothing differentiates it (a zero of its own type)
            adj_omega = jnp.zeros_like(omega)
        return (adj_f_0, adj_f_1, *_zero_cotangents(bc_mask, missing_mask), adj_omega, *adj_extra)

    apply.defvjp(apply_fwd, apply_bwd)
    return apply


def _with_fields(step, timestep: int, names: tuple, fixed: float | None):
    import jax.numpy as jnp

    t = CallTypes(step, fixed)
    grid = tuple(step.stepper.grid.shape) + (1,) * (3 - len(step.stepper.grid.shape))

    shapes = [step.manifest.field_shape(name, grid) for name in names]
    starts = [sum(shape[0] for shape in shapes[:k]) for k in range(len(names) + 1)]

    def views(stacked):  # one (components, nx, ny, nz) view per field, manifest order
        return [stacked[starts[k]:starts[k + 1]] for k in range(len(names))]

    def in_place(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, fields: t.state):
        step.forward(f_0, f_1, bc_mask, missing_mask, t.omega_value(omega, fixed), timestep, field_values=views(fields),
                     device_omega=t.on_device(fixed))

    def into_new(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, fields: t.state, f_new: t.state):
        in_place(f_0, with_kept_cells(f_1, f_new, bc_mask), bc_mask, missing_mask, omega, fields)

    def backward(f_0: t.state, f_1: t.state, bc_mask: wp.array4d(dtype=wp.uint8),
                 missing_mask: wp.array4d(dtype=wp.bool), omega: t.omega, fields: t.state,
                 adj_f_0: t.state, adj_f_1: t.state, adj_omega: t.omega, adj_fields: t.state):
        adj_omega.zero_()
        adj_fields.zero_()  # the adjoint adds the field gradients into it
        step.adjoint(f_0, f_1, bc_mask, missing_mask, t.omega_value(omega, fixed), timestep, adj_f_0, adj_f_1,
                     t.wanted_adj_omega(adj_omega, fixed), adj_fields=dict(zip(names, views(adj_fields))),
                     field_values=views(fields), device_omega=t.on_device(fixed))

    raw_backward = wp.jax_callable(backward, num_outputs=4, in_out_argnames=["adj_f_0", "adj_f_1"],
                                   output_dims={"adj_omega": (1,), "adj_fields": (starts[-1], *grid)},
                                   graph_mode=t.mode)

    def backward_call(f_0, f_1, bc_mask, missing_mask, omega, stacked, adj_f_0, adj_f_1):
        # the field gradient is shaped like the fields the step ran with (a slab of the grid
        # where the step runs sharded, see adjointgen.runtime.sharding)
        return raw_backward(f_0, f_1, bc_mask, missing_mask, omega, stacked, adj_f_0, adj_f_1,
                            output_dims={"adj_omega": (1,), "adj_fields": tuple(stacked.shape)})

    stacked_step = _custom_step(t, t.forward_call(in_place, into_new), backward_call, fixed)

    def apply(f_0, f_1, bc_mask, missing_mask, omega, fields):
        # the fields' grid is the state's: the stepper's grid, or a device's slab of it
        local = [(shape[0], *f_0.shape[1:]) for shape in shapes]
        stacked = jnp.concatenate([_field(fields, name, shape, f_0.dtype) for name, shape in zip(names, local)], axis=0)
        return stacked_step(f_0, f_1, bc_mask, missing_mask, omega, stacked)

    # no carried step: no module with design fields has adjoint_kept today (PorousBGK and
    # Bouzidi's have no kept cells' early return), so it could not be tested
    return _Faces(apply, None)


def _field(fields, name: str, shape: tuple, dtype):
    """The design field ``name`` from the caller's dict, checked."""
    if not isinstance(fields, dict) or name not in fields:
        given = ", ".join(sorted(fields)) if isinstance(fields, dict) else type(fields).__name__
        raise RuntimeArgumentError(f"this step reads the design field {name!r}: pass fields={{{name!r}: array of shape "
                                   f"{shape}}} as the sixth argument (got {given or 'an empty dict'})")
    value = fields[name]
    if tuple(value.shape) != shape:
        raise RuntimeArgumentError(f"the design field {name!r} must have shape {shape} (Warp layout); got {tuple(value.shape)}")
    return value.astype(dtype)
