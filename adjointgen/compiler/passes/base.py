"""Shared machinery of the source passes: the context they share, source-location tags, and
evaluation of expressions whose value is fixed when the kernel is built.

Location tags. Before any pass runs, :class:`~adjointgen.compiler.passes.locate.Locate` writes a comment
``# @src:<line>`` on every statement (``<line>`` is the line in the original file). Passes copy
nodes with ``with_changes`` and so keep the tag; :mod:`~adjointgen.compiler.passes.unroll` appends the
loop bindings (``# @src:64 l=3``). The lowering reads the tags to name, in the generated code, the
source line each statement comes from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import libcst as cst
import numpy as np
import warp as wp

from adjointgen.errors import UnresolvedName, UnsupportedConstruct
from adjointgen.compiler.frontend import Functional, functional_from, is_user_function, symbol_for

TAG = "# @src:"


@dataclass
class PassContext:
    """What the passes over one functional share.

    ``functions`` is shared by all functionals of one pipeline run: :class:`Resolve` adds every
    user ``@wp.func`` it meets, under the symbol that replaces the expression naming it.
    ``record`` (shared the same way) receives every build-time evaluation the passes make and
    every function they register, in order: what :mod:`~adjointgen.compiler.passes.record`
    replays to decide whether an earlier run's result still holds.
    """

    functional: Functional
    functions: dict = field(default_factory=dict)
    fresh_counter: int = 0
    exit_guards: list = field(default_factory=list)
    temporaries: set = field(default_factory=set)
    lifts: dict = field(default_factory=dict)  # id(python function) -> [parameters.Lifted]
    record: list = field(default_factory=list)  # [Evaluation | Registration], see passes.record
    fresh_names: list = field(default_factory=list)  # every name fresh() gave, in order

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
        return namespace_with(self.functional, self.functions)

    def evaluate(self, node: cst.BaseExpression, locals_: frozenset[str]):
        """The value of ``node`` if it only refers to closure, global and builtin names (and
        registered symbols); raises :class:`NotStatic` otherwise (a local is involved, or the
        expression cannot be evaluated), :class:`UnresolvedName` for a name found nowhere. Recorded
        with the value's :func:`fingerprint`."""
        return self._recorded(node, locals_, of_type=False)

    def evaluate_type(self, node: cst.BaseExpression):
        """The value of ``node``, recorded by its type alone (a lifted value: the kernel takes it
        as a parameter, so the value itself may change without changing the program)."""
        return self._recorded(node, frozenset(), of_type=True)

    def _recorded(self, node, locals_, of_type: bool):
        source = code(node)
        names = free_names_of(source)
        if names & locals_:
            raise NotStatic  # decided by the source text alone: nothing to record
        evaluation = Evaluation(self.functional.symbol, source, tuple(sorted(names)), of_type, NOT_STATIC)
        try:
            value = evaluation.value(self.namespace)
        except NotStatic:
            self.record.append(evaluation)
            raise
        self.record.append(replace(evaluation, fingerprint=evaluation.describe(value)))
        return value

    def fresh(self, stem: str) -> str:
        name = f"_{stem.strip('_')}_{self.fresh_counter}"
        self.fresh_counter += 1
        self.temporaries.add(name)
        self.fresh_names.append(name)
        return name

    def register_function(self, value, source: str) -> str:
        """The symbol under which the user function ``value`` (the value of the expression
        ``source``) is processed: its :func:`~adjointgen.compiler.frontend.symbol_for`, with a
        suffix when another function already holds that symbol."""
        functional = functional_from(value)
        existing = self.functions.get(functional.symbol)
        if existing is not None and existing.pyfunc is not functional.pyfunc:
            index = 2
            while f"{functional.symbol}_{index}" in self.functions and self.functions[f"{functional.symbol}_{index}"].pyfunc is not functional.pyfunc:
                index += 1
            functional.symbol = f"{functional.symbol}_{index}"
        self.functions.setdefault(functional.symbol, functional)
        self.record.append(Registration(self.functional.symbol, source, functional.symbol))
        return functional.symbol

    def where(self, node: cst.CSTNode | None = None) -> str:
        """``file:line`` of ``node`` (from its statement tag) or of the functional."""
        line = tag_line(node) if node is not None else None
        return f"{self.functional.filename}:{line or self.functional.first_line}"


