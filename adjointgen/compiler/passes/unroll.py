"""Unroll: replace loops over constant ranges by copies of their body.

Guarantees: every ``for v in range(a[, b[, c]])`` whose bounds are literals (after
:mod:`~adjointgen.compiler.passes.resolve`) becomes the body repeated once per value, with ``v`` replaced
by the value and ``v=<value>`` appended to each copied statement's location tag. A loop of zero
iterations disappears (a block left empty gets ``pass``). Loops whose trip count is not a
literal are left for the lowering, which refuses them with their ``file:line``. A loop that
assigns its own variable, or uses ``break``, ``continue`` or ``else``, is refused here.
Idempotent: the result has no constant-range loops left.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from .base import NameAwareTransformer, PassContext, is_literal, literal_node, literal_value, nonempty, refuse, tag_of, with_tag

_RANGE = m.Call(func=m.Name("range"))


class _Substitute(NameAwareTransformer):
    def __init__(self, name: str, value: int):
        super().__init__()
        self.name = name
        self.value = value

    def leave_Name(self, original, updated):
        if updated.value == self.name and self.is_expression(original):
            return literal_node(self.value)
        return updated

    def _retag(self, updated):
        tag = tag_of(updated)
        return with_tag(updated, f"{tag} {self.name}={self.value}") if tag is not None else updated

    def leave_SimpleStatementLine(self, original, updated):
        return self._retag(updated)

    def leave_If(self, original, updated):
        return self._retag(updated)

    def leave_For(self, original, updated):
        return self._retag(updated)


class _Assigned(cst.CSTVisitor):
    def __init__(self, name: str):
        self.name = name
        self.found = False

    def visit_AssignTarget(self, node):
        self.found |= m.matches(node.target, m.Name(self.name))

    def visit_AugAssign(self, node):
        self.found |= m.matches(node.target, m.Name(self.name))


class _Unroller(cst.CSTTransformer):
    def __init__(self, ctx: PassContext):
        super().__init__()
        self.ctx = ctx

    def leave_For(self, original: cst.For, updated: cst.For):
        if not (m.matches(updated.iter, _RANGE) and all(is_literal(a.value) and a.keyword is None for a in updated.iter.args)):
            return updated
        if not isinstance(updated.target, cst.Name):
            refuse(self.ctx, updated, "a loop over range() with a tuple target", "use a single loop variable")
        if updated.orelse is not None:
            refuse(self.ctx, updated, "for ... else", "move the else block after the loop")
        if m.findall(updated.body, m.Break() | m.Continue()):
            refuse(self.ctx, updated, "break/continue in a loop", "write the condition as an if around the body")
        name = updated.target.value
        assigned = _Assigned(name)
        updated.body.visit(assigned)
        if assigned.found:
            refuse(self.ctx, updated, f"a loop that assigns its own variable {name!r}", "use another variable name")
        bounds = [literal_value(a.value) for a in updated.iter.args]
        statements = []
        for value in range(*bounds):
            copy = updated.body.visit(_Substitute(name, value))
            statements.extend(copy.body)
        if not statements:
            return cst.RemovalSentinel.REMOVE
        return cst.FlattenSentinel(statements)

    def leave_IndentedBlock(self, original, updated):
        return nonempty(updated)


class Unroll:
    """Unroll loops over constant ranges."""

    name = "unroll"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        return module.visit(_Unroller(ctx))
