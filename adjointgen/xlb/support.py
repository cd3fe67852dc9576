"""Everything adjointgen needs from XLB: importing it, building its steppers, reading them back.

XLB keeps a process-wide default configuration (``xlb.init``); :func:`make_stepper` sets it for
the backend asked for, so Warp and JAX steppers of one configuration can live in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io

import numpy as np

from adjointgen import verbosity
from adjointgen.xlb import compat
from adjointgen.xlb import user
from adjointgen.config import BUILTIN_COLLISIONS, Configuration
from adjointgen.errors import ConfigurationError

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
    with verbosity.xlb_prints():  # XLB prints which JAX devices it found
        xlb.init(velocity_set=velocity_set, default_backend=compute_backend, default_precision_policy=policy)
    grid = grid_factory(grid_shape, compute_backend=compute_backend)
    forced = config.collision.startswith("Forced")
    options = {"force_vector": np.array(FORCE[: config.dim]), "forcing_scheme": "exact_difference"} if forced else {}
    user_collision = user.COLLISIONS.get(config.collision)
    collision_type = "BGK" if user_collision else config.collision.removeprefix("Forced")
    stepper = IncompressibleNavierStokesStepper(grid=grid, boundary_conditions=boundary_conditions(config, grid),
                                                collision_type=collision_type, **options)
    if user_collision is not None:
        # XLB's stepper resolves self.collision when its kernel is built (Warp) or called (JAX)
        stepper.collision = user_collision(stepper.velocity_set, stepper.precision_policy, stepper.compute_backend)
    if backend == "warp":
        compat.key_stepper_kernel(stepper)
    return stepper


#: The body force of the "Forced..." collisions (per unit volume, lattice units), along x.
FORCE = (2e-4, 0.0, 0.0)


LID_VELOCITY = 0.05
INLET_VELOCITY = 0.02
OUTLET_DENSITY = 1.0


def boundary_conditions(config: Configuration, grid) -> list:
    """The boundary conditions of ``config.boundaries`` on ``grid``:

    - ``periodic``: none;
    - ``cavity``: lid-driven cavity, an EquilibriumBC lid (rho 1, u along x) on the top face
      without its edges, and HalfwayBounceBackBC on every other boundary node;
    - ``box``: FullwayBounceBackBC on every boundary node (a closed box);
    - ``channel``: flow along x: ZouHeBC velocity inlet on the left face, ZouHeBC pressure outlet on
      the right face (both without edges), HalfwayBounceBackBC walls on every other boundary node;
    - ``outflow``: the same with a DoNothingBC outlet;
    - ``regularized``: RegularizedBC velocity inlet, RegularizedBC pressure outlet, walls;
    - ``extrapolation``: RegularizedBC velocity inlet, ExtrapolationOutflowBC outlet, walls;
    - ``obstacle``: the ``channel`` mix around a solid block in the interior (``bc_mask == 255``,
      set by :func:`prepare_fields`), its fluid neighbours halfway bounce-back cells;
    - ``bouzidi``: a periodic domain around a disc (2D) or ball (3D) of :func:`ball_cells` whose
      wall is adjointgen's interpolated ``BouzidiBounceBackBC`` (a per-link wall-distance field).
    """
    if config.boundaries == "periodic":
        return []
    from xlb.operator.boundary_condition import (DoNothingBC, EquilibriumBC, ExtrapolationOutflowBC, FullwayBounceBackBC,
                                                 HalfwayBounceBackBC, RegularizedBC, ZouHeBC)
    from xlb.operator.boundary_condition.boundary_condition_registry import boundary_condition_registry

    # XLB numbers boundary conditions per process and bakes the numbers into its Warp kernel;
    # Warp's kernel cache does not see them, so a second stepper with other numbers can run a
    # kernel compiled for the first (seen: 7.5e-2 forward error). The steppers built here for
    # generation and verification therefore always number their boundary conditions from 1.
    boundary_condition_registry.id_to_bc.clear()
    boundary_condition_registry.bc_to_id.clear()
    boundary_condition_registry.next_id = 1

    if config.boundaries in user.MIXES:
        with contextlib.redirect_stdout(io.StringIO()):  # XLB prints every registration
            return list(user.MIXES[config.boundaries](grid, config.dim))
    if config.boundaries == "bouzidi":
        from adjointgen.xlb.design import BouzidiBounceBackBC

        with contextlib.redirect_stdout(io.StringIO()):
            return [BouzidiBounceBackBC(indices=index_lists(ball_cells(grid.shape)))]
    box = grid.bounding_box_indices()
    inner = grid.bounding_box_indices(remove_edges=True)
    everything = face_cells(box.values())
    with contextlib.redirect_stdout(io.StringIO()):  # XLB prints every registration
        if config.boundaries == "box":
            return [FullwayBounceBackBC(indices=index_lists(everything))]
        if config.boundaries == "cavity":
            lid = face_cells([inner["top"]])
            velocity = (LID_VELOCITY,) + (0.0,) * (config.dim - 1)
            return [HalfwayBounceBackBC(indices=index_lists(everything - lid)), EquilibriumBC(rho=1.0, u=velocity, indices=index_lists(lid))]
        inlet, outlet = face_cells([inner["left"]]), face_cells([inner["right"]])
        walls = HalfwayBounceBackBC(indices=index_lists(everything - inlet - outlet))
        velocity = (INLET_VELOCITY,) + (0.0,) * (config.dim - 1)
        if config.boundaries == "outflow":
            return [walls, ZouHeBC("velocity", prescribed_value=velocity, indices=index_lists(inlet)),
                    DoNothingBC(indices=index_lists(outlet))]
        if config.boundaries == "extrapolation":
            return [walls, RegularizedBC("velocity", prescribed_value=velocity, indices=index_lists(inlet)),
                    ExtrapolationOutflowBC(indices=index_lists(outlet))]
        kind = RegularizedBC if config.boundaries == "regularized" else ZouHeBC
        conditions = [walls, kind("velocity", prescribed_value=velocity, indices=index_lists(inlet)),
                      kind("pressure", prescribed_value=(OUTLET_DENSITY,), indices=index_lists(outlet))]
        if config.boundaries == "obstacle":
            conditions.append(HalfwayBounceBackBC(indices=index_lists(obstacle_cells(grid.shape))))
        return conditions


def obstacle_cells(shape: tuple) -> set:
    """The cells of the ``obstacle`` mix's block: side a third of the smallest extent (at least
    one cell), a third of the way along the channel, centred across it, never on the boundary."""
    import itertools

    dim = 2 if len(shape) == 2 or shape[2] == 1 else 3
    sizes = shape[:dim]
    lengths = [max(1, min(n - 2, min(sizes) // 3)) for n in sizes]
    starts = [max(1, min(sizes[0] // 3, sizes[0] - 1 - lengths[0]))]
    starts += [1 + (sizes[a] - 2 - lengths[a]) // 2 for a in range(1, dim)]
    return set(itertools.product(*(range(s, s + n) for s, n in zip(starts, lengths))))


def face_cells(faces) -> set:
    """The cells of some of ``grid.bounding_box_indices()``'s faces, as coordinate tuples."""
    return {p for face in faces for p in zip(*(list(axis) for axis in face))}


