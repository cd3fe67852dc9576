"""adjointgen: explicit adjoint Warp kernels for XLB lattice Boltzmann steppers."""

__version__ = "0.1.0"


def differentiable(stepper, boundary_parameters: bool = False):
    """Wrap an XLB Warp stepper into a step with the same signature whose gradient flows
    through ``wp.Tape`` via generated adjoint kernels; ``boundary_parameters=True`` also gives
    gradients with respect to prescribed boundary values. See :mod:`adjointgen.runtime`."""
    from .runtime import differentiable as _differentiable

    return _differentiable(stepper, boundary_parameters)


__all__ = ["__version__", "differentiable"]