def namespace_with(functional: Functional, functions: dict) -> dict:
    """Where a free name in ``functional`` resolves: its namespace, with the symbols registered
    in ``functions`` on top."""
    namespace = dict(functional.namespace)
    namespace.update({symbol: f.warp_object for symbol, f in functions.items()})
    return namespace


# ----------------------------------------------------------------------------- the record
NOT_STATIC = "not static"


@dataclass(frozen=True)
class Evaluation:
    """One build-time evaluation a pass made: in ``functional``, the expression ``code`` (free
    names ``names``) gave a value with this ``fingerprint`` (:func:`fingerprint`, or
    :func:`type_fingerprint` of its type when ``of_type``; :data:`NOT_STATIC` if it failed)."""

    functional: str
    code: str
    names: tuple
    of_type: bool
    fingerprint: str

    def value(self, namespace: dict):
        return evaluate_code(self.code, set(self.names), namespace)

    def describe(self, value) -> str:
        return type_fingerprint(type(value)) if self.of_type else fingerprint(value)


@dataclass(frozen=True)
class Registration:
    """The value of ``code`` in ``functional``, a user function, registered as ``symbol``."""

    functional: str
    code: str
    symbol: str

    def value(self, namespace: dict):
        """The function ``code`` names in ``namespace`` (it evaluated when recorded)."""
        return eval(compile(self.code, "<adjointgen>", "eval"), namespace)  # noqa: S307 - as the passes did


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
def local_names(module: cst.Module) -> frozenset[str]:
    """The names bound in ``module``: parameters of its functions, assignment (plain, augmented,
    annotated) and ``for`` targets, unpacking tuples and lists, in every nested block.

    Walks statements only, never into expressions (a pass calls this on whole unrolled
    functionals, many times): names bound inside expressions (lambda parameters, comprehension
    variables, ``:=``) are not included; Warp compiles none of those in a functional."""
    names: set[str] = set()
    for statement in walk_statements(module.body):
        if isinstance(statement, cst.FunctionDef):
            names.update(param.name.value for param in parameters_of(statement))
        elif isinstance(statement, cst.For):
            _add_targets(statement.target, names)
        elif isinstance(statement, cst.Assign):
            for target in statement.targets:
                _add_targets(target.target, names)
        elif isinstance(statement, (cst.AugAssign, cst.AnnAssign)):
            _add_targets(statement.target, names)
    return frozenset(names)


def _add_targets(target, names: set[str]) -> None:
    if isinstance(target, cst.Name):
        names.add(target.value)
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            _add_targets(element.value, names)


def walk_statements(statements):
    """Every statement in ``statements`` and in the blocks nested in them, in source order:
    small statements (``Assign``, ``Return``, ...) and compound ones (``If``, ``For``,
    ``FunctionDef``, ...), never what is inside an expression."""
    for statement in statements:
        if isinstance(statement, cst.SimpleStatementLine):
            yield from statement.body
        elif isinstance(statement, cst.BaseSmallStatement):
            yield statement
        else:
            yield statement
            for block in _blocks_of(statement):
                yield from walk_statements(block)


def parameters_of(function: cst.FunctionDef) -> list[cst.Param]:
    params = function.params
    every = (*params.posonly_params, *params.params, *params.kwonly_params, params.star_arg, params.star_kwarg)
    return [param for param in every if isinstance(param, cst.Param)]


def _blocks_of(statement) -> list:
    """The statement lists nested in a compound statement (bodies, else and elif, handlers)."""
    blocks = []
    for part in (getattr(statement, "body", None), getattr(statement, "orelse", None), getattr(statement, "finalbody", None),
                 *getattr(statement, "handlers", ())):
        if isinstance(part, cst.If):  # elif
            blocks.append([part])
        elif isinstance(part, (cst.IndentedBlock, cst.SimpleStatementSuite)):
            blocks.append(part.body)
        elif part is not None and isinstance(getattr(part, "body", None), (cst.IndentedBlock, cst.SimpleStatementSuite)):
            blocks.append(part.body.body)  # else, except, finally
    return blocks


