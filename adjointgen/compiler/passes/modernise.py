"""Modernise: rewrite Warp API spellings that current Warp removed into their current forms.

Guarantees: afterwards the functional uses none of

- ``wp.vec(n, dtype=T)(args)`` / ``wp.mat((r, c), dtype=T)(args)`` (removed type constructors)
  -> ``wp.vector(args, length=n, dtype=T)`` / ``wp.matrix(args, shape=(r, c), dtype=T)``;
- ``wp.select(cond, if_false, if_true)`` (deprecated) -> ``wp.where(cond, if_true, if_false)``;
- ``wp.utils.ScopedTimer`` -> ``wp.ScopedTimer``.

Everything else is left as it is, so the pass is idempotent.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from .base import PassContext

_WP_VEC = m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.Name("vec")))
_WP_MAT = m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.Name("mat")))


def _keyword(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name), equal=cst.AssignEqual(
        whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")))


def _type_call_parts(type_call: cst.Call, size_keyword: str):
    size = dtype = None
    for position, arg in enumerate(type_call.args):
        if arg.keyword is None and position == 0:
            size = arg.value
        elif arg.keyword is not None and arg.keyword.value in (size_keyword, "shape"):
            size = arg.value
        elif arg.keyword is not None and arg.keyword.value == "dtype":
            dtype = arg.value
        elif arg.keyword is None and position == 1:
            dtype = arg.value
    return size, dtype


class _Modernise(m.MatcherDecoratableTransformer):
    @m.leave(m.Call(func=_WP_VEC | _WP_MAT))
    def _constructor(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        is_vector = m.matches(updated.func, _WP_VEC)
        size, dtype = _type_call_parts(updated.func, "length" if is_vector else "shape")
        if size is None or dtype is None:
            return updated
        args = [arg.with_changes(comma=cst.MaybeSentinel.DEFAULT) for arg in updated.args]
        args += [_keyword("length" if is_vector else "shape", size), _keyword("dtype", dtype)]
        name = "vector" if is_vector else "matrix"
        return cst.Call(func=cst.Attribute(cst.Name("wp"), cst.Name(name)), args=args)

    @m.leave(m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.Name("select")), args=[m.DoNotCare()] * 3))
    def _select(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        cond, if_false, if_true = updated.args
        return updated.with_changes(
            func=cst.Attribute(cst.Name("wp"), cst.Name("where")),
            args=[cond, if_true.with_changes(comma=if_false.comma), if_false.with_changes(comma=if_true.comma)],
        )

    @m.leave(m.Attribute(value=m.Attribute(value=m.Name("wp"), attr=m.Name("utils")), attr=m.Name("ScopedTimer")))
    def _timer(self, original, updated):
        return cst.Attribute(cst.Name("wp"), cst.Name("ScopedTimer"))


class Modernise:
    """Rewrite removed or deprecated Warp API spellings."""

    name = "modernise"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        return module.visit(_Modernise())
