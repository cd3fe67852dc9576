"""Topology optimization of a flow domain: a double pipe, solved with MMA under a volume constraint.

The problem is Borrvall and Petersson's double pipe (Int. J. Numer. Meth. Fluids 41, 2003): a
box with two inlets on the left and two outlets on the right, each 1/6 of the height, centred at
1/4 and 3/4 of it; fluid may fill at most a fraction V = 1/3 of the box; where should it go so
that pushing the inflow through costs the least pressure? Chosen over the diffuser and the bend
because its answer is a question of topology (two pipes, or a merged channel?), which a shape
optimization of two pipes could not answer. The box is 2 long, not the paper's 1.5: at 1.5 and
this resolution, a hand-drawn merged layout did no better than two straight pipes (pressure drop
1.006 times theirs), at 2 it needs 0.80 of theirs. Unlike the paper, which prescribes the
outflow too, the outlets here are pressure conditions, so the flow may choose its outlet.

The flow: XLB's Warp stepper, D2Q9 (``--dim 3``: D3Q19, a duct with square openings), FP32
(``--fp64``: FP64), with adjointgen's ``PorousBGK`` collision (BGK, then partial bounce-back of
a fraction gamma per cell: 0 fluid, 1 solid). Inlets: ZouHe velocity conditions, a parabolic
profile (peak ``--inlet-velocity``); outlets: ZouHe pressure conditions (density 1); every
other boundary cell a halfway bounce-back wall. From rest, ``--steps`` steps at omega 1.3
(viscosity 0.09; Reynolds number about 1 at the inlets: Stokes flow, as in the paper).

The objective: the resistance R = (pressure drop) / Q on the last state, the pressure drop the
mean of rho/3 over the inlet cells minus the outlets' 1/3, Q the mass flux through the outlets
(kept smoothly above zero: eps log(1 + exp(Q / eps)), eps 1 % of the prescribed inflow). At
steady state Q equals the inflow, R is the pressure drop over a constant, and the dissipated
power is R Q^2. Why not the pressure drop alone: a rollout from rest rewards designs that store
the inflow, and the optimizer found them: closed pockets at the inlets, nothing reaching the
outlets, whose pressure was still rising but at step T lower than a through-flow's (1.6 times
the straight pipes' pressure drop at T, 88 % more at 2T). Divided by Q, a design that lets
nothing through costs much. Normalised by the starting design's value.

The design: one variable x per design cell (every cell but the openings, which stay fluid; 1
solid), smoothed by a linear hat (cone) filter of radius r cells (scipy.ndimage.convolve),
projected by a smoothed Heaviside (tanh, threshold 1/2, sharpness beta) to s, then given to the
collision as gamma = s q / (q + 1 - s), Borrvall and Petersson's interpolation (their
parameter q; 0 -> 0, 1 -> 1). Constraint: fluid fraction mean(1 - s) <= V. Stages (beta, q):
(1, 0.3), (2, 0.3), (4, 0.6), (8, 1), (16, 2), (32, 4), 15 evaluations each, each a fresh nlopt
MMA run (``nlopt.LD_MMA``, Svanberg's method) from where the last one stopped. Why the
interpolation: with gamma = s itself a uniform start blocks the flow (with gamma = 0.6
everywhere, no flow at all, exactly zero in FP32, had reached the outlets after 1000 steps);
q = 0.3 gives the uniform start (s = 2/3) gamma = 0.32, which passes some. Raising q with beta
takes away the advantage of gray cells, which pass flow while counting as partly solid.

The gradient is exact: one ``adjointgen.checkpointed_rollout`` and one ``backward(adj_f_0=dR/df,
adj_fields={"porosity": g})`` per evaluation give dR/d gamma, then the chain rule through the
interpolation and the projection (their derivatives) and the filter (its adjoint).

Writes into --out (file names prefixed topology_optimization_): design.png (the final s and the
speed of its flow; 3D: the mid-plane), history.png (objective, fluid fraction and grayness
mean 4 s (1 - s) per evaluation), results.json (settings, per-evaluation history, final numbers,
timings: one forward rollout of --steps and one design iteration, after compilation, each
between wp.synchronize() calls); with --fields also fields.npz (the final s and speed), from
which --figures-from draws the figures on another machine.

CPU, 2D (a few minutes):   python examples/topology_optimization.py
GPU, 3D duct:              python examples/topology_optimization.py --dim 3 --grid 64x32x32
"""

