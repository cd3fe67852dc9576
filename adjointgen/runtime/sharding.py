"""A step split across devices along the first grid axis, with JAX's own sharding as the engine.

:func:`sharded_step` turns a per-device step with XLB's call ``(f_0, f_1, bc_mask, missing_mask,
omega) -> (f_0, f_new)`` (the JAX face of a generated step, :func:`adjointgen.runtime.jax_face.jax_step`,
or any JAX step such as XLB's own JAX stepper) into one on arrays sharded along the grid's x axis
(array axis 1) over a one-dimensional device mesh, with ``jax.shard_map``:

1. each device pads its slab with ``halo`` planes from each neighbour, exchanged with
   ``jax.lax.ppermute`` (periodic in x: the last device's right neighbour is the first);
2. the step runs on the padded slab; its own wrap-around in x only touches the halo planes, whose
   results are dropped;
3. the slab is cut back out.

Differentiating this needs nothing more: JAX transposes the slicing into padding and each
``ppermute`` into the reverse permutation, so the adjoint the step scatters into a halo plane
travels back to the device that owns the plane and is added there (the transposed exchange).
``omega`` is replicated and cast to device-varying before the step, so its gradient (one part per
device) is summed over the devices by the cast's transpose. One halo plane
suffices for velocity sets whose speeds are at most 1 per axis (D2Q9, D3Q19, D3Q27). The masks
are exchanged like the state (they are inputs of every step; cheap next to the populations).

:func:`sharded_rollout` runs a whole rollout that way without the per-step copies: slabs padded
once, only the populations that cross the cut exchanged before each step, checkpointed segments.
"""

import functools

import numpy as np
import warp as wp

from adjointgen.errors import RuntimeArgumentError
from adjointgen.runtime.halos import Crossing, Exchange
from adjointgen.runtime.jax_face import listed_cells
from adjointgen.runtime.overlap import EdgeMasks, overlapped_step, refusal

__all__ = ["Crossing", "sharded_rollout", "sharded_step"]


def _halo_exchange(x, axis_name: str, devices: int, halo: int):
    """``x`` padded along axis 1 with ``halo`` planes from the left and right neighbours."""
    import jax
    import jax.numpy as jnp

    to_right = [(i, (i + 1) % devices) for i in range(devices)]
    to_left = [(i, (i - 1) % devices) for i in range(devices)]
    from_left = jax.lax.ppermute(x[:, -halo:], axis_name, to_right)  # my left halo: left neighbour's last planes
    from_right = jax.lax.ppermute(x[:, :halo], axis_name, to_left)
    return jnp.concatenate([from_left, x, from_right], axis=1)


def sharded_step(step, mesh, axis_name: str = "x", halo: int = 1, writes_f_0: bool = True):
    """``step`` run on slabs of the grid, one per device of ``mesh`` (see the module docstring).

    ``writes_f_0=False`` says that the step returns its ``f_0`` unchanged (a generated step whose
    ``manifest.writes_f_0`` is False; :func:`~adjointgen.runtime.jax_face.jax_step` returns it as
    the step's ``writes_f_0``): the input slab is then passed through instead of cut out of the
    step's padded result. True is right for every step, False only saves that copy."""
    import jax
    from jax.sharding import PartitionSpec as P

    devices = mesh.shape[axis_name]

    def local(f_0, f_1, bc_mask, missing_mask, omega):
        padded = [_halo_exchange(a, axis_name, devices, halo) for a in (f_0, f_1, bc_mask, missing_mask)]
        # omega is the same on every device, its gradient a different part on each: mark it as
        # varying, whose transpose sums the parts over the devices
        omega = jax.lax.pcast(omega, axis_name, to="varying")
        f_0_out, f_new = step(*padded, omega)
        if not writes_f_0:  # the step leaves f_0 alone: no copy of it back
            return f_0, f_new[:, halo:-halo]
        return f_0_out[:, halo:-halo], f_new[:, halo:-halo]

    slab = P(None, axis_name)
    return jax.shard_map(local, mesh=mesh, in_specs=(slab, slab, slab, slab, P()), out_specs=(slab, slab))


