"""Resolve: replace expressions whose value is fixed at kernel build time by that value.

Warp evaluates names that are not locals in the functional's closure, then its module globals,
then builtins, when it compiles the kernel. This pass does the same on the source:

- numbers and booleans (``self.velocity_set.q``, ``wp.static(len(self.boundary_conditions))``)
  become literals;
- Warp scalar types (``self.compute_dtype``) become ``wp.<type>``;
- calls of Warp vector/matrix types (``_f_vec()``) become ``wp.vector(..., length=n, dtype=T)`` /
  ``wp.matrix(..., shape=(r, c), dtype=T)``;
- user ``@wp.func`` functions (``self.stream.warp_functional``) become a symbol registered in the
  pass context, under which the pipeline processes them in turn;
- ``wp.static(expr)`` becomes the value of ``expr``;
- closure values listed in the context's ``lifts`` (a boundary condition's prescribed values)
  become the names of kernel parameters instead of literals.

Tables (``_c``, ``_w``) are left for :mod:`~adjointgen.compiler.passes.fold`, since their indices are
only constant after unrolling. A name that is neither local nor found raises
:class:`~adjointgen.errors.UnresolvedName` with its ``file:line``. Idempotent.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from adjointgen.errors import UnresolvedName
from .base import (
    NameAwareTransformer, NotStatic, PassContext, constant_vector, is_scalar_type, is_user_function, literal_node,
    code, local_names, scalar_type_node, tag_of, vector_info,
)

_STATIC = m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.Name("static")))


class _Resolver(NameAwareTransformer):
    def __init__(self, ctx: PassContext, locals_: frozenset[str]):
        super().__init__()
        self.ctx = ctx
        self.locals = locals_
        self.statement_tag: str | None = None
        self.in_annotation = 0

    # keep track of where we are, for error messages
    def visit_SimpleStatementLine(self, node):
        self.statement_tag = tag_of(node)

    def visit_Annotation(self, node):
        self.in_annotation += 1

    def leave_Annotation(self, original, updated):
        self.in_annotation -= 1
        return updated

    def _where(self) -> str:
        line = self.statement_tag.split()[0] if self.statement_tag else self.ctx.functional.first_line
        return f"{self.ctx.functional.filename}:{line}"

    def _value(self, node):
        try:
            return self.ctx.evaluate(node, self.locals)
        except UnresolvedName as exc:
            raise UnresolvedName(self._where(), exc.construct, exc.advice) from None

    def _replacement(self, node: cst.BaseExpression):
        if self.in_annotation:
            return None
        try:
            value = self._value(node)
        except NotStatic:
            return None
        literal = literal_node(value)
        if literal is not None:
            return literal
        if is_scalar_type(value):
            return scalar_type_node(value)
        written_out = constant_vector(value)
        if written_out is not None:
            return written_out
        if is_user_function(value):
            return cst.Name(self.ctx.register_function(value, code(node)))
        return None

    def leave_Name(self, original, updated):
        if not self.is_expression(original) or updated.value in self.locals or updated.value in ("True", "False", "None"):
            return updated
        if updated.value in self.parameter_names:
            return updated  # already a kernel parameter
        lifted = self.ctx.lifted.get(updated.value)
        if lifted is not None:  # a prescribed value that becomes a kernel parameter
            if lifted.size == 0:
                return cst.Name(lifted.name)
            dtype = scalar_type_node(vector_info(type(self.ctx.evaluate_type(updated)))[2])
            return cst.Call(func=cst.Attribute(cst.Name("wp"), cst.Name("vector")), args=[
                *(cst.Arg(cst.Name(n)) for n in lifted.scalar_names()),
                cst.Arg(cst.Integer(str(lifted.size)), keyword=cst.Name("length"),
                        equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))),
                cst.Arg(dtype, keyword=cst.Name("dtype"), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))),
            ])
        return self._replacement(updated) or updated

    def leave_Attribute(self, original, updated):
        return self._replacement(updated) or updated

    def leave_Call(self, original, updated):
        if self.in_annotation:
            return updated
        if m.matches(updated, _STATIC):
            if len(updated.args) != 1:
                return updated
            inner = updated.args[0].value
            return self._replacement(inner) or self._replacement(updated) or updated
        try:
            callee = self._value(updated.func)
        except NotStatic:
            callee = None
        info = vector_info(callee) if callee is not None else None
        if info is not None:
            kind, size, scalar = info
            keyword = "length" if kind == "vector" else "shape"
            size_code = repr(size)
            args = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in updated.args]
            args.append(cst.Arg(cst.parse_expression(size_code), keyword=cst.Name(keyword),
                                equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))))
            args.append(cst.Arg(scalar_type_node(scalar), keyword=cst.Name("dtype"),
                                equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))))
            return cst.Call(func=cst.Attribute(cst.Name("wp"), cst.Name(kind)), args=args)
        if m.matches(updated.func, m.Name("len")):
            return self._replacement(updated) or updated
        return updated


class Resolve:
    """Replace build-time constants, types and functions by literals and symbols."""

    name = "resolve"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        resolver = _Resolver(ctx, local_names(module) | ctx.parameter_names)
        resolver.parameter_names = ctx.parameter_names
        return module.visit(resolver)