from __future__ import annotations

import argparse
import json
import time
import types
from pathlib import Path

import numpy as np
import warp as wp
from scipy import ndimage, special

import adjointgen
from adjointgen.config import Configuration
from adjointgen.xlb.support import make_stepper, prepare_fields
from adjointgen.xlb.user import register_mix

MIX = "topopt_double_pipe"
PREFIX = "topology_optimization_"


# ----------------------------------------------------------------------------- geometry
def pipe_bands(n: int) -> np.ndarray:
    """Cells (of n across the box) whose centres lie in one of the two openings of the double
    pipe, heights [1/6, 1/3] and [2/3, 5/6]."""
    centre = (np.arange(n) + 0.5) / n
    return ((centre >= 1 / 6) & (centre <= 1 / 3)) | ((centre >= 2 / 3) & (centre <= 5 / 6))


def z_band(shape: tuple) -> np.ndarray:
    """3D: the cells across z of an opening, a band as high as the openings are in y, centred."""
    return np.abs(np.arange(shape[2]) + 0.5 - shape[2] / 2) <= shape[1] / 12


def openings(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (grid shape) of the inlet cells (left face) and the outlet cells (right face).
    3D: the openings are squares, the 2D bands in y times a band of the same height centred in z."""
    across = pipe_bands(shape[1])
    if len(shape) == 3:
        across = across[:, None] & z_band(shape)[None, :]
    inlet, outlet = np.zeros(shape, bool), np.zeros(shape, bool)
    inlet[0], outlet[-1] = across, across
    return inlet, outlet


def parabola(inside: np.ndarray) -> np.ndarray:
    """Per cell of a 1D mask: 4 s (1 - s) across each run of True cells, s the cell centre's
    position in its run (0 at one edge, 1 at the other)."""
    values = np.zeros(inside.size)
    cells = np.flatnonzero(inside)
    for run in np.split(cells, np.flatnonzero(np.diff(cells) > 1) + 1):
        s = (run - run[0] + 0.5) / run.size
        values[run] = 4.0 * s * (1.0 - s)
    return values


def inlet_profile(shape: tuple, peak: float) -> np.ndarray:
    """The prescribed inflow velocity (grid shape, nonzero on the inlet cells): parabolic across
    each opening (3D: the product of parabolas in y and z), ``peak`` at its centre."""
    across = parabola(pipe_bands(shape[1]))
    if len(shape) == 3:
        across = across[:, None] * parabola(z_band(shape))[None, :]
    profile = np.zeros(shape)
    profile[0] = peak * across
    return profile


def _indices(mask: np.ndarray) -> list:
    return [list(axis) for axis in np.nonzero(mask)]


@register_mix(MIX)
def double_pipe(grid, dim):
    """ZouHe velocity conditions at the inlets (Flow writes the profile into f_1, where XLB keeps
    ZouHe's prescribed values), ZouHe pressure conditions (density 1) at the outlets, halfway
    bounce-back on every other boundary cell."""
    from xlb.operator.boundary_condition import HalfwayBounceBackBC, ZouHeBC

    shape = tuple(grid.shape[:dim])
    inlet, outlet = openings(shape)
    boundary = np.ones(shape, bool)
    boundary[(slice(1, -1),) * dim] = False
    normal = (1.0,) + (0.0,) * (dim - 1)
    return [HalfwayBounceBackBC(indices=_indices(boundary & ~inlet & ~outlet)),
            ZouHeBC("velocity", prescribed_value=normal, indices=_indices(inlet)),
            ZouHeBC("pressure", prescribed_value=(1.0,), indices=_indices(outlet))]


# ----------------------------------------------------------------------------- the flow
class Flow:
    """The double pipe's LBM: stepper, design field, one rollout and its cost (the resistance:
    pressure drop per unit of outflow), with its gradient with respect to the porosity."""

    def __init__(self, shape: tuple, fp64: bool, steps: int, snapshots: int, omega: float, inlet_velocity: float):
        self.shape, self.steps, self.snapshots, self.omega = shape, steps, snapshots, omega
        precision = "FP64FP64" if fp64 else "FP32FP32"
        self.config = Configuration("D2Q9" if len(shape) == 2 else "D3Q19", "PorousBGK", precision, MIX)
        self.stepper = make_stepper(self.config, "warp", shape)
        self.dtype = np.float64 if fp64 else np.float32
        self.field_shape = (1, *shape) + (1,) * (3 - len(shape))  # Warp layout (1, nx, ny, nz)
        self.gamma = wp.zeros(self.field_shape, dtype=wp.float64 if fp64 else wp.float32)
        self.step = adjointgen.differentiable(self.stepper, fields={"porosity": self.gamma})
        self.f_0, self.f_1, self.bc_mask, self.missing_mask = prepare_fields(self.stepper, self.config)
        self.inlet, self.outlet = openings(shape)
        inlet = self.inlet.reshape(self.field_shape[1:])
        aux = self.f_1.numpy()
        aux[0][inlet] = inlet_profile(shape, inlet_velocity).reshape(inlet.shape)[inlet]
        self.f_1.assign(aux)
        self.c = np.asarray(self.stepper.velocity_set._c, dtype=np.float64)  # (d, q)
        # the three measures are linear in the final populations f: sum(weights * f)
        # pressure drop: mean over the inlet cells of rho / 3, minus the outlets' 1/3
        self.drop_weights = np.broadcast_to(inlet[None] / (3.0 * inlet.sum()), (self.c.shape[1], *inlet.shape))
        # inflow and outflow: the mass flux sum(rho u_x) = sum_l c_xl f_l over the inlet / outlet cells
        self.inflow_weights = self.c[0][:, None, None, None] * inlet[None]
        self.outflow_weights = self.c[0][:, None, None, None] * self.outlet.reshape(inlet.shape)[None]
        self.floor = 0.01 * float(np.sum(inlet_profile(shape, inlet_velocity)))  # eps of cost_of

    def rollout(self, gamma: np.ndarray, steps: int | None = None):
        self.gamma.assign(gamma.reshape(self.field_shape).astype(self.dtype))
        return adjointgen.checkpointed_rollout(self.step, self.f_0, self.f_1, self.bc_mask, self.missing_mask, self.omega,
                                               steps or self.steps, self.snapshots, progress=False)

    def measures(self, f: np.ndarray) -> dict:
        """Pressure drop, inflow and outflow of final populations f."""
        drop, inflow, outflow = (float(np.sum(w * f)) for w in (self.drop_weights, self.inflow_weights, self.outflow_weights))
        return {"pressure_drop": drop - 1.0 / 3.0, "inflow": inflow, "outflow": outflow}

    def cost_of(self, f: np.ndarray) -> tuple[float, np.ndarray]:
        """The resistance drop / Q of final populations f, and its gradient d / d f. Q is the outflow,
        smoothly kept above zero (eps * log(1 + exp(outflow / eps)), eps 1 % of the nominal inflow)
        so that a design that lets nothing through yet costs much, not a division by zero."""
        m, eps = self.measures(f), self.floor
        flow = eps * np.logaddexp(0.0, m["outflow"] / eps)
        d_flow = special.expit(m["outflow"] / eps) * self.outflow_weights
        return m["pressure_drop"] / flow, self.drop_weights / flow - m["pressure_drop"] / flow**2 * d_flow

    def cost(self, gamma: np.ndarray, steps: int | None = None) -> tuple[float, np.ndarray]:
        """The cost after ``steps`` (default: the flow's) from rest for the porosity gamma (grid
        shape), and the final populations."""
        f = self.rollout(gamma, steps).f_0.numpy().astype(np.float64)
        return self.cost_of(f)[0], f

    def cost_and_gradient(self, gamma: np.ndarray) -> tuple[float, np.ndarray]:
        """The cost and d cost / d gamma (grid shape): one rollout, one backward pass."""
        result = self.rollout(gamma)
        value, adj = self.cost_of(result.f_0.numpy().astype(np.float64))
        gradient = wp.zeros_like(self.gamma)
        result.backward(adj_f_0=wp.array(adj.astype(self.dtype), device=result.f_0.device), adj_fields={"porosity": gradient})
        return value, gradient.numpy().reshape(self.shape).astype(np.float64)

    def forward_only(self, gamma: np.ndarray, steps: int):
        """XLB's loop, one generated forward step per call, outside any tape (a second timing
        reference: a rollout's forward sweep packs its launches, on a GPU into CUDA graphs)."""
        self.gamma.assign(gamma.reshape(self.field_shape).astype(self.dtype))
        f_0, f_1 = wp.clone(self.f_0), wp.clone(self.f_1)
        for t in range(steps):
            f_0, f_1 = self.step(f_0, f_1, self.bc_mask, self.missing_mask, self.omega, t)
            f_0, f_1 = f_1, f_0
        return f_0

    def speed(self, f: np.ndarray) -> np.ndarray:
        rho = f.sum(axis=0)
        return np.sqrt((np.tensordot(self.c, f, axes=(1, 0)) ** 2).sum(axis=0)).reshape(self.shape) / rho.reshape(self.shape)


# ----------------------------------------------------------------------------- the design map
class Filter:
    """Linear hat (cone) filter of radius r cells, weights max(0, r - distance), normalised by
    the weights that fall inside the grid (Bruns & Tortorelli 2001). scipy.ndimage.convolve does
    the sums (zero outside the grid); the kernel is symmetric, so the adjoint is the same
    convolution applied after the normalisation instead of before."""

    def __init__(self, shape: tuple, radius: float):
        reach = max(int(np.ceil(radius)) - 1, 0)
        offsets = np.mgrid[(slice(-reach, reach + 1),) * len(shape)]
        self.kernel = np.maximum(0.0, radius - np.sqrt((offsets**2).sum(axis=0)))
        self.weights = self._sum(np.ones(shape))

    def _sum(self, x: np.ndarray) -> np.ndarray:
        return ndimage.convolve(x, self.kernel, mode="constant", cval=0.0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._sum(x) / self.weights

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return self._sum(y / self.weights)


def project(x: np.ndarray, beta: float, eta: float = 0.5) -> np.ndarray:
    """Smoothed Heaviside (Wang, Lazarov & Sigmund 2011): 0 -> 0, 1 -> 1, steeper with beta."""
    low, high = np.tanh(beta * eta), np.tanh(beta * (1.0 - eta))
    return (low + np.tanh(beta * (x - eta))) / (low + high)


def project_derivative(x: np.ndarray, beta: float, eta: float = 0.5) -> np.ndarray:
    low, high = np.tanh(beta * eta), np.tanh(beta * (1.0 - eta))
    return beta * (1.0 - np.tanh(beta * (x - eta)) ** 2) / (low + high)


def interpolate(s: np.ndarray, q: float) -> np.ndarray:
    """Porosity gamma of a projected solid fraction s: Borrvall and Petersson's interpolation of
    the Brinkman friction, alpha(s) / alpha_max = s q / (q + 1 - s) (their q; small q: gray cells
    pass flow, 0 -> 0 and 1 -> 1 whatever q is)."""
    return s * q / (q + 1.0 - s)


def interpolate_derivative(s: np.ndarray, q: float) -> np.ndarray:
    return q * (q + 1.0) / (q + 1.0 - s) ** 2


class Problem:
    """Design variables x (one per design cell, 1 solid) -> filtered -> projected solid fraction
    s -> porosity gamma -> flow.

    ``objective`` and ``volume_constraint`` have nlopt's signature f(x, grad): they return the
    value and fill ``grad`` in place when it is not empty."""

    def __init__(self, flow: Flow, radius: float, volume: float):
        self.flow, self.volume = flow, volume
        self.free = ~(flow.inlet | flow.outlet)  # the design cells: all but the openings (fluid)
        self.filter = Filter(flow.shape, radius)
        self.beta, self.q, self.scale, self.best, self.stage_scale = 1.0, 1.0, 1.0, None, None
        self._solid = (None, None)
        self.log: list[dict] = []
        self.derivative = project_derivative  # replaced by the tests' deliberately wrong variants

    def solid(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s, the filtered field) of the design vector x, on the grid; s = 0 at the openings.
        The last answer is kept: nlopt asks for the objective and the constraint at the same x."""
        key = (self.beta, x.tobytes())
        if self._solid[0] != key:
            full = np.zeros(self.flow.shape)
            full[self.free] = x
            filtered = self.filter.apply(full)
            self._solid = (key, (np.where(self.free, project(filtered, self.beta), 0.0), filtered))
        return self._solid[1]

    def porosity(self, x: np.ndarray) -> np.ndarray:
        return interpolate(self.solid(x)[0], self.q)

    def pull_back(self, filtered: np.ndarray, d_s: np.ndarray) -> np.ndarray:
        """d / d x from d / d s: the projection's derivative, then the filter's adjoint."""
        through_projection = np.where(self.free, self.derivative(filtered, self.beta) * d_s, 0.0)
        return self.filter.adjoint(through_projection)[self.free]

    def value(self, x: np.ndarray) -> float:
        """The objective alone (a forward rollout): the flow's cost relative to the start's."""
        return self.flow.cost(self.porosity(x))[0] / self.scale

    def value_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        s, filtered = self.solid(x)
        cost, d_gamma = self.flow.cost_and_gradient(interpolate(s, self.q))
        return cost / self.scale, self.pull_back(filtered, d_gamma * interpolate_derivative(s, self.q) / self.scale)

    def fluid_fraction(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """mean(1 - s) over the design cells, and its gradient."""
        s, filtered = self.solid(x)
        count = self.free.sum()
        return float((1.0 - s)[self.free].sum() / count), self.pull_back(filtered, -np.ones(self.flow.shape) / count)

    def grayness(self, x: np.ndarray) -> float:
        s = self.solid(x)[0][self.free]
        return float(np.mean(4.0 * s * (1.0 - s)))

    def objective(self, x: np.ndarray, grad: np.ndarray) -> float:
        """For MMA: the objective divided by its value at the stage's first evaluation (each stage
        starts at 1, whatever beta and q have done to the scale); the log keeps the objective."""
        start = time.perf_counter()
        value, gradient = self.value_and_gradient(x)
        wp.synchronize()
        self.stage_scale = self.stage_scale or value
        if grad.size:
            grad[:] = gradient / self.stage_scale
        self.log.append({"evaluation": len(self.log), "beta": self.beta, "q": self.q, "objective": value,
                         "fluid_fraction": self.fluid_fraction(x)[0], "grayness": self.grayness(x), "seconds": time.perf_counter() - start})
        return value / self.stage_scale

    def volume_constraint(self, x: np.ndarray, grad: np.ndarray) -> float:
        fraction, gradient = self.fluid_fraction(x)
        if grad.size:
            grad[:] = gradient
        return fraction - self.volume

    def uniform_start(self) -> np.ndarray:
        """The uniform design whose projected fluid fraction is V at the current beta."""
        from scipy.optimize import brentq

        n = int(self.free.sum())
        level = brentq(lambda a: self.fluid_fraction(np.full(n, a))[0] - self.volume, 0.0, 1.0, xtol=1e-12)
        return np.full(n, level)


# ----------------------------------------------------------------------------- MMA
def optimise(problem: Problem, stages: list[tuple[float, float, int]], x: np.ndarray, verbose: bool = True) -> np.ndarray:
    """nlopt's MMA with continuation: one run per stage (beta, q, evaluations), each from where
    the last one ended."""
    import nlopt

    for beta, q, budget in stages:
        problem.beta, problem.q, problem.best, problem.stage_scale = beta, q, None, None
        opt = nlopt.opt(nlopt.LD_MMA, x.size)
        opt.set_lower_bounds(0.0)
        opt.set_upper_bounds(1.0)
        opt.set_min_objective(_tracking(problem, verbose))
        opt.add_inequality_constraint(problem.volume_constraint, VOLUME_TOLERANCE)
        opt.set_maxeval(budget)
        try:
            x = opt.optimize(x)
        except nlopt.RoundoffLimited:  # MMA stopped early; its answer is the best feasible design it evaluated
            x = problem.best[1] if problem.best is not None else x
    return x


VOLUME_TOLERANCE = 1e-6  # nlopt's tolerance on the fluid-fraction constraint


def _tracking(problem: Problem, verbose: bool):
    """The objective for nlopt: evaluates, keeps the best feasible design of this beta, prints a line."""
    def objective(x, grad):
        value = problem.objective(x, grad)
        row = problem.log[-1]
        if row["fluid_fraction"] <= problem.volume + VOLUME_TOLERANCE and (problem.best is None or value < problem.best[0]):
            problem.best = (value, x.copy())
        if verbose:
            print(f"{row['evaluation']:4d}  beta {row['beta']:4g}  q {row['q']:4g}  objective {row['objective']:.4e}  "
                  f"fluid {row['fluid_fraction']:.4f}  grayness {row['grayness']:.4f}  {row['seconds']:.2f} s", flush=True)
        return value

    return objective


# ----------------------------------------------------------------------------- main
def stage_budgets(iterations: int, stages: int) -> list[int]:
    """Split the evaluations over the beta stages as evenly as possible (earlier stages get the rest)."""
    return [len(part) for part in np.array_split(np.arange(iterations), stages)]


def timed(function, *args):
    wp.synchronize()
    start = time.perf_counter()
    result = function(*args)
    wp.synchronize()
    return result, time.perf_counter() - start


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("--grid", help="NXxNY or NXxNYxNZ (default 96x48, 3D 64x32x32: length 2)")
    parser.add_argument("--steps", type=int, default=1500, help="LBM steps per rollout (from rest)")
    parser.add_argument("--snapshots", type=int, default=64, help="states a rollout stores (binomial checkpointing)")
    parser.add_argument("--iterations", type=int, default=90, help="MMA evaluations in all, spread over the beta stages")
    parser.add_argument("--betas", default="1,2,4,8,16,32", help="the projection sharpness of each stage")
    parser.add_argument("--volume", type=float, default=1 / 3, help="largest fluid fraction V")
    parser.add_argument("--radius", type=float, default=4.0, help="filter radius in cells")
    parser.add_argument("--qs", default="0.3,0.3,0.6,1,2,4", help="Borrvall-Petersson's q of each stage")
    parser.add_argument("--omega", type=float, default=1.3, help="BGK relaxation rate")
    parser.add_argument("--inlet-velocity", type=float, default=0.02, help="peak of the parabolic inflow profile")
    parser.add_argument("--fp64", action="store_true", help="FP64FP64 instead of FP32FP32")
    parser.add_argument("--quiet", action="store_true", help="no line per evaluation")
    parser.add_argument("--no-figures", action="store_true", help="results.json only (a machine without matplotlib)")
    parser.add_argument("--out", default="examples/figures")
    parser.add_argument("--fields", action="store_true", help="also write the final design and speed (fields.npz)")
    parser.add_argument("--figures-from", metavar="DIR",
                        help="only draw the figures, into --out, from DIR's results.json and fields.npz (a run elsewhere)")
    args = parser.parse_args(argv)
    args.grid = args.grid or ("96x48" if args.dim == 2 else "64x32x32")
    args.shape = tuple(int(n) for n in args.grid.split("x"))
    if len(args.shape) != args.dim:
        parser.error(f"--grid {args.grid} is not {args.dim}D")
    betas, qs = ([float(v) for v in text.split(",")] for text in (args.betas, args.qs))
    if len(betas) != len(qs):
        parser.error("--betas and --qs need one value per stage each")
    args.stages = list(zip(betas, qs, stage_budgets(args.iterations, len(betas))))
    return args


def figures_from(run: Path, out: Path) -> dict:
    """The figures of a run made with ``--fields`` (e.g. on a GPU machine without matplotlib)."""
    report = json.loads((run / f"{PREFIX}results.json").read_text())
    fields = np.load(run / f"{PREFIX}fields.npz")
    problem = types.SimpleNamespace(final_solid=fields["solid"], final_speed=fields["speed"],
                                    volume=report["settings"]["volume"])
    out.mkdir(parents=True, exist_ok=True)
    plot(out, problem, None, report)
    return report


def main(argv=None):
    args = parse(argv)
    if args.figures_from:
        return figures_from(Path(args.figures_from), Path(args.out))
    adjointgen.quiet()
    start = time.perf_counter()
    flow = Flow(args.shape, args.fp64, args.steps, args.snapshots, args.omega, args.inlet_velocity)
    problem = Problem(flow, args.radius, args.volume)
    problem.beta, problem.q = args.stages[0][:2]
    x_start = problem.uniform_start()
    # the starting design's cost: the normalisation, and (first gradient) the kernels' compilation
    (cost_start, _), first_evaluation_s = timed(flow.cost_and_gradient, problem.porosity(x_start))
    problem.scale = cost_start
    _, forward_s = timed(flow.rollout, problem.porosity(x_start))  # the forward sweep alone
    _, loop_s = timed(flow.forward_only, problem.porosity(x_start), args.steps)
    setup_s = time.perf_counter() - start

    optimisation_start = time.perf_counter()
    x = optimise(problem, args.stages, x_start, not args.quiet)
    optimisation_s = time.perf_counter() - optimisation_start
    report = summary(args, problem, x)
    evaluations = len(problem.log)
    report["timing"] = {"setup_s": setup_s, "first_gradient_s_with_compilation": first_evaluation_s,
                        "forward_rollout_s": forward_s, "forward_step_loop_s": loop_s, "optimisation_s": optimisation_s,
                        "iteration_s": optimisation_s / evaluations,
                        "evaluation_s_median": float(np.median([row["seconds"] for row in problem.log])),
                        "iteration_over_forward": optimisation_s / evaluations / forward_s,
                        "wall_s": time.perf_counter() - start, "device": str(wp.get_device())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        plot(out, problem, x, report)
    if args.fields:
        np.savez_compressed(out / f"{PREFIX}fields.npz", solid=problem.final_solid, speed=problem.final_speed)
    (out / f"{PREFIX}results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: value for key, value in report.items() if key != "history"}, indent=2))
    return report


def straight_pipes(flow: Flow) -> np.ndarray:
    """The reference layout: the openings joined by straight pipes (3D: square ducts), solid
    elsewhere; its fluid fraction is about 1/3, the default V."""
    return np.where(np.broadcast_to(flow.inlet[0], flow.shape), 0.0, 1.0)


def summary(args, problem: Problem, x: np.ndarray) -> dict:
    """The final design's numbers: its objective, that of its 0/1 rounding, and how steady its
    flow is (the flow rate after twice the steps)."""
    flow = problem.flow
    gamma = problem.porosity(x)
    cost, f = flow.cost(gamma)
    measures = flow.measures(f)
    problem.final_speed, problem.final_solid = flow.speed(f), problem.solid(x)[0]
    rounded, _ = flow.cost(np.round(problem.final_solid))
    longer, _ = flow.cost(gamma, 2 * flow.steps)
    pipes, pipes_f = flow.cost(straight_pipes(flow))
    settings = {key: value for key, value in vars(args).items() if key not in ("shape", "quiet", "no_figures", "out")}
    return {"settings": settings, "configuration": flow.config.label, "grid": list(flow.shape), "design_cells": int(problem.free.sum()),
            "evaluations": len(problem.log), "cost_start": problem.scale,
            "straight_pipes": {"cost": pipes, **flow.measures(pipes_f)},
            "final": {"objective": cost / problem.scale, "cost": cost, **measures, "fluid_fraction": problem.fluid_fraction(x)[0],
                      "grayness": problem.grayness(x), "objective_rounded_design": rounded / problem.scale,
                      "cost_change_at_twice_the_steps": longer / cost - 1.0,
                      "pressure_drop_over_straight_pipes": measures["pressure_drop"] / flow.measures(pipes_f)["pressure_drop"]},
            "history": problem.log}


def plot(out: Path, problem: Problem, x: np.ndarray, report: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    solid, speed = problem.final_solid, problem.final_speed
    if solid.ndim == 3:  # the duct: its mid-plane across z
        solid, speed = solid[:, :, solid.shape[2] // 2], speed[:, :, speed.shape[2] // 2]
    final = report["final"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    axes[0].imshow(solid.T, origin="lower", cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title(f"design s (black solid): fluid {final['fluid_fraction']:.3f}, grayness {final['grayness']:.3f}")
    shown = axes[1].imshow(np.ma.masked_where(solid > 0.5, speed).T, origin="lower", cmap="magma")
    axes[1].set_title(f"speed; pressure drop {final['pressure_drop_over_straight_pipes']:.3f} x straight pipes'")
    fig.colorbar(shown, ax=axes[1], shrink=0.8, label="lattice units")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(out / f"{PREFIX}design.png", dpi=90)
    plt.close(fig)

    history = report["history"]
    evaluations = [row["evaluation"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
    axes[0].semilogy(evaluations, [row["objective"] for row in history])
    axes[0].set_title("objective: cost / the start's")
    axes[1].plot(evaluations, [row["fluid_fraction"] for row in history])
    axes[1].axhline(problem.volume, color="k", linestyle="--", label="V")
    axes[1].legend()
    axes[1].set_title("fluid fraction")
    axes[2].plot(evaluations, [row["grayness"] for row in history])
    axes[2].set_title("grayness, mean 4 s (1 - s)")
    changes = [row["evaluation"] for previous, row in zip(history, history[1:]) if row["beta"] != previous["beta"]]
    for ax in axes:
        for change in changes:
            ax.axvline(change, color="0.8", linewidth=0.8)
        ax.set_xlabel("MMA evaluation (grey lines: next stage, beta and q raised)")
        ax.grid(True, alpha=0.3)
    fig.savefig(out / f"{PREFIX}history.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