def sharded_rollout(step, mesh, steps: int, crossing: Crossing, axis_name: str = "x", segment: int | None = None,
                    overlap: bool = False, graphs: bool | None = None, split: bool | None = None):
    """``steps`` steps of XLB's two-buffer loop (``f_0, f_1 = f_new, f_0``) with ``step`` (a
    generated step's JAX face, :func:`~adjointgen.runtime.jax_face.jax_step`), the grid split along
    x over the devices of ``mesh``: ``run(f_0, f_1, bc_mask, missing_mask, omega) -> (f_0, f_1)``,
    differentiable in ``f_0``, ``f_1`` and ``omega`` (an ``omega`` known before tracing, a number
    or a concrete array, goes to the steps as a number: see :func:`~adjointgen.runtime.jax_face.jax_step`).
    A step that reads design fields takes them as a sixth argument, ``fields`` ({name: array
    (components, nx, ny, nz)}, split along x like the state; differentiable too).

    Unlike :func:`sharded_step`, the slabs stay padded for the whole rollout:

    - each device's arrays get one halo plane on each side once, at the start; the masks' halo
      planes mark kept cells (``bc_mask`` 255, XLB's solid cells), which the generated kernels leave
      alone in the forward and in the adjoint, so no mask is exchanged and no halo cell computes;
    - before each step only the populations that cross the cut (``crossing``: 5 of 19 for D3Q19, 9
      of 27 for D3Q27) travel, one plane each way (``jax.lax.ppermute``), into the halo planes;
      the slab is never copied into a new padded array;
    - in the reverse pass (the refresh's own VJP, :func:`_halo_refresh`) the adjoint a slab's first
      plane scatters into its left halo travels back to the left neighbour and is added onto the
      element it pulled. Every element of a state gradient has one writer, there as on one
      device, so the sharded gradient equals the one-device gradient bit for bit
      (``tests/test_sharding.py``; omega's and the fields' gradients, sums over the steps, to
      rounding);
    - every step but the last is the face's ``carried`` step (``jax_step(...).carried``, where the
      module has one): its VJP runs the fresh adjoint, which moves 3 state arrays where the
      accumulating one moves 5, since the cotangent of the ``f_0`` a step returns is the
      adjoint of the next step's input ``f_1`` and so zero but at kept cells (the halos, solid
      cells) and where that step keeps data in ``f_1``. ``step`` is a face of
      :func:`~adjointgen.runtime.jax_face.jax_step`.

    Memory and time: the loop runs as a ``jax.lax.scan`` over segments of ``segment`` steps
    (default: the even number nearest sqrt(steps)), each under ``jax.checkpoint`` with its steps
    inlined. The reverse pass keeps one state per segment and the inputs of one segment's steps,
    and runs each forward step twice; per device that is ``steps / segment + segment`` states of
    its slab, whatever the number of devices. Inlined steps keep their inputs as the buffers
    themselves (a scan over the steps would copy them into stacked residuals), and an even
    segment hands the pair of buffers back in the order it came (an odd one makes XLA copy both
    to swap them).

    ``overlap=True``: the carried steps split so that the interior cells compute while the halos
    travel (:mod:`adjointgen.runtime.overlap`; the same bits; refused with the reason where the
    step does not allow it or a device holds fewer than 3 planes). Off by default: on one GPU the
    split costs 6-12 % of a gradient step, and whether it hides more than that on several GPUs is
    not measured yet (``benchmarks/NOTES.md`` v53).
    ``graphs``: the steps' Warp calls as CUDA graphs that Warp captures once per set of buffer
    addresses and replays without running Python (:func:`~adjointgen.runtime.jax_face.captured_calls`;
    the same kernels); None (default) on meshes of CUDA devices, where otherwise the GPU waits for
    the host's Python between calls (``benchmarks/NOTES.md`` v53).
    ``split``: for a split step (ZouHe, Regularized, extrapolation cells from a list, the rest
    without their code), each device's list of those cells, made on the host from ``bc_mask``
    where it is known when JAX traces the call (a concrete array, not a jit argument); None
    (default) on meshes of CUDA devices (on a CPU the split saves
    nothing), True also elsewhere, False never. Otherwise the whole slab runs in one launch. Where
    the masks are jit arguments, make the lists first with ``run.device_lists(bc_mask)`` (a
    concrete mask; None for a step that is not split) and pass them as ``run(...,
    listed=lists)``, a jit argument too (only their shape is fixed when JAX traces).
    """
    import jax
    from jax.sharding import PartitionSpec as P

    from adjointgen.runtime.jax_face import captured_calls, known_omega

    if steps < 1:
        raise ValueError(f"a rollout runs at least one step; got steps={steps}")
    devices = mesh.shape[axis_name]
    segment = segment or 2 * max(1, int(round(steps ** 0.5 / 2)))  # even: the pair of buffers comes back in order
    on_cuda = all(device.platform == "gpu" for device in mesh.devices.flat)
    graphs, split = _graphs(graphs, on_cuda), on_cuda if split is None else split
    exchange = Exchange(crossing, axis_name, devices, wp.JaxCallableGraphMode.WARP if graphs else wp.JaxCallableGraphMode.NONE)
    refresh = _halo_refresh(exchange)
    overlapped = _overlapped(step, exchange, overlap)

    # every step but the last runs the face's carried step (fresh adjoint, 3 arrays of traffic
    # instead of 5): the cotangent of the f_0 it returns is the adjoint of the next step's input
    # f_1, zero but at kept cells and where that step keeps data in f_1, as the carried step
    # needs; the last step's returned f_0 is the rollout's final f_1, whose cotangent is the caller's
    carried = step.carried or step  # (None where the module has no such adjoint: jax_face.carries)

    def run_steps(state, steps_in_order):
        def body(s):  # the segment's steps inlined: their residuals are the buffers themselves
            for one_step in steps_in_order:
                f_0_out, f_new = one_step(*s)
                s = (f_new, f_0_out)
            return s
        return jax.checkpoint(body)(state)

    def local(fixed, lists_given, f_0, f_1, bc_mask, missing_mask, omega, *rest):
        listed, fields = (rest[0], rest[1:]) if lists_given else (None, rest)
        # halo cells are kept cells: they read no field either, so the fields' halos are zeros;
        # omega known before tracing goes to the step as a number (no read-back per step)
        omega = fixed if fixed is not None else jax.lax.pcast(omega, axis_name, to="varying")
        constants = (_pad(bc_mask, 255), _pad(missing_mask, False), omega,
                     *({name: _pad(value, 0) for name, value in group.items()} for group in fields))
        if overlapped is None:
            middle = lambda f_0, f_1: carried(refresh(f_0), f_1, *constants, listed=listed)  # noqa: E731
        else:
            masks = EdgeMasks.of(constants[0])  # once per rollout
            middle = lambda f_0, f_1: overlapped(f_0, f_1, constants[0], masks, *constants[1:])  # noqa: E731
        state = (_pad(f_0, 0), _pad(f_1, 0))
        whole, rest = divmod(steps - 1, segment)
        if whole:
            state = jax.lax.scan(lambda s, _: (run_steps(s, (middle,) * segment), None), state, None, length=whole)[0]
        last = lambda f_0, f_1: step(refresh(f_0), f_1, *constants, listed=listed)  # noqa: E731
        state = run_steps(state, (middle,) * rest + (last,))
        return state[0][:, 1:-1], state[1][:, 1:-1]

    slab = P(None, axis_name)
    mapped: dict = {}

    def run(f_0, f_1, bc_mask, missing_mask, omega, fields=None, listed=None):
        fixed = known_omega(omega)
        lists = listed if listed is not None else _device_lists(step, bc_mask, devices) if split else None
        key = (fixed, fields is not None, lists is not None)
        if key not in mapped:
            specs = (slab, slab, slab, slab, P()) + ((P(axis_name),) if lists is not None else ()) + \
                ((slab,) if fields is not None else ())
            mapped[key] = jax.shard_map(functools.partial(local, fixed, lists is not None), mesh=mesh, in_specs=specs,
                                        out_specs=(slab, slab))
        extra = (() if lists is None else (lists,)) + (() if fields is None else (fields,))
        with captured_calls(graphs):  # the calls the steps build while JAX traces them
            return mapped[key](f_0, f_1, bc_mask, missing_mask, omega, *extra)

    run.device_lists = lambda bc_mask: _device_lists(step, bc_mask, devices)
    return run


