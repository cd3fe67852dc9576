"""The whole generator as a driver that names every stage and keeps every stage's result.

    source = generate(stepper, config)                 # the module text
    record = run_pipeline(stepper, config)             # every intermediate result, typed

Stages, each a function of the previous results (:class:`Intermediates` has one field each):

1. ``frontend``   the stepper kernel; every @wp.func it calls is found by the passes;
2. ``passes``     locate, modernise, resolve, then unroll/resolve/fold to a fixed point, then
                  branchless (per functional, :mod:`adjointgen.compiler.passes`);
3. ``lower``      one straight-line per-cell program in SSA form;
4. ``access``     streaming reads classified; proof that the adjoint's scatter has no races;
5. ``reverse``    reverse mode, statement by statement, with sympy partials;
   ``reciprocals`` divisions in the sweep as products with reciprocals computed once;
6. ``guards``     the boundary ids at which each value matters (the cell-kind guards);
7. ``residuals``  the fewest values a recorded step keeps for its state-only adjoint;
8. ``plan``       one plan per kernel: its parameters and prepared lines, and the manifest;
9. ``emit``       the Jinja templates render the plans, with provenance and the body hash.

``adjointgen build --explain`` prints the record (:meth:`Intermediates.explain`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from adjointgen.compiler import access
from adjointgen.compiler import emit
from adjointgen.compiler import frontend
from adjointgen.compiler import guards
from adjointgen.compiler import lower as lowering
from adjointgen.compiler import parameters
from adjointgen.compiler import plan
from adjointgen.compiler import reciprocals
from adjointgen.compiler import residuals
from adjointgen.compiler import reverse
from adjointgen.compiler.access import Accesses
from adjointgen.compiler.ir import Assign, Param, Program
from adjointgen.compiler.naming import Namer
from adjointgen.compiler.passes import PassContext
from adjointgen.compiler.passes.record import DependencyRecord, Stamp, condensed, lifts_description
from adjointgen.compiler.passes.runs import RunStore, lifted_key, reuse, run_passes
from adjointgen.config import Configuration
from adjointgen.xlb.fields import fields_of


@dataclass(frozen=True)
class ProcessedFunctionals:
    """The passes' result: every functional the kernel reaches, after the source passes."""

    modules: dict  # symbol -> (frontend.Functional, libcst Module after the passes), the kernel first
    exit_guards: tuple  # the kernel's early-exit variables (branchless pass)
    record: DependencyRecord  # what the passes read, and the program identity (program_identity)

    @property
    def sources(self) -> list:
        return [functional for functional, _ in self.modules.values()]


@dataclass
class Intermediates:
    """One result per stage of one :func:`run_pipeline` (None: the stage has not run)."""

    config: Configuration
    kernel: frontend.Functional | None = None
    lifts: dict = field(default_factory=dict)  # parameters.lifted_parameters (empty unless boundary_parameters)
    passes: ProcessedFunctionals | None = None
    program: Program | None = None
    names: Namer | None = None  # the owner of every generated name (reverse mode and the plans)
    accesses: Accesses | None = None
    adjoint: reverse.Adjoint | None = None
    guards: guards.CellGuards | None = None
    residuals: residuals.Residuals | None = None  # None also where none pay (residuals.choose)
    plan: plan.ModulePlan | None = None
    text: str | None = None

    def explain(self) -> list[str]:
        """The record as text, stage by stage (``adjointgen build --explain``)."""
        out = [f"==== {self.config.label}: source after the passes"]
        for symbol, (_, module) in self.passes.modules.items():
            out.append(f"---- {symbol}\n{module.code}")
        program = self.program
        out.append(f"==== per-cell program: {len(program.statements)} statements, {len(program.stores)} stores")
        for statement in program.statements:
            read = statement.expr if isinstance(statement, Assign) else (statement.array, statement.index)
            out.append(f"  {statement.target} <- {read}")
        out.append("==== access proof")
        out += [f"  {line}" for line in self.accesses.proof]
        out.append(f"==== reverse mode: {len(self.adjoint.groups)} groups, {len(self.adjoint.seeds)} seeds")
        out.append(f"==== guards: boundary id {self.guards.id_symbol}, {len(self.guards.needs)} guarded values")
        out += [f"  {name}: ids {sorted(need.ids)}" for name, need in sorted(self.guards.needs.items())]
        # what the module has (the plans leave them out of split steps, see plan._Context)
        generated = self.residuals is not None and self.plan.manifest.residual_count > 0
        kept = ", ".join(self.residuals.symbols) if generated else "none (a recorded step keeps its input)"
        out.append(f"==== residuals: {kept}")
        out.append(f"==== kernels: {', '.join(self.plan.manifest.kernels)}")
        return out


