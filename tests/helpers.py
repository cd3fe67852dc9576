"""Shared helpers for the tests: functionals from source strings, running passes."""

from __future__ import annotations

import textwrap

import libcst as cst

from adjointgen.compiler.frontend import Functional
from adjointgen.compiler.passes import PassContext
from adjointgen.compiler.passes.locate import Locate


def functional(source: str, namespace: dict | None = None, symbol: str = "snippet") -> Functional:
    import builtins

    import warp as wp

    ns = dict(vars(builtins))
    ns["wp"] = wp
    ns.update(namespace or {})
    return Functional(symbol=symbol, pyfunc=None, source=textwrap.dedent(source), filename="snippet.py", first_line=1, namespace=ns)


def run(pass_, source: str, namespace: dict | None = None, located: bool = False, ctx: PassContext | None = None):
    """Apply ``pass_`` to ``source``; ``located`` first tags statements with their lines.
    Returns (code, context); pass ``ctx`` to share one context (as the pipeline does)."""
    f = functional(source, namespace)
    ctx = ctx or PassContext(f, {})
    module = cst.parse_module(f.source)
    if located:
        module = Locate()(module, ctx)
    return pass_(module, ctx).code, ctx


def strip_tags(code: str) -> str:
    return "\n".join(line.split("  # @src:")[0].rstrip() for line in code.splitlines()) + "\n"


def assert_idempotent(pass_, source: str, namespace: dict | None = None):
    once, ctx = run(pass_, source, namespace)
    twice, _ = run(pass_, once, namespace, ctx=ctx)
    assert twice == once


def lower_source(source: str, params, namespace: dict | None = None, name: str = "toy"):
    """Run all source passes and the lowering on a kernel written as a string."""
    from adjointgen.compiler.lower import lower
    from adjointgen.compiler.passes import SOURCE_PASSES

    f = functional(source, namespace, symbol="toy_kernel")
    functions = {f.symbol: f}
    ctx = PassContext(f, functions)
    module = cst.parse_module(f.source)
    for pass_ in SOURCE_PASSES:
        module = pass_(module, ctx)
    processed = {f.symbol: (f, module)}
    for symbol, other in list(functions.items()):
        if symbol not in processed:
            other_ctx = PassContext(other, functions)
            other_module = cst.parse_module(other.source)
            for pass_ in SOURCE_PASSES:
                other_module = pass_(other_module, other_ctx)
            processed[symbol] = (other, other_module)
    compute = next((p.dtype for p in params if p.kind == "scalar" and p.dtype.startswith("float")), "float32")
    return lower(f, processed, compute, params, name, ctx.exit_guards)