def _graphs(graphs: bool | None, on_cuda: bool) -> bool:
    """Whether the rollout's Warp calls are Warp-captured CUDA graphs (:func:`~adjointgen.runtime.
    jax_face.captured_calls`): by default on meshes of CUDA devices; refused elsewhere."""
    if graphs and not on_cuda:
        raise RuntimeArgumentError("graphs=True needs a mesh of CUDA devices (Warp captures CUDA graphs); pass graphs=None")
    return on_cuda if graphs is None else graphs


def _device_lists(step, bc_mask, devices: int):
    """For a split step (:attr:`Manifest.listed_ids`) and a ``bc_mask`` known now (not traced): per
    device, the cells of its padded slab with the listed ids, as rows ``i, j, k`` (``i`` counted in
    the padded slab), each device's rows padded to the longest with ``0, 0, 0`` (a halo cell,
    kept: a row the listed kernels skip), stacked along axis 0 (int32); None where the step is not
    split, the mask is traced or it has no such cell."""
    import jax

    found = None if isinstance(bc_mask, jax.core.Tracer) else listed_cells(step, bc_mask)
    if found is None:
        return None
    planes = bc_mask.shape[1] // devices
    per_device = [found[found[:, 0] // planes == d] - np.array([d * planes - 1, 0, 0], dtype=np.int32)
                  for d in range(devices)]
    rows = np.zeros((devices, max(len(cells) for cells in per_device), 3), dtype=np.int32)
    for d, cells in enumerate(per_device):
        rows[d, :len(cells)] = cells
    return rows.reshape(-1, 3)


def _overlapped(step, exchange: Exchange, overlap: bool):
    """The overlapped carried step (:mod:`adjointgen.runtime.overlap`) where ``overlap`` asks for it
    (refused with the reason where the step cannot run so), else None (the plain one)."""
    if not overlap:
        return None
    reason = refusal(step)
    if reason:
        raise RuntimeArgumentError(f"overlap=True: {step.step.config.label} cannot run overlapped: {reason}; "
                                   "pass overlap=False")
    return overlapped_step(step, exchange)


def _halo_refresh(exchange: Exchange):
    """``refresh(f)``: ``f`` (a padded slab) with the crossing populations of its two halo planes
    taken from the neighbours' edge planes (:class:`~adjointgen.runtime.halos.Exchange`), as a
    ``jax.custom_vjp`` whose reverse sends the halo planes' adjoints back and adds them onto the
    neighbours' edge planes (in the optimised HLO about one whole-slab copy per checkpointed
    segment is left, where XLA's own halo updates made three to four a gradient step)."""
    import jax

    @jax.custom_vjp
    def refresh(f):
        return exchange.put(f, *exchange.receive(f))

    def refresh_fwd(f):
        return refresh(f), None

    def refresh_bwd(_, ct):
        # the halos' adjoints go back where their contents came from; the halos were
        # overwritten, so their old contents get no adjoint
        return (exchange.return_(ct, *exchange.send_back(ct)),)

    refresh.defvjp(refresh_fwd, refresh_bwd)
    return refresh


def _pad(x, value):
    """``x`` with one plane of ``value`` on each side along axis 1."""
    import jax.numpy as jnp

    widths = [(0, 0)] * x.ndim
    widths[1] = (1, 1)
    return jnp.pad(x, widths, constant_values=value)
