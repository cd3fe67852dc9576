"""FixedPoint: run a group of passes again and again until the source stops changing.

Guarantees: ``FixedPoint(a, b, c)(module, ctx)`` applies ``a``, ``b``, ``c`` in order, repeatedly,
and returns the first module that a whole round leaves unchanged (compared as source text), so
the result is a fixed point of every pass in the group. Passes that enable each other (folding
``nt = _d * (_d + 1) // 2`` to a literal makes ``range(nt)`` a constant range for unroll, whose
copies hold new table lookups for fold) need no hand-counted repetition. At most ``limit``
rounds run; a group still changing the source after that raises
:class:`~adjointgen.errors.UnsupportedConstruct` at the functional, naming the passes.
Idempotent: a second application runs one round, which changes nothing.
"""

from __future__ import annotations

import libcst as cst

from adjointgen.errors import UnsupportedConstruct
from .base import PassContext

DEFAULT_LIMIT = 8


class FixedPoint:
    """The passes ``passes``, repeated until a round changes nothing (at most ``limit`` rounds)."""

    def __init__(self, *passes, limit: int = DEFAULT_LIMIT):
        self.passes = passes
        self.limit = limit

    def __repr__(self) -> str:
        return f"FixedPoint({', '.join(type(p).__name__ for p in self.passes)}, limit={self.limit})"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        before = module.code
        for _ in range(self.limit):
            for pass_ in self.passes:
                module = pass_(module, ctx)
            after = module.code
            if after == before:
                return module
            before = after
        names = ", ".join(type(p).__name__ for p in self.passes)
        raise UnsupportedConstruct(ctx.where(), f"source that the passes {names} still change after {self.limit} rounds",
                                   "nest fewer build-time loops whose trip counts come from folded values, or raise "
                                   "the limit of this FixedPoint in adjointgen/compiler/passes/__init__.py")
