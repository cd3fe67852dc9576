"""The whole generator as one function: read, rewrite, lower, check accesses, differentiate, emit.

    source = generate(stepper, config)

reads as the stages it runs:

1. ``frontend``   the stepper kernel and, transitively, every @wp.func it calls, with namespaces;
2. ``passes``     locate, modernise, resolve, unroll, resolve, fold, branchless (per functional);
3. ``lower``      one straight-line per-cell program in SSA form;
4. ``access``     streaming reads classified; proof that the adjoint's scatter has no races;
5. ``reverse``    reverse mode, statement by statement, with sympy partials;
6. ``emit``       the Jinja template renders forward and adjoint kernels with provenance.

``keep`` (a dict) receives the intermediate result of every stage for inspection
(``adjointgen build --explain`` prints them).
"""

from __future__ import annotations

import hashlib

import libcst as cst

from adjointgen.compiler import access
from adjointgen.compiler import emit
from adjointgen.compiler import frontend
from adjointgen.compiler import lower as lowering
from adjointgen.compiler import parameters
from adjointgen.compiler import reverse
from adjointgen.config import Configuration
from adjointgen.compiler.ir import Param
from adjointgen.compiler.passes import SOURCE_PASSES, PassContext


def process_functionals(kernel: frontend.Functional, keep: dict | None = None, lifts: dict | None = None) -> dict:
    """Run the source passes over the kernel and every functional it reaches.
    Returns {symbol: (functional, processed module)}; the kernel's early-exit variables are in
    ``keep["exit_guards"]`` when ``keep`` is given. ``lifts`` (from
    :func:`adjointgen.compiler.parameters.lifted_parameters`) names closure values that become kernel
    parameters."""
    functions: dict = {kernel.symbol: kernel}
    processed: dict = {}
    counter = 0
    while len(processed) < len(functions):
        symbol = next(s for s in functions if s not in processed)
        functional = functions[symbol]
        ctx = PassContext(functional, functions, fresh_counter=counter, lifts=lifts or {})
        module = cst.parse_module(functional.source)
        for pass_ in SOURCE_PASSES:
            module = pass_(module, ctx)
        counter = ctx.fresh_counter
        processed[symbol] = (functional, module)
        if symbol == kernel.symbol:
            exit_guards = list(ctx.exit_guards)
        if keep is not None:
            keep.setdefault("passes", {})[symbol] = module.code
    if keep is not None:
        keep["exit_guards"] = exit_guards
    return processed


def program_identity(processed: dict) -> str:
    """SHA-256 of every functional after the source passes: it changes with the XLB sources and
    with every build-time constant they resolve (boundary ids, prescribed values, lattice)."""
    digest = hashlib.sha256()
    for symbol in sorted(processed):
        digest.update(f"{symbol}\n{processed[symbol][1].code}\n".encode())
    return digest.hexdigest()


def kernel_params(config: Configuration, lifted_names=()) -> list[Param]:
    """The XLB stepper kernel's parameters, typed for ``config`` (all parameters concrete, so
    the generated kernels are double throughout under FP64, whatever type the caller passes),
    followed by the lifted boundary values."""
    store = "float64" if config.precision.endswith("FP64") else "float32"
    compute = "float64" if config.precision.startswith("FP64") else "float32"
    return [
        Param("f_0", "array", store, 4),
        Param("f_1", "array", store, 4),
        Param("bc_mask", "array", "uint8", 4),
        Param("missing_mask", "array", "bool", 4),
        Param("omega", "scalar", compute),
        Param("timestep", "scalar", "int32"),
    ] + [Param(name, "scalar", compute) for name in lifted_names]


def generate(stepper, config: Configuration, keep: dict | None = None, boundary_parameters: bool = False) -> str:
    kernel = frontend.stepper_kernel(stepper)
    keep = {} if keep is None else keep
    lifts = parameters.lifted_parameters(stepper) if boundary_parameters else {}
    processed = process_functionals(kernel, keep, lifts)
    params = kernel_params(config, parameters.scalar_names(lifts))
    program = lowering.lower(kernel, processed, params[4].dtype, params, config.name, keep["exit_guards"])
    accesses = access.analyse(program, unit_axes=tuple(range(config.dim, 3)))
    adjoint = reverse.differentiate(program, accesses)
    keep.update(program=program, accesses=accesses, adjoint=adjoint)
    sources = [functional for functional, _ in processed.values()]
    return emit.render_module(config, program, adjoint, accesses, sources, program_identity(processed))