def index_lists(cells) -> list:
    """Cells as XLB takes a boundary condition's ``indices``: one list per axis, sorted."""
    return np.array(sorted(cells)).T.tolist()


def ball_cells(shape: tuple) -> set:
    """The cells of the ``bouzidi`` mix's body: centre at the middle of the grid, radius a quarter
    of the smallest extent, at most what keeps the body's ring of wall cells one cell away from
    the domain's faces (XLB's JAX masker, unlike its Warp masker, also marks links that cross
    the domain's faces missing at wall cells there, although the domain is periodic)."""
    dim = 2 if len(shape) == 2 or shape[2] == 1 else 3
    sizes = shape[:dim]
    radius = max(0.5, min(min(sizes) / 4, (min(sizes) - 1) / 2 - 2))
    return sphere_cells(sizes, [(n - 1) / 2 for n in sizes], radius)


def sphere_cells(sizes: tuple, centre, radius: float) -> set:
    """The cells of a grid of ``sizes`` (2 or 3 extents) whose centres lie in the disc or ball."""
    import itertools

    return {cell for cell in itertools.product(*(range(n) for n in sizes))
            if sum((c - m) ** 2 for c, m in zip(cell, centre)) <= radius ** 2}


def prepare_fields(stepper, config: Configuration):
    """XLB's ``prepare_fields`` for a stepper of ``config``, then, for the ``obstacle`` mix, the
    block marked solid (``bc_mask == 255``, as XLB's mesh masker marks a body's voxels): the
    stepper kernel returns early there and the cells keep what ``f_1`` held. XLB's indices
    masker has already made the fluid cells around the block halfway bounce-back cells whose
    missing directions point into it."""
    f_0, f_1, bc_mask, missing_mask = stepper.prepare_fields()
    if config.boundaries == "obstacle":
        import warp as wp

        shape = tuple(f_0.shape[1:1 + config.dim])
        mask = bc_mask.numpy()
        for cell in obstacle_cells(shape):
            mask[(0, *cell) + (0,) * (3 - config.dim)] = 255
        bc_mask = wp.array(mask, dtype=wp.uint8, device=bc_mask.device)
    return f_0, f_1, bc_mask, missing_mask


