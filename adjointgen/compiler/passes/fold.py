"""Fold: constant-fold velocity-set tables, arithmetic, comparisons and constant branches.

Guarantees:

- a subscript of a build-time table with literal indices (``_c[1, 4]``, ``_w[4]``,
  ``_opp_indices[2]``) becomes the literal entry, and so does a literal index into a constant
  vector the resolve pass wrote out (``wp.vector(0, 2, 1, length=3, dtype=wp.int32)[1]``);
- arithmetic, comparisons and ``and``/``or``/``not`` on literals become literals (``int / int`` is
  left alone: Warp divides integers, Python does not);
- ``if`` with a literal test becomes the branch taken (an ``elif`` chain collapses in order);
- a local assigned exactly once, at the top level of the function, to a literal
  (``nt = 3`` after folding ``_d * (_d + 1) // 2``) is replaced by the literal where it is read,
  so a later unroll sees ``range(nt)`` as a constant range.

Runs until nothing changes, so it is idempotent.
"""

from __future__ import annotations

import operator

import libcst as cst

from .base import (
    NameAwareTransformer, NotStatic, PassContext, code, literal_node, literal_value, local_names, nonempty, parameters_of,
    walk_statements,
)

_BINARY = {
    cst.Add: operator.add, cst.Subtract: operator.sub, cst.Multiply: operator.mul,
    cst.FloorDivide: operator.floordiv, cst.Modulo: operator.mod, cst.Divide: operator.truediv,
}
_COMPARE = {
    cst.Equal: operator.eq, cst.NotEqual: operator.ne, cst.LessThan: operator.lt,
    cst.LessThanEqual: operator.le, cst.GreaterThan: operator.gt, cst.GreaterThanEqual: operator.ge,
}


def _literal(node):
    try:
        return True, literal_value(node)
    except NotStatic:
        return False, None


def _constant_vector_items(node):
    """The literal components of ``wp.vector(<literals>, length=n, dtype=...)``, else None."""
    if not (isinstance(node, cst.Call) and code(node.func) == "wp.vector"):
        return None
    items = [arg.value for arg in node.args if arg.keyword is None]
    if not items or not all(_literal(item)[0] for item in items):
        return None
    return items


class _Folder(cst.CSTTransformer):
    def __init__(self, ctx: PassContext, locals_):
        super().__init__()
        self.ctx = ctx
        self.locals = locals_
        self.changed = False
        self.elifs: set[int] = set()

    def _done(self, node):
        self.changed = True
        return node

    def leave_Subscript(self, original, updated):
        indices = [el.slice.value for el in updated.slice if isinstance(el.slice, cst.Index)]
        if len(indices) != len(updated.slice) or not all(_literal(i)[0] for i in indices):
            return updated
        items = _constant_vector_items(updated.value)
        if items is not None and len(indices) == 1:
            position = _literal(indices[0])[1]
            if isinstance(position, int) and not isinstance(position, bool) and -len(items) <= position < len(items):
                return self._done(items[position])
            return updated
        try:
            value = self.ctx.evaluate(updated, self.locals)
        except NotStatic:
            return updated
        literal = literal_node(value)
        return self._done(literal) if literal is not None else updated

    def leave_BinaryOperation(self, original, updated):
        (ok_l, left), (ok_r, right) = _literal(updated.left), _literal(updated.right)
        op = _BINARY.get(type(updated.operator))
        if not (ok_l and ok_r and op) or isinstance(left, bool) or isinstance(right, bool):
            return updated
        if isinstance(updated.operator, cst.Divide) and isinstance(left, int) and isinstance(right, int):
            return updated
        try:
            value = op(left, right)
        except ArithmeticError:
            return updated
        literal = literal_node(value)
        return self._done(literal) if literal is not None else updated

    def leave_Comparison(self, original, updated):
        if len(updated.comparisons) != 1:
            return updated
        target = updated.comparisons[0]
        op = _COMPARE.get(type(target.operator))
        (ok_l, left), (ok_r, right) = _literal(updated.left), _literal(target.comparator)
        if not (ok_l and ok_r and op):
            return updated
        return self._done(literal_node(bool(op(left, right))))

    def leave_UnaryOperation(self, original, updated):
        ok, value = _literal(updated.expression)
        if ok and isinstance(updated.operator, cst.Not) and isinstance(value, bool):
            return self._done(literal_node(not value))
        return updated

    def leave_BooleanOperation(self, original, updated):
        ok, left = _literal(updated.left)
        if ok and isinstance(left, bool):
            is_and = isinstance(updated.operator, cst.And)
            if left != is_and:  # False and x -> False; True or x -> True
                return self._done(literal_node(left))
            return self._done(updated.right)  # True and x -> x; False or x -> x
        return updated

    def visit_If(self, node):
        if isinstance(node.orelse, cst.If):
            self.elifs.add(id(node.orelse))

    def _fold_orelse(self, orelse):
        """Fold the literal tests of an ``elif`` chain; returns the new ``orelse``."""
        if not isinstance(orelse, cst.If):
            return orelse
        ok, value = _literal(orelse.test)
        if ok and isinstance(value, bool):
            self.changed = True
            if value:
                return cst.Else(body=orelse.body)
            return self._fold_orelse(orelse.orelse)
        return orelse.with_changes(orelse=self._fold_orelse(orelse.orelse))

    def leave_If(self, original, updated):
        if id(original) in self.elifs:
            return updated  # folded by the `if` that owns it
        updated = updated.with_changes(orelse=self._fold_orelse(updated.orelse))
        ok, value = _literal(updated.test)
        if not ok or not isinstance(value, bool):
            return updated
        self.changed = True
        if value:
            return cst.FlattenSentinel(updated.body.body)
        if updated.orelse is None:
            return cst.RemovalSentinel.REMOVE
        if isinstance(updated.orelse, cst.If):
            return updated.orelse
        return cst.FlattenSentinel(updated.orelse.body.body)

    def leave_IndentedBlock(self, original, updated):
        return nonempty(updated)


