"""The PyTorch face of a generated step: XLB's call, ``(f_0, f_1, bc_mask, missing_mask, omega,
timestep) -> (f_0_new, f_1_new)``, as a ``torch.autograd.Function`` whose forward launches the
generated Warp forward kernel (:meth:`DifferentiableStep.forward`) and whose backward launches the
generated adjoint (:meth:`DifferentiableStep.adjoint`), on tensors shared with Warp without copies
(``wp.from_torch``; CPU and CUDA tensors, on PyTorch's current CUDA stream).

Guarantees, as for the JAX face: the caller's tensors are never modified (the step runs on clones;
when the step leaves ``f_0`` alone, the returned ``f_0_new`` is ``f_0`` itself, seen through
autograd); the backward needs only the step's inputs, which autograd saves (an in-place change to
them afterwards is reported by PyTorch); ``omega`` is a float or a 0-d / one-element tensor, with a
gradient when it requires one; ``bc_mask`` and ``missing_mask`` (tensors or Warp arrays) get none.
Tensors use the Warp layout, ``(q, nx, ny, nz)`` with ``nz = 1`` in 2D, in the step's storage dtype.

PyTorch is an optional dependency (``pip install adjointgen[torch]``), imported on first use.
"""

from __future__ import annotations

import contextlib
import functools

import warp as wp

from adjointgen.errors import RuntimeArgumentError


def _torch():
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise RuntimeArgumentError("the PyTorch face needs PyTorch, which is not installed: "
                                   "pip install 'adjointgen[torch]' (or any torch >= 2.4)") from None
    return torch


def torch_step(step):
    """``step`` (a :func:`adjointgen.differentiable` step, or an XLB Warp stepper) as a PyTorch
    function ``(f_0, f_1, bc_mask, missing_mask, omega, timestep=0) -> (f_0_new, f_1_new)``
    (see the module docstring)."""
    from adjointgen.runtime.step import DifferentiableStep, differentiable

    _torch()
    step = step if isinstance(step, DifferentiableStep) else differentiable(step)
    function = _function_class()

    def apply(f_0, f_1, bc_mask, missing_mask, omega, timestep: int = 0):
        return function.apply(step, f_0, f_1, bc_mask, missing_mask, omega, int(timestep))

    apply.step = step
    apply.writes_f_0 = step.manifest.writes_f_0  # False: f_0_new is f_0, passed through
    return apply


def _warp(tensor_or_array, name: str):
    """A Warp array sharing ``tensor_or_array``'s memory (Warp arrays are taken as they are)."""
    if isinstance(tensor_or_array, wp.array):
        return tensor_or_array
    torch = _torch()
    if not isinstance(tensor_or_array, torch.Tensor):
        raise RuntimeArgumentError(f"{name} must be a torch tensor (or a Warp array for the masks), got {type(tensor_or_array).__name__}")
    if not tensor_or_array.is_contiguous():
        raise RuntimeArgumentError(f"{name} must be contiguous (Warp shares its memory): pass {name}.contiguous()")
    return wp.from_torch(tensor_or_array.detach())


def _omega_value(omega) -> float:
    torch = _torch()
    if isinstance(omega, torch.Tensor):
        if omega.numel() != 1:
            raise RuntimeArgumentError(f"omega must be a float or a tensor with one element; got shape {tuple(omega.shape)}")
        return float(omega.detach().reshape(()).item())
    return float(omega)


def _stream(tensor):
    """Warp launches on PyTorch's current stream of the tensor's CUDA device (nothing on a CPU)."""
    if tensor.is_cuda:
        return wp.ScopedStream(wp.stream_from_torch(tensor.device))
    return contextlib.nullcontext()


@contextlib.contextmanager
def _grid_launches(step, masks_are_tensors: bool):
    """While the masks are tensors (new Warp views at every call), the step's split and gather
    kernels run without lists (a split step's listed cells in its grid parts, ``split_grid``):
    their lists are read back once per mask array, which would then be once per call (a device
    read-back and a host scan of the mask). Masks passed as Warp arrays keep them."""
    if not masks_are_tensors:
        yield
        return
    saved = step.split_listed, step.gather_listed
    step.split_listed = step.gather_listed = False
    try:
        yield
    finally:
        step.split_listed, step.gather_listed = saved


@functools.cache
def _function_class():
    torch = _torch()
    from torch.autograd.function import once_differentiable

    class WarpStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, step, f_0, f_1, bc_mask, missing_mask, omega, timestep):
            ctx.step, ctx.timestep, ctx.omega = step, timestep, _omega_value(omega)
            ctx.masks = (_warp(bc_mask, "bc_mask"), _warp(missing_mask, "missing_mask"))
            ctx.masks_are_tensors = not isinstance(bc_mask, wp.array)
            writes_f_0 = step.manifest.writes_f_0
            new_0 = f_0.detach().clone(memory_format=torch.contiguous_format) if writes_f_0 else f_0
            new_1 = f_1.detach().clone(memory_format=torch.contiguous_format)
            with _stream(new_1), _grid_launches(step, ctx.masks_are_tensors):
                step.forward(_warp(new_0, "f_0"), _warp(new_1, "f_1"), *ctx.masks, ctx.omega, timestep)
            ctx.save_for_backward(f_0, f_1)
            ctx.omega_meta = (omega.shape, omega.dtype) if isinstance(omega, torch.Tensor) else None
            return new_0, new_1

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_0, grad_1):
            f_0, f_1 = ctx.saved_tensors
            adj = [torch.zeros_like(f, memory_format=torch.contiguous_format) if g is None
                   else g.to(f.dtype).clone(memory_format=torch.contiguous_format) for f, g in ((f_0, grad_0), (f_1, grad_1))]
            adj_omega = None
            if ctx.omega_meta is not None and ctx.needs_input_grad[5]:
                adj_omega = torch.zeros(1, dtype=torch.float64 if ctx.step.compute_dtype == wp.float64 else torch.float32,
                                        device=f_0.device)
            with _stream(f_0), _grid_launches(ctx.step, ctx.masks_are_tensors):
                ctx.step.adjoint(_warp(f_0, "f_0"), _warp(f_1, "f_1"), *ctx.masks, ctx.omega, ctx.timestep,
                                 _warp(adj[0], "grad of f_0_new"), _warp(adj[1], "grad of f_1_new"),
                                 None if adj_omega is None else wp.from_torch(adj_omega))
            grad_omega = None if adj_omega is None else adj_omega.reshape(ctx.omega_meta[0]).to(ctx.omega_meta[1])
            return None, adj[0], adj[1], None, None, grad_omega, None

    return WarpStep
