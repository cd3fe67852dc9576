"""Shared machinery of the source passes: the context they share, source-location tags, and
evaluation of expressions whose value is fixed when the kernel is built.

Location tags. Before any pass runs, :class:`~adjointgen.compiler.passes.locate.Locate` writes a comment
``# @src:<line>`` on every statement (``<line>`` is the line in the original file). Passes copy
nodes with ``with_changes`` and so keep the tag; :mod:`~adjointgen.compiler.passes.unroll` appends the
loop bindings (``# @src:64 l=3``). The lowering reads the tags to name, in the generated code, the
source line each statement comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import numpy as np
import warp as wp

from adjointgen.errors import UnresolvedName, UnsupportedConstruct
from adjointgen.compiler.frontend import Functional, functional_from, is_user_function

TAG = "# @src:"


@dataclass
class PassContext:
    """What the passes over one functional share.

    ``functions`` is shared by all functionals of one pipeline run: :class:`Resolve` adds every
    user ``@wp.func`` it meets, under the symbol that replaces the expression naming it.
    """

    functional: Functional
    functions: dict = field(default_factory=dict)
    fresh_counter: int = 0
    exit_guards: list = field(default_factory=list)
    temporaries: set = field(default_factory=set)
    lifts: dict = field(default_factory=dict)  # id(python function) -> [parameters.Lifted]

    @property
    def lifted(self) -> dict:
        """{closure name: Lifted} for this functional's values that become kernel parameters."""
        return {entry.closure: entry for entry in self.lifts.get(id(self.functional.pyfunc), [])}

    @property
    def parameter_names(self) -> set:
        return {name for entries in self.lifts.values() for entry in entries for name in entry.scalar_names()}

    @property
    def namespace(self) -> dict:
        """The functional's own namespace, plus the symbols registered for functions so far."""
        namespace = dict(self.functional.namespace)
        namespace.update({symbol: f.warp_object for symbol, f in self.functions.items()})
        return namespace

    def fresh(self, stem: str) -> str:
        name = f"_{stem.strip('_')}_{self.fresh_counter}"
        self.fresh_counter += 1
        self.temporaries.add(name)
        return name

    def register_function(self, value) -> str:
        functional = functional_from(value)
        existing = self.functions.get(functional.symbol)
        if existing is not None and existing.pyfunc is not functional.pyfunc:
            index = 2
            while f"{functional.symbol}_{index}" in self.functions and self.functions[f"{functional.symbol}_{index}"].pyfunc is not functional.pyfunc:
                index += 1
            functional.symbol = f"{functional.symbol}_{index}"
        self.functions.setdefault(functional.symbol, functional)
        return functional.symbol

    def where(self, node: cst.CSTNode | None = None) -> str:
        """``file:line`` of ``node`` (from its statement tag) or of the functional."""
        line = tag_line(node) if node is not None else None
        return f"{self.functional.filename}:{line or self.functional.first_line}"


# ----------------------------------------------------------------------------- location tags
def tag_of(node: cst.CSTNode) -> str | None:
    comment = None
    if isinstance(node, cst.SimpleStatementLine):
        comment = node.trailing_whitespace.comment
    elif isinstance(getattr(node, "body", None), cst.IndentedBlock):
        comment = node.body.header.comment
    if comment is not None and comment.value.startswith(TAG):
        return comment.value[len(TAG):]
    return None


def tag_line(node: cst.CSTNode) -> int | None:
    tag = tag_of(node)
    if tag is None:
        return None
    return int(tag.split()[0])


def with_tag(node: cst.CSTNode, tag: str) -> cst.CSTNode:
    comment = cst.Comment(TAG + tag)
    if isinstance(node, cst.SimpleStatementLine):
        return node.with_changes(trailing_whitespace=node.trailing_whitespace.with_changes(comment=comment, whitespace=cst.SimpleWhitespace("  ")))
    if isinstance(getattr(node, "body", None), cst.IndentedBlock):
        header = node.body.header.with_changes(comment=comment, whitespace=cst.SimpleWhitespace("  "))
        return node.with_changes(body=node.body.with_changes(header=header))
    return node


def statement(code: str, tag: str | None) -> cst.SimpleStatementLine:
    node = cst.parse_statement(code)
    return with_tag(node, tag) if tag is not None else node


# ----------------------------------------------------------------------------- transformers
class NameAwareTransformer(cst.CSTTransformer):
    """A transformer that knows which ``Name`` nodes are expressions: not attribute names
    (``a.<b>``), keyword names (``f(<k>=1)``), nor function and parameter names."""

    def __init__(self):
        super().__init__()
        self._not_expressions: set[int] = set()

    def is_expression(self, original: cst.Name) -> bool:
        return id(original) not in self._not_expressions

    def visit_Attribute(self, node):
        self._not_expressions.add(id(node.attr))

    def visit_Arg(self, node):
        if node.keyword is not None:
            self._not_expressions.add(id(node.keyword))

    def visit_FunctionDef(self, node):
        self._not_expressions.add(id(node.name))

    def visit_Param(self, node):
        self._not_expressions.add(id(node.name))