def process_functionals(kernel: frontend.Functional, lifts: dict | None = None,
                        store: RunStore | None = None) -> ProcessedFunctionals:
    """Run the source passes over the kernel and every functional it reaches. ``lifts`` (from
    :func:`adjointgen.compiler.parameters.lifted_parameters`) names closure values that become
    kernel parameters. The result carries the run's :class:`DependencyRecord`.

    A functional whose result the passes would repeat takes an earlier one
    (:mod:`~adjointgen.compiler.passes.runs`): from this call (XLB builds a closure per operator
    instance: each boundary condition has its own equilibrium) or kept in ``store`` by earlier
    calls; new results are kept there."""
    lifts, store = lifts or {}, store or RunStore()
    functions: dict = {kernel.symbol: kernel}
    runs: dict = {}
    reads: list = []
    counter = 0
    while len(runs) < len(functions):
        symbol = next(s for s in functions if s not in runs)
        ctx = PassContext(functions[symbol], functions, fresh_counter=counter, lifts=lifts, record=reads)
        run = reuse(ctx, runs.values()) or reuse(ctx, store.candidates(Stamp.of("", ctx.functional), lifted_key(ctx)))
        if run is None:
            run = run_passes(ctx)
            store.keep(run)
        runs[symbol] = run
        counter = ctx.fresh_counter
    processed = {symbol: (functions[symbol], run.tree()) for symbol, run in runs.items()}
    record = DependencyRecord(
        stamps=tuple(Stamp.of(symbol, functional) for symbol, functional in functions.items()),
        entries=condensed(reads),
        lifts=lifts_description(functions, lifts),
        identity=_identity({symbol: run.code for symbol, run in runs.items()}, functions),
    )
    return ProcessedFunctionals(processed, runs[kernel.symbol].exit_guards, record)


def _identity(codes: dict, functions: dict) -> str:
    digest = hashlib.sha256()
    for symbol in sorted(codes):
        digest.update(f"{symbol}\n{codes[symbol]}\n".encode())
    fields = fields_of(functions.values())
    if fields:
        digest.update(f"fields: {', '.join(spec.label for spec in fields)}\n".encode())
    return digest.hexdigest()


def program_identity(processed: ProcessedFunctionals) -> str:
    """SHA-256 of every functional after the source passes: it changes with the XLB sources and
    with every build-time constant they resolve (boundary ids, prescribed values, lattice), and
    with the design fields read (none: the digest is the same as before fields existed)."""
    return processed.record.identity


def kernel_params(config: Configuration, lifted_names=(), fields=()) -> list[Param]:
    """The XLB stepper kernel's parameters, typed for ``config`` (all parameters concrete, so
    the generated kernels are double throughout under FP64, whatever type the caller passes),
    followed by the lifted boundary values and the design fields (arrays ``(components, nx, ny, nz)`` in
    the store precision)."""
    store = "float64" if config.precision.endswith("FP64") else "float32"
    compute = "float64" if config.precision.startswith("FP64") else "float32"
    return [
        Param("f_0", "array", store, 4),
        Param("f_1", "array", store, 4),
        Param("bc_mask", "array", "uint8", 4),
        Param("missing_mask", "array", "bool", 4),
        Param("omega", "scalar", compute),
        Param("timestep", "scalar", "int32"),
    ] + [Param(name, "scalar", compute) for name in lifted_names] + [Param(spec.name, "array", store, 4) for spec in fields]


def run_pipeline(stepper, config: Configuration, boundary_parameters: bool = False,
                 passes: ProcessedFunctionals | None = None, store: RunStore | None = None) -> Intermediates:
    """Every stage in order, each handed the earlier stages' results; returns all of them.
    ``passes``: the source passes' result for this same stepper and ``boundary_parameters``, when
    the caller has it already (the runtime computes it for the program identity): the passes are
    the slowest stage, so they are not run twice. ``store``: where the passes' results per
    functional are kept between calls (see :func:`process_functionals`)."""
    record = Intermediates(config, kernel=frontend.stepper_kernel(stepper))
    record.lifts = parameters.lifted_parameters(stepper) if boundary_parameters else {}
    record.passes = passes if passes is not None else process_functionals(record.kernel, record.lifts, store)
    fields = fields_of(record.passes.sources)
    params = kernel_params(config, parameters.scalar_names(record.lifts), fields)
    record.program = lowering.lower(record.kernel, record.passes.modules, params[4].dtype, params, config.name,
                                    record.passes.exit_guards, fields)
    record.guards = guards.cell_guards(record.program)
    record.accesses = access.analyse(record.program, unit_axes=tuple(range(config.dim, 3)),
                                     guarded=frozenset(name for name, need in record.guards.needs.items() if not need.complement))
    record.names = Namer.for_program(record.program)
    record.adjoint = reciprocals.hoist(reverse.differentiate(record.program, record.accesses, record.names),
                                       record.program, record.names)
    record.residuals = residuals.choose(record.program, record.adjoint, record.accesses, record.guards, config.q)
    record.plan = plan.plan_module(config, record.program, record.adjoint, record.accesses, record.guards, record.names,
                                   record.passes.sources, program_identity(record.passes), record.residuals)
    record.text = emit.render_module(record.plan)
    return record


def generate(stepper, config: Configuration, boundary_parameters: bool = False,
             passes: ProcessedFunctionals | None = None, store: RunStore | None = None) -> str:
    """The generated module's text for ``stepper`` built as ``config``.

    Guarantees: the text is a function of the stepper's functionals (their source and the
    build-time values they resolve), ``config``, ``boundary_parameters``, adjointgen's version and
    the templates, nothing else (no clock, no paths but package-relative ones), so regenerating is
    byte-identical and ``adjointgen check`` can diff; its header records the program identity
    (:func:`program_identity`, what the runtime matches a stepper against) and the SHA-256 of the
    body; its MANIFEST lists the kernels it defines. Raises an
    :class:`~adjointgen.errors.AdjointgenError` (and emits nothing) for what it cannot
    differentiate."""
    return run_pipeline(stepper, config, boundary_parameters, passes, store).text