#: Boundary conditions whose generated adjoints are verified; others are refused at runtime.
SUPPORTED_BOUNDARY_CONDITIONS = ("HalfwayBounceBackBC", "FullwayBounceBackBC", "EquilibriumBC", "DoNothingBC", "ZouHeBC",
                                 "RegularizedBC", "ExtrapolationOutflowBC")


#: Why the XLB 0.3.1 boundary conditions that are not supported are refused.
REFUSED_BOUNDARY_CONDITIONS = {
    "GradsApproximationBC": "it reads a wall-distance field that only XLB's mesh masker fills (needs_mesh_distance), "
                            "XLB 0.3.1 has no JAX version of it to check against, and its branchless form would read "
                            "every population of every neighbour at every cell; not generated yet",
}


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
                   if type(bc).__name__ not in SUPPORTED_BOUNDARY_CONDITIONS and type(bc) not in user.BOUNDARY_CONDITIONS.values()]
    if unsupported:
        reasons = "".join(f"; {name}: {REFUSED_BOUNDARY_CONDITIONS[name]}" for name in unsupported
                          if name in REFUSED_BOUNDARY_CONDITIONS)
        raise ConfigurationError(
            f"boundary condition(s) {', '.join(unsupported)} are not generated yet; this release "
            f"supports {', '.join(SUPPORTED_BOUNDARY_CONDITIONS)} (see the README's scope section){reasons}"
        )
    if getattr(stepper, "streaming_scheme", "pull") != "pull":
        raise ConfigurationError("only the pull streaming scheme exists in XLB's Warp backend")
    velocity_set = type(stepper.velocity_set).__name__
    collision = type(stepper.collision).__name__
    if collision == "ForcedCollision":
        collision = "Forced" + type(stepper.collision.collision_operator).__name__
    if collision not in BUILTIN_COLLISIONS and user.COLLISIONS.get(collision) is not type(stepper.collision):
        raise ConfigurationError(
            f"collision {collision} is not one of XLB's ({', '.join(BUILTIN_COLLISIONS)}); if it is your own "
            "XLB-style operator, decorate its class with @adjointgen.register")
    precision = stepper.precision_policy.name
    del xlb
    return Configuration(velocity_set, collision, precision)
