"""What the lint rules need to know about one Warp function, found statically.

Guarantees:

- :meth:`Facts.integer` evaluates an integer expression the way Warp's code generator sees it:
  ``const`` when Warp gets a compile-time integer (a literal, a kernel local bound once to a
  literal, or a closure/global name or attribute chain that evaluates to an int when the module
  is built), ``runtime`` when the value is only known on the device (a kernel argument, a local
  computed at run time, a loop variable), and ``unknown`` when the lint cannot tell (say why).
  It never guesses: ``self.velocity_set.q`` is only a number when a velocity set was given.
- :meth:`Facts.kind` says whether a name is an ``array``, a ``value`` (scalar, vector, matrix)
  or ``unknown`` (an ``Any`` parameter never indexed like an array).
- :meth:`Facts.differentiable` says whether a name holds a floating-point value derived from a
  floating-point argument; ``Any`` arguments do not count (unknown is not differentiable here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from .sources import SourceFile, WarpFunction, _dotted

_ARRAY_ANNOTATION = re.compile(r"\b(array\dd|array|indexedarray\dd|indexedarray|fabricarray|indexedfabricarray)\b")
_FLOAT_TYPE = re.compile(r"\b(float|float16|float32|float64|half|vec\w*|mat\w*|quat\w*|transform\w*|spatial_\w+)\b")
_VALUE_TYPE = re.compile(r"(float|float16|float32|float64|half|int|int8|int16|int32|int64|uint8|uint16|uint32|uint64|bool"
                         r"|vec\w*|mat\w*|quat\w*|transform\w*|spatial_\w+)(\(.*\))?")
INT_CASTS = {"int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}
ROUNDING = {"floor", "ceil", "round", "rint", "trunc", "sign", "step"}
FLOAT_CASTS = {"float", "float16", "float32", "float64"}


@dataclass
class ArrayEffects:
    """First plain store and first load of each array a function touches: directly, or through
    a call to another Warp function of the same file that stores or loads its argument."""

    stores: dict = field(default_factory=dict)  # name -> Subscript target or Call node
    reads: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Integer:
    status: str  # "const", "runtime" or "unknown"
    value: int | None = None
    why: str = ""


def walk(node: cst.CSTNode, into_functions: bool = False):
    """Every node below ``node`` (itself included), not entering nested ``def`` s."""
    yield node
    for child in node.children:
        if isinstance(child, cst.FunctionDef) and not into_functions:
            continue
        yield from walk(child, into_functions)


def code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def subscript_base(node: cst.Subscript) -> str | None:
    return node.value.value if isinstance(node.value, cst.Name) else None


def index_count(node: cst.Subscript) -> int:
    return len(node.slice)


def call_name(node: cst.Call, warp_names: set[str]) -> str | None:
    """``"int32"`` for ``wp.int32(...)``, ``"int"`` for ``int(...)``, else the dotted name."""
    dotted = _dotted(node.func)
    if dotted is None:
        return None
    base, _, attr = dotted.rpartition(".")
    if base in warp_names or base == "":
        return attr
    return dotted


class _Bindings:
    """Names a ``def`` (or the module) binds, not looking into nested functions."""

    def __init__(self, scope: cst.CSTNode):
        self.params: set[str] = set()
        self.assigned: dict[str, list] = {}  # name -> [value node or None]
        self.loop_vars: set[str] = set()
        if isinstance(scope, cst.FunctionDef):
            p = scope.params
            for param in [*p.posonly_params, *p.params, *p.kwonly_params]:
                self.params.add(param.name.value)
            for star in (p.star_arg, p.star_kwarg):
                if isinstance(star, cst.Param):
                    self.params.add(star.name.value)
            body = scope.body
        else:
            body = scope
        for node in walk(body):
            if node is not body and isinstance(node, (cst.FunctionDef, cst.ClassDef)):
                self._bind(node.name.value, None)
            elif isinstance(node, cst.Assign):
                for target in node.targets:
                    self._bind_target(target.target, node.value)
            elif isinstance(node, cst.AnnAssign) and node.value is not None:
                self._bind_target(node.target, node.value)
            elif isinstance(node, cst.AugAssign):
                self._bind_target(node.target, None)
                self._bind_target(node.target, None)
            elif isinstance(node, (cst.For, cst.CompFor)):
                for name in _target_names(node.target):
                    self.loop_vars.add(name)
                    self._bind(name, None)
            elif isinstance(node, (cst.Import, cst.ImportFrom)) and not isinstance(node.names, cst.ImportStar):
                for alias in node.names:
                    name = alias.asname.name if alias.asname else alias.name
                    self._bind((_dotted(name) or "").split(".")[0], None)

    def _bind_target(self, target, value):
        if isinstance(target, cst.Name):
            self._bind(target.value, value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for name in _target_names(target):
                self._bind(name, None)

    def _bind(self, name: str, value):
        self.assigned.setdefault(name, []).append(value)


def _target_names(target) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for element in target.elements for n in _target_names(element.value)]
    return []


class Facts:
    def __init__(self, source: SourceFile, function: WarpFunction, velocity_set: str | None):
        self.source = source
        self.function = function
        self.velocity_set = velocity_set
        self.own = _Bindings(function.node)
        self.outer = [(f, _Bindings(f)) for f in reversed(function.enclosing)]
        self.module = _Bindings(source.module)
        self._kinds = self._find_kinds()
        self._differentiable = self._find_differentiable()

    # -- integers ---------------------------------------------------------------------------
    def velocity_attribute(self, node) -> Integer | None:
        dotted = _dotted(node) or ""
        match = re.search(r"(^|\.)velocity_set\.(q|d)$", dotted)
        if match is None:
            return None
        if self.velocity_set is None:
            return Integer("unknown", why=f"{dotted} depends on the velocity set (pass --velocity-set)")
        d, q = (int(n) for n in re.fullmatch(r"D(\d+)Q(\d+)", self.velocity_set).groups())
        return Integer("const", d if match[2] == "d" else q)

    def integer(self, node: cst.BaseExpression) -> Integer:
        """The value Warp sees for an integer expression inside this Warp function."""
        if isinstance(node, cst.Name):
            if node.value in self.own.params:
                return Integer("runtime", why=f"{node.value} is an argument of {self.function.name}")
            if node.value in self.own.loop_vars:
                return Integer("runtime", why=f"{node.value} is a loop variable")
            values = self.own.assigned.get(node.value)
            if values is not None:
                return self._own_local(node.value, values)
            return self._closure(node.value, depth=0)
        if isinstance(node, cst.BinaryOperation):
            return self._python(node, self.integer, depth=0)
        return self._python(node, lambda n: self._closure_expression(n, 1), depth=0)

    def _own_local(self, name: str, values: list) -> Integer:
        """A local bound once to something Warp resolves when it builds (a literal, a closure
        name or attribute) is a constant to Warp; arithmetic in the kernel is a run-time value."""
        runtime = Integer("runtime", why=f"{name} is computed in {self.function.name}")
        if len(values) != 1 or values[0] is None or isinstance(values[0], cst.BinaryOperation):
            return runtime
        value = values[0]
        if isinstance(value, cst.Name):
            return self.integer(value)
        result = self._python(value, lambda n: self._closure_expression(n, 1), depth=0)
        if result.status == "unknown" and not isinstance(value, (cst.Attribute, cst.Call)):
            return runtime
        return result

    def _closure(self, name: str, depth: int) -> Integer:
        for scope, bindings in self.outer:
            if name in bindings.params:
                return Integer("unknown", why=f"{name} is an argument of {scope.name.value}()")
            if name in bindings.assigned:
                return self._bound_once(name, bindings.assigned[name], depth)
        if name in self.module.assigned:
            return self._bound_once(name, self.module.assigned[name], depth)
        return Integer("unknown", why=f"{name} is not bound in this file")

    def _bound_once(self, name: str, values: list, depth: int) -> Integer:
        if len(values) != 1 or values[0] is None:
            return Integer("unknown", why=f"{name} is bound more than once or by an import")
        if depth > 20:
            return Integer("unknown", why=f"{name} is defined in a cycle")
        return self._python(values[0], lambda n: self._closure_expression(n, depth + 1), depth + 1)

    def _closure_expression(self, node, depth: int) -> Integer:
        if isinstance(node, cst.Name):
            return self._closure(node.value, depth)
        return self._python(node, lambda n: self._closure_expression(n, depth + 1), depth)

    def _python(self, node, recurse, depth: int) -> Integer:
        literal = _int_literal(node)
        if literal is not None:
            return Integer("const", literal)
        velocity = self.velocity_attribute(node)
        if velocity is not None:
            return velocity
        if isinstance(node, cst.BinaryOperation):
            left, right = recurse(node.left), recurse(node.right)
            for side in (left, right):
                if side.status != "const":
                    return side
            ops = {cst.Add: lambda a, b: a + b, cst.Subtract: lambda a, b: a - b, cst.Multiply: lambda a, b: a * b,
                   cst.FloorDivide: lambda a, b: a // b if b else None, cst.Modulo: lambda a, b: a % b if b else None}
            op = ops.get(type(node.operator))
            result = op(left.value, right.value) if op else None
            return Integer("const", result) if result is not None else Integer("unknown", why=f"{code(node)} is not an integer operation")
        if isinstance(node, cst.Call) and len(node.args) == 1:
            name = call_name(node, self.source.warp_names)
            if name in ("static", "constant", "int", "int32", "int64"):
                return recurse(node.args[0].value)
        return Integer("unknown", why=f"{code(node)} is not a constant the lint can evaluate")

    # -- kinds ------------------------------------------------------------------------------
    def _find_kinds(self) -> dict[str, str]:
        kinds: dict[str, str] = {}
        for param in self.function.node.params.params:
            annotation = code(param.annotation.annotation) if param.annotation else "Any"
            if _ARRAY_ANNOTATION.search(annotation):
                kinds[param.name.value] = "array"
            elif _VALUE_TYPE.fullmatch(annotation.split(".")[-1].strip()):
                kinds[param.name.value] = "value"
            else:  # Any, or a name bound to some type elsewhere
                kinds[param.name.value] = "unknown"
        for node in walk(self.function.node.body):
            if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
                name = node.targets[0].target.value
                if name in kinds:
                    continue
                if isinstance(node.value, cst.Name):
                    kinds[name] = kinds.get(node.value.value, "unknown")
                else:
                    kinds[name] = "value"
        for node in walk(self.function.node.body):
            if isinstance(node, cst.Subscript) and kinds.get(subscript_base(node)) == "unknown" and index_count(node) >= 3:
                kinds[subscript_base(node)] = "array"
        return kinds

    def kind(self, name: str | None) -> str:
        return self._kinds.get(name, "unknown") if name else "unknown"

    # -- array effects ----------------------------------------------------------------------
    def array_effects(self, _seen: frozenset = frozenset()) -> ArrayEffects:
        effects = ArrayEffects()
        body = self.function.node.body
        targets = set()
        for node in walk(body):
            if isinstance(node, cst.Assign):
                for target in node.targets:
                    base = subscript_base(target.target) if isinstance(target.target, cst.Subscript) else None
                    if base is not None and self.kind(base) == "array":
                        targets.add(id(target.target))
                        effects.stores.setdefault(base, target.target)
            elif isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Subscript):
                targets.add(id(node.target))
        callees = {f.node.name.value: f for f in self.source.functions if f.kind == "func"}
        for node in walk(body):
            if isinstance(node, cst.Subscript) and id(node) not in targets and self.kind(subscript_base(node)) == "array":
                effects.reads.setdefault(subscript_base(node), node)
            elif isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in callees:
                callee = callees[node.func.value]
                if id(callee.node) in _seen or callee.node is self.function.node:
                    continue
                inner = Facts(self.source, callee, self.velocity_set).array_effects(_seen | {id(self.function.node)})
                params = [p.name.value for p in callee.node.params.params]
                for param, arg in zip(params, node.args):
                    if arg.keyword is None and isinstance(arg.value, cst.Name) and self.kind(arg.value.value) != "value":
                        if param in inner.stores:
                            effects.stores.setdefault(arg.value.value, node)
                        if param in inner.reads:
                            effects.reads.setdefault(arg.value.value, node)
        return effects

    # -- differentiable values --------------------------------------------------------------
    def _find_differentiable(self) -> set[str]:
        marked: set[str] = set()
        for param in self.function.node.params.params:
            annotation = code(param.annotation.annotation) if param.annotation else ""
            if _ARRAY_ANNOTATION.search(annotation):
                dtype = re.search(r"dtype\s*=\s*([\w.]+)", annotation)
                if dtype and _FLOAT_TYPE.search(dtype[1].split(".")[-1]):
                    marked.add(param.name.value)
            elif _FLOAT_TYPE.fullmatch(annotation.split(".")[-1].strip() or "-"):
                marked.add(param.name.value)
        for _ in range(3):  # a few passes reach assignments in loops
            for node in walk(self.function.node.body):
                value, targets = None, []
                if isinstance(node, cst.Assign):
                    value, targets = node.value, [t.target for t in node.targets]
                elif isinstance(node, cst.AugAssign):
                    value, targets = node.value, [node.target]
                elif isinstance(node, cst.AnnAssign) and node.value is not None:
                    value, targets = node.value, [node.target]
                if value is not None and self.is_differentiable(value, marked):
                    for target in targets:
                        marked.update(_target_names(target))
        return marked

    def is_differentiable(self, node: cst.BaseExpression, marked: set[str] | None = None) -> bool:
        """True when ``node``'s value is floating point and depends on a differentiable input."""
        marked = self._differentiable if marked is None else marked
        if isinstance(node, cst.Call):
            name = call_name(node, self.source.warp_names)
            if name in INT_CASTS or name in ROUNDING or name == "tid":
                return False
        if isinstance(node, cst.Comparison):
            return False
        if isinstance(node, cst.Name):
            return node.value in marked
        if isinstance(node, (cst.Subscript, cst.Attribute)):
            return self.is_differentiable(node.value, marked)
        return any(self.is_differentiable(child, marked) for child in _expressions_below(node))


def _expressions_below(node):
    """The nearest expressions below ``node``, looking through argument and index wrappers."""
    for child in node.children:
        if isinstance(child, cst.BaseExpression):
            yield child
        else:
            yield from _expressions_below(child)


def _int_literal(node) -> int | None:
    if isinstance(node, cst.Integer):
        return int(node.value, 0)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and isinstance(node.expression, cst.Integer):
        return -int(node.expression.value, 0)
    return None

