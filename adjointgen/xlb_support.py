"""Everything adjointgen needs from XLB: importing it, building its steppers, reading them back.

XLB keeps a process-wide default configuration (``xlb.init``); :func:`make_stepper` sets it for
the backend asked for, so Warp and JAX steppers of one configuration can live in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io

from . import compat
from .config import Configuration
from .errors import ConfigurationError

XLB_VERSION_REQUIRED = "0.3.1"


def import_xlb():
    """Apply the Warp compatibility shims, then import and return ``xlb``."""
    compat.apply()
    try:
        xlb = importlib.import_module("xlb")
    except ModuleNotFoundError as exc:
        if exc.name != "xlb":
            raise
        raise ConfigurationError(
            f"XLB is not installed; adjointgen reads its operators from it: "
            f"pip install xlb=={XLB_VERSION_REQUIRED}"
        ) from None
    return xlb


def xlb_version() -> str:
    return importlib.metadata.version("xlb")


def make_stepper(config: Configuration, backend: str, grid_shape: tuple[int, ...]):
    """An XLB ``IncompressibleNavierStokesStepper`` for ``config`` on ``backend``
    (``"warp"`` or ``"jax"``), periodic, on a grid of ``grid_shape``."""
    xlb = import_xlb()
    from xlb.compute_backend import ComputeBackend
    from xlb.grid import grid_factory
    from xlb.operator.stepper import IncompressibleNavierStokesStepper
    from xlb.precision_policy import PrecisionPolicy

    if len(grid_shape) != config.dim:
        raise ConfigurationError(
            f"{config.label} is {config.dim}D but the grid shape {grid_shape} has {len(grid_shape)} axes"
        )
    compute_backend = {"warp": ComputeBackend.WARP, "jax": ComputeBackend.JAX}[backend]
    policy = getattr(PrecisionPolicy, config.precision)
    velocity_set = getattr(xlb.velocity_set, config.velocity_set)(
        precision_policy=policy, compute_backend=compute_backend
    )
    xlb.init(velocity_set=velocity_set, default_backend=compute_backend, default_precision_policy=policy)
    grid = grid_factory(grid_shape, compute_backend=compute_backend)
    return IncompressibleNavierStokesStepper(grid=grid, boundary_conditions=boundary_conditions(config, grid),
                                             collision_type=config.collision)


LID_VELOCITY = 0.05


def boundary_conditions(config: Configuration, grid) -> list:
    """The boundary conditions of ``config.boundaries`` on ``grid``:

    - ``periodic``: none;
    - ``cavity``: lid-driven cavity, an EquilibriumBC lid (rho 1, u along x) on the top face
      without its edges, and HalfwayBounceBackBC on every other boundary node;
    - ``box``: FullwayBounceBackBC on every boundary node (a closed box).
    """
    if config.boundaries == "periodic":
        return []
    import numpy as np
    from xlb.operator.boundary_condition import EquilibriumBC, FullwayBounceBackBC, HalfwayBounceBackBC
    from xlb.operator.boundary_condition.boundary_condition_registry import boundary_condition_registry

    # XLB numbers boundary conditions per process and bakes the numbers into its Warp kernel;
    # Warp's kernel cache does not see them, so a second stepper with other numbers can run a
    # kernel compiled for the first (seen: 7.5e-2 forward error). The steppers built here for
    # generation and verification therefore always number their boundary conditions from 1.
    boundary_condition_registry.id_to_bc.clear()
    boundary_condition_registry.bc_to_id.clear()
    boundary_condition_registry.next_id = 1

    box = grid.bounding_box_indices()
    if config.boundaries == "box":
        points = {p for name in box for p in zip(*(list(axis) for axis in box[name]))}
        with contextlib.redirect_stdout(io.StringIO()):  # XLB prints every registration
            return [FullwayBounceBackBC(indices=np.array(sorted(points)).T.tolist())]
    lid = [list(axis) for axis in grid.bounding_box_indices(remove_edges=True)["top"]]
    lid_points = set(zip(*lid))
    points = {p for name in box for p in zip(*(list(axis) for axis in box[name]))} - lid_points
    walls = np.array(sorted(points)).T.tolist()
    velocity = (LID_VELOCITY,) + (0.0,) * (config.dim - 1)
    with contextlib.redirect_stdout(io.StringIO()):  # XLB prints every registration
        return [HalfwayBounceBackBC(indices=walls), EquilibriumBC(rho=1.0, u=velocity, indices=lid)]


#: Boundary conditions whose generated adjoints are verified; others are refused at runtime.
SUPPORTED_BOUNDARY_CONDITIONS = ("HalfwayBounceBackBC", "FullwayBounceBackBC", "EquilibriumBC")


def configuration_of(stepper) -> Configuration:
    """Read the :class:`Configuration` of an XLB stepper built for the Warp backend."""
    xlb = import_xlb()
    from xlb.compute_backend import ComputeBackend
    from xlb.operator.stepper import IncompressibleNavierStokesStepper

    if not isinstance(stepper, IncompressibleNavierStokesStepper):
        raise ConfigurationError(
            f"adjointgen.differentiable expects an xlb IncompressibleNavierStokesStepper, got {type(stepper).__name__}"
        )
    if stepper.compute_backend != ComputeBackend.WARP:
        raise ConfigurationError(
            "adjointgen.differentiable needs a stepper built for the Warp backend "
            f"(compute_backend=ComputeBackend.WARP); this one uses {stepper.compute_backend}"
        )
    unsupported = [type(bc).__name__ for bc in stepper.boundary_conditions
                   if type(bc).__name__ not in SUPPORTED_BOUNDARY_CONDITIONS]
    if unsupported:
        raise ConfigurationError(
            f"boundary condition(s) {', '.join(unsupported)} are not generated yet; this release "
            f"supports {', '.join(SUPPORTED_BOUNDARY_CONDITIONS)} (see the README's scope section)"
        )
    if getattr(stepper, "streaming_scheme", "pull") != "pull":
        raise ConfigurationError("only the pull streaming scheme exists in XLB's Warp backend")
    velocity_set = type(stepper.velocity_set).__name__
    collision = type(stepper.collision).__name__
    precision = stepper.precision_policy.name
    del xlb
    return Configuration(velocity_set, collision, precision)