class _FreeNames(cst.CSTVisitor):
    def __init__(self):
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name):
        self.names.add(node.value)

    def visit_Attribute(self, node: cst.Attribute):
        node.value.visit(self)
        return False  # the attribute name itself is not a free name

    def visit_Arg(self, node: cst.Arg):
        node.value.visit(self)
        return False  # keyword names are not free names


def free_names(node: cst.CSTNode) -> set[str]:
    visitor = _FreeNames()
    node.visit(visitor)
    return visitor.names


@functools.lru_cache(maxsize=65536)
def free_names_of(source: str) -> frozenset[str]:
    """:func:`free_names` of the expression ``source`` (the passes evaluate the same table
    lookups thousands of times in an unrolled functional)."""
    return frozenset(free_names(cst.parse_expression(source)))


# ----------------------------------------------------------------------------- static values
class NotStatic(Exception):
    pass


def evaluate_code(source: str, names: set[str], namespace: dict):
    """The value of the expression ``source`` (whose free names are ``names``) in ``namespace``;
    raises :class:`NotStatic` if it cannot be evaluated, :class:`UnresolvedName` for a missing name."""
    missing = sorted(n for n in names if n not in namespace)
    if missing:
        raise UnresolvedName(
            "", f"the name {missing[0]!r}",
            "it is neither a local variable nor found in the functional's closure, module globals or builtins",
        )
    try:
        return eval(compile(source, "<adjointgen>", "eval"), namespace)  # noqa: S307 - source of an installed functional
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


def vector_info(value):
    """("vector", length, scalar type) or ("matrix", shape, scalar type) for a Warp vector or matrix
    *type*; None for anything else."""
    length = getattr(value, "_length_", None)
    scalar = getattr(value, "_wp_scalar_type_", None)
    shape = getattr(value, "_shape_", None)
    if not isinstance(value, type) or scalar is None:
        return None
    if shape is not None and len(shape) == 2:
        return "matrix", tuple(int(s) for s in shape), scalar
    if length is not None:
        return "vector", int(length), scalar
    return None


def constant_vector(value):
    """``wp.vector(c0, c1, ..., length=n, dtype=wp.T)`` for a Warp vector *instance* held in a
    closure (e.g. a boundary condition's prescribed velocity); None for anything else."""
    info = vector_info(type(value))
    if info is None or info[0] != "vector" or isinstance(value, type):
        return None
    literals = [literal_node(float(c) if info[2].__name__.startswith("float") else int(c)) for c in value]
    if any(lit is None for lit in literals):
        return None
    args = [cst.Arg(lit) for lit in literals]
    args.append(cst.Arg(cst.Integer(str(info[1])), keyword=cst.Name("length"),
                        equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))))
    args.append(cst.Arg(scalar_type_node(info[2]), keyword=cst.Name("dtype"),
                        equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))))
    return cst.Call(func=cst.Attribute(cst.Name("wp"), cst.Name("vector")), args=args)


def fingerprint(value) -> str:
    """What the passes can do with ``value``, as text: two values with the same fingerprint are
    written into the source alike (the same literal, type, constant vector or function symbol)
    or left alone alike (``opaque``). The classes follow :class:`Resolve`'s order."""
    literal = literal_node(value)
    if literal is not None:
        return f"literal {code(literal)}"
    if is_scalar_type(value):
        return f"scalar {value.__name__}"
    if vector_info(value) is not None:
        return type_fingerprint(value)
    vector = constant_vector(value)
    if vector is not None:
        return f"vector {code(vector)}"
    if is_user_function(value):
        return f"function {symbol_for(value.func)}"
    return "opaque"


def type_fingerprint(value_type) -> str:
    info = vector_info(value_type)
    if info is None:
        return f"type {value_type.__module__}.{value_type.__qualname__}"
    kind, size, scalar = info
    return f"{kind} type {size} {scalar.__name__}"


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
    "PassContext", "TAG", "NameAwareTransformer", "nonempty", "tag_of", "tag_line", "with_tag", "statement", "local_names",
    "walk_statements", "parameters_of", "free_names", "free_names_of",
    "NotStatic", "evaluate_code", "Evaluation", "Registration", "NOT_STATIC", "fingerprint", "type_fingerprint",
    "namespace_with", "vector_info", "constant_vector", "is_scalar_type", "scalar_type_node", "literal_node", "literal_value",
    "is_literal", "code", "refuse", "is_user_function",
]