def nonempty(block: cst.IndentedBlock) -> cst.IndentedBlock:
    """``block``, with a ``pass`` if a pass removed all its statements."""
    if not block.body:
        return block.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])])
    return block


# ----------------------------------------------------------------------------- local names
class _LocalNames(cst.CSTVisitor):
    def __init__(self):
        self.names: set[str] = set()

    def visit_Param(self, node: cst.Param):
        self.names.add(node.name.value)

    def _targets(self, target):
        if isinstance(target, cst.Name):
            self.names.add(target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._targets(element.value)

    def visit_AssignTarget(self, node: cst.AssignTarget):
        self._targets(node.target)

    def visit_AugAssign(self, node: cst.AugAssign):
        self._targets(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign):
        self._targets(node.target)

    def visit_For(self, node: cst.For):
        self._targets(node.target)


def local_names(module: cst.Module) -> frozenset[str]:
    visitor = _LocalNames()
    module.visit(visitor)
    return frozenset(visitor.names)


def free_names(node: cst.CSTNode) -> set[str]:
    names: set[str] = set()

    class _Names(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name):
            names.add(n.value)

        def visit_Attribute(self, n: cst.Attribute):
            n.value.visit(self)
            return False  # the attribute name itself is not a free name

        def visit_Arg(self, n: cst.Arg):
            n.value.visit(self)
            return False  # keyword names are not free names

    node.visit(_Names())
    return names


# ----------------------------------------------------------------------------- static values
class NotStatic(Exception):
    pass


def evaluate(node: cst.BaseExpression, namespace: dict, locals_: frozenset[str]):
    """The value of ``node`` if it only refers to closure, global and builtin names; raises
    :class:`NotStatic` otherwise (a local is involved, or the expression cannot be evaluated)."""
    names = free_names(node)
    if names & locals_:
        raise NotStatic
    missing = [n for n in names if n not in namespace]
    if missing:
        raise UnresolvedName(
            "", f"the name {missing[0]!r}",
            "it is neither a local variable nor found in the functional's closure, module globals or builtins",
        )
    code = cst.Module(body=[]).code_for_node(node)
    try:
        return eval(compile(code, "<adjointgen>", "eval"), dict(namespace))  # noqa: S307 - source of an installed functional
    except Exception as exc:  # noqa: BLE001 - any failure means "not a build-time constant"
        raise NotStatic from exc


def is_scalar_type(value) -> bool:
    return isinstance(value, type) and wp.types.type_is_scalar(value) and value is not bool


def scalar_type_node(value) -> cst.BaseExpression:
    return cst.parse_expression(f"wp.{value.__name__}")


def _is_warp_scalar_value(value) -> bool:
    """A Warp scalar instance such as ``wp.float64(0.5)`` (what Warp constant vectors hold)."""
    return wp.types.type_is_scalar(type(value)) and hasattr(value, "value") and not isinstance(value, (bool, int, float))


def literal_node(value) -> cst.BaseExpression | None:
    """A libcst literal for a Python/NumPy/Warp bool, int or float; None for anything else."""
    if _is_warp_scalar_value(value):
        value = value.value
    if isinstance(value, (bool, np.bool_)):
        return cst.Name("True" if value else "False")
    if isinstance(value, (int, np.integer)):
        value = int(value)
        node = cst.Integer(str(abs(value)))
        return cst.UnaryOperation(cst.Minus(), node) if value < 0 else node
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            return None
        node = cst.Float(repr(abs(value)))
        return cst.UnaryOperation(cst.Minus(), node) if value < 0 or (value == 0 and np.signbit(value)) else node
    return None


def literal_value(node: cst.BaseExpression):
    """The Python value of a literal node (ints, floats, True/False, unary minus); else NotStatic."""
    if isinstance(node, cst.Integer):
        return int(node.value, 0)
    if isinstance(node, cst.Float):
        return float(node.value)
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = literal_value(node.expression)
        if isinstance(inner, bool):
            raise NotStatic
        return -inner
    raise NotStatic


def is_literal(node: cst.BaseExpression) -> bool:
    try:
        literal_value(node)
    except NotStatic:
        return False
    return True


def code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def refuse(ctx: PassContext, node: cst.CSTNode | None, construct: str, advice: str):
    raise UnsupportedConstruct(ctx.where(node), construct, advice)


__all__ = [
    "PassContext", "TAG", "NameAwareTransformer", "nonempty", "tag_of", "tag_line", "with_tag", "statement", "local_names", "free_names",
    "NotStatic", "evaluate", "is_scalar_type", "scalar_type_node", "literal_node", "literal_value",
    "is_literal", "code", "refuse", "is_user_function",
]