def _binding_counts(module: cst.Module) -> dict[str, int]:
    """How often each name is bound (assignment and loop targets, parameters); every name in a
    target counts, the index names of a subscript target too."""
    counts: dict[str, int] = {}
    for statement in walk_statements(module.body):
        if isinstance(statement, cst.Assign):
            targets = [target.target for target in statement.targets]
        elif isinstance(statement, (cst.AugAssign, cst.For)):
            targets = [statement.target]
        elif isinstance(statement, cst.FunctionDef):
            targets = [param.name for param in parameters_of(statement)]
        else:
            continue
        for target in targets:
            for name in _names_in(target):
                counts[name.value] = counts.get(name.value, 0) + 1
    return counts


class _NamesIn(cst.CSTVisitor):
    def __init__(self):
        self.found: list[cst.Name] = []

    def visit_Name(self, node: cst.Name):
        self.found.append(node)


def _names_in(node: cst.CSTNode) -> list[cst.Name]:
    """Every ``Name`` node in ``node`` (itself included), attribute names too."""
    if isinstance(node, cst.Name):
        return [node]
    visitor = _NamesIn()
    node.visit(visitor)
    return visitor.found


def _is_single_name_assignment(line) -> bool:
    """``name = value`` alone on its line."""
    return (isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1 and isinstance(line.body[0], cst.Assign)
            and len(line.body[0].targets) == 1 and isinstance(line.body[0].targets[0].target, cst.Name))


def _single_literal_locals(module: cst.Module) -> dict[str, cst.BaseExpression]:
    counts = _binding_counts(module)
    constants = {}
    for function in (s for s in module.body if isinstance(s, cst.FunctionDef)):
        for line in function.body.body:
            if not _is_single_name_assignment(line):
                continue
            assign = line.body[0]
            name = assign.targets[0].target.value
            if counts.get(name) == 1 and _literal(assign.value)[0]:
                constants[name] = assign.value
    return constants


class _Propagate(NameAwareTransformer):
    def __init__(self, constants: dict):
        super().__init__()
        self.constants = constants
        self.changed = False

    def visit_AssignTarget(self, node):
        return False  # the binding itself stays (the lowering drops it if unused)

    def leave_Name(self, original, updated):
        if updated.value in self.constants and self.is_expression(original):
            self.changed = True
            return self.constants[updated.value]
        return updated


class Fold:
    """Constant-fold tables, arithmetic, comparisons and constant branches."""

    name = "fold"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        locals_ = local_names(module) | ctx.parameter_names
        while True:
            folder = _Folder(ctx, locals_)
            module = module.visit(folder)
            constants = _single_literal_locals(module)
            propagate = _Propagate(constants)
            if constants:
                module = module.visit(propagate)
            if not (folder.changed or propagate.changed):
                return module
