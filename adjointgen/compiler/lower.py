"""Lowering: interpret the processed functionals symbolically into one per-cell :class:`Program`.

Starts at the kernel, inlines every call of a registered functional, and records

- each read of an array element as a :class:`~adjointgen.compiler.ir.Load`,
- each floating-point assignment (scalar or vector component) as an :class:`~adjointgen.compiler.ir.Assign`
  whose right-hand side is the source expression over earlier statements (identical right-hand
  sides are shared: common subexpressions are computed once),
- each write of an array element as a :class:`~adjointgen.compiler.ir.Store`; a write of
  ``wp.where(exit, a[idx], v)`` into ``a[idx]`` (the branchless form of an early return) becomes a
  store of ``v`` that keeps the old value where ``exit`` holds.

Integer and boolean values (indices, masks, conditions) stay inline as sympy expressions. Then
statements that no store depends on are removed. Any construct outside this subset is refused
with its ``file:line``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import libcst as cst
import sympy

from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.ir import FLOAT_TYPES, Assign, Load, Origin, Program, Select, Store
from adjointgen.compiler.passes.base import code, literal_value, NotStatic, tag_of
from adjointgen.xlb.fields import field_of

_INT_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


@dataclass
class Scalar:
    expr: sympy.Expr
    dtype: str  # "float32"/"float64", an int type, or "bool"

    @property
    def is_float(self):
        return self.dtype in FLOAT_TYPES


@dataclass
class Vector:
    items: list
    dtype: str


@dataclass
class ArrayRef:
    name: str
    dtype: str
    ndim: int


@dataclass
class ShapeRef:
    array: ArrayRef


@dataclass
class FunctionRef:
    symbol: str


@dataclass
class TypeOf:
    value: object


class _Return(Exception):
    def __init__(self, value):
        self.value = value


def _sanitize(name: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "t"
    return name


class Lowering:
    def __init__(self, kernel, processed: dict, compute_dtype: str, arg_types: dict, exit_guards=()):
        """``processed`` maps functional symbol -> (Functional, processed libcst module);
        ``arg_types`` maps kernel parameter name -> Param; ``exit_guards`` are the kernel's
        early-exit variables (from the branchless pass)."""
        self.kernel = kernel
        self.processed = processed
        self.compute_dtype = compute_dtype
        self.arg_types = arg_types
        self.statements: list = []
        self.stores: list = []
        self.dtypes: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}
        self.counters: dict[str, int] = {}
        self.cse: dict = {}
        self.load_cse: dict = {}
        self.thread: tuple = ()
        self.functional = kernel
        self.tag: str | None = None
        self.depth = 0
        self.call_stack: list[str] = []
        self.kernel_scalars: dict = {}
        self.exit_guards = tuple(exit_guards)
        self.kernel_env: dict | None = None  # the kernel body's variables (exit conditions live there)
        self.current: dict = {}  # (array, index) -> the value a read sees after this cell stored it

    # ------------------------------------------------------------------ helpers
    def where(self) -> str:
        line = self.tag.split()[0] if self.tag else self.functional.first_line
        return f"{self.functional.filename}:{line}"

    def refuse(self, construct: str, advice: str):
        raise UnsupportedConstruct(self.where(), construct, advice)

    def origin(self) -> Origin:
        if not self.tag:
            return Origin(os.path.basename(self.functional.filename))
        line, *bindings = self.tag.split()
        text = self.functional.source_line(int(line))
        return Origin(f"{os.path.basename(self.functional.filename)}:{line}  {text}", tuple(bindings))

    def fresh(self, base: str, dtype: str, integer: bool = False) -> sympy.Symbol:
        base = _sanitize(base)
        count = self.counters.get(base, 0)
        self.counters[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        while name in self.dtypes or name in self.arg_types:
            count += 1
            self.counters[base] = count + 1
            name = f"{base}_{count}"
        self.dtypes[name] = dtype
        if integer or dtype not in FLOAT_TYPES:
            return sympy.Symbol(name, integer=True)
        return sympy.Symbol(name, real=True)

    def materialize(self, value, base: str):
        """Give a floating-point expression its own statement (numbers and symbols stay inline)."""
        if isinstance(value, Vector):
            return Vector([self.materialize(item, f"{base}_{n}") for n, item in enumerate(value.items)], value.dtype)
        if isinstance(value, Scalar) and value.is_float and not (value.expr.is_Symbol or value.expr.is_Number):
            key = (value.expr, value.dtype)
            symbol = self.cse.get(key)
            if symbol is None:
                symbol = self.fresh(base, value.dtype)
                self.statements.append(Assign(symbol, value.expr, self.origin()))
                self.cse[key] = symbol
            return Scalar(symbol, value.dtype)
        return value

    # ------------------------------------------------------------------ entry
    def run(self, name: str) -> Program:
        functional, module = self.processed[self.kernel.symbol]
        fdef = _function_def(module)
        source_params = [param.name.value for param in fdef.params.params]
        for name in source_params:
            if name not in self.arg_types:
                self.refuse(f"kernel parameter {name!r}", "adjointgen knows the XLB stepper's parameters only")
        values = {}
        for p in self.arg_types.values():
            if p.kind == "array":
                values[p.name] = ArrayRef(p.name, p.dtype, p.ndim)
            else:
                is_float = p.dtype in FLOAT_TYPES
                symbol = sympy.Symbol(p.name, real=True) if is_float else sympy.Symbol(p.name, integer=True)
                values[p.name] = self.kernel_scalars[p.name] = Scalar(symbol, p.dtype)
                self.dtypes[p.name] = p.dtype
        # the kernel body sees the parameters it declares; lifted boundary values (scalar kernel
        # parameters the source does not declare) are found through kernel_scalars, from any depth
        env = {name: values[name] for name in source_params}
        self.kernel_env = env
        self.execute(fdef.body.body, env)
        program = Program(
            name=name,
            params=list(self.arg_types.values()),
            statements=self.statements,
            stores=self.stores,
            dtypes=self.dtypes,
            thread=self.thread,
            shapes=self.shapes,
            compute_dtype=self.compute_dtype,
        )
        return eliminate_dead_code(program)

    # ------------------------------------------------------------------ statements
    def execute(self, body, env):
        for line in body:
            if isinstance(line, cst.SimpleStatementLine):
                self.tag = tag_of(line) or self.tag
                for small in line.body:
                    self.small_statement(small, env)
            else:
                self.tag = tag_of(line) or self.tag
                kind = type(line).__name__
                advice = {
                    "For": "only loops over constant ranges can be differentiated; make the trip count a build-time constant",
                    "While": "data-dependent loops cannot be unrolled; rewrite with a constant trip count",
                    "If": "internal: branches should have been made branchless",
                }.get(kind, "rewrite it with assignments, selects and constant loops")
                self.refuse(f"a {kind} statement", advice)

    def small_statement(self, small, env):
        if isinstance(small, cst.Pass):
            return
        if isinstance(small, cst.Expr):
            if isinstance(small.value, cst.SimpleString):
                return  # a docstring
            self.expression(small.value, env)
            return
        if isinstance(small, cst.Return):
            raise _Return(self.expression(small.value, env) if small.value is not None else None)
        if isinstance(small, cst.Assign):
            value = self.expression(small.value, env)
            for target in small.targets:
                self.assign(target.target, value, env)
            return
        if isinstance(small, cst.AugAssign):
            op = type(small.operator).__name__.replace("Assign", "")
            current = self.expression(small.target, env)
            value = self.binary(op, current, self.expression(small.value, env))
            self.assign(small.target, value, env)
            return
        if isinstance(small, cst.AnnAssign) and small.value is not None:
            self.assign(small.target, self.expression(small.value, env), env)
            return
        self.refuse(f"`{code(small).strip()}`", "this statement kind is not supported in a differentiable functional")

    def assign(self, target, value, env):
        if isinstance(target, cst.Name):
            env[target.value] = self.materialize(value, target.value)
            return
        if isinstance(target, (cst.Tuple, cst.List)):
            items = value if isinstance(value, tuple) else (value.items if isinstance(value, Vector) else None)
            if items is None or len(items) != len(target.elements):
                self.refuse("a tuple assignment whose sizes do not match", "unpack exactly the values returned")
            for element, item in zip(target.elements, items):
                self.assign(element.value, item, env)
            return
        if isinstance(target, cst.Subscript):
            base = self.expression(target.value, env)
            indices = [self.expression(el.slice.value, env) for el in target.slice]
            if isinstance(base, ArrayRef):
                self.store(base, indices, value)
                return
            if isinstance(base, Vector):
                position = self.constant_index(indices)
                items = list(base.items)
                if not isinstance(value, Scalar):
                    self.refuse("assigning a non-scalar into a vector component", "assign one component at a time")
                name = target.value.value if isinstance(target.value, cst.Name) else "v"
                items[position] = self.materialize(self.cast(value, base.dtype), f"{name}_{position}")
                if isinstance(target.value, cst.Name):
                    env[target.value.value] = Vector(items, base.dtype)
                return
        self.refuse(f"assignment to `{code(target)}`", "assign to a variable, a vector component or an array element")

    def constant_index(self, indices) -> int:
        if len(indices) != 1 or not isinstance(indices[0], Scalar) or not indices[0].expr.is_Integer:
            self.refuse("a vector index that is not a build-time constant",
                        "index vectors with constants (loops over constant ranges are unrolled)")
        return int(indices[0].expr)

    def store(self, array: ArrayRef, indices, value):
        """Record ``array[indices] = value``. A value of the form ``where(c, v, <old element>)`` is a
        conditional store of ``v`` (``when=c``); ``where(_exit, <old element>, v)`` (the branchless
        pass's guard) keeps the old element on exiting cells. A store inside a functional called
        after the kernel's early return gets the exit as its keep condition."""
        index = tuple(self.index_expr(i) for i in indices)
        if not isinstance(value, Scalar):
            self.refuse("storing a non-scalar into an array element", "store one element at a time")
        key = (array.name, index)
        old = self.current.get(key, self.load_cse.get(key))
        keep = when = None
        expr = value.expr
        if old is not None and isinstance(expr, Select) and expr.args[1] == old and self._is_exit(expr.args[0]):
            keep, expr = expr.args[0], expr.args[2]
        while old is not None and isinstance(expr, Select) and old in expr.args[1:]:
            # where(c, v, old): store v only where c holds (nested selects narrow it further)
            condition, a, b = expr.args
            condition, expr = (condition, a) if b == old else (sympy.Not(condition), b)
            when = condition if when is None else sympy.And(when, condition)
        if keep is None and self.depth > 0 and self.exit_active:
            keep = self.exit_condition()
        value = self.materialize(self.cast(Scalar(expr, value.dtype), array.dtype), f"{array.name}_out")
        self.stores.append(Store(array.name, index, value.expr, self.origin(), keep, when))
        # what a later read of this element in the same cell sees
        self.current[key] = value.expr if when is None else Select(when, value.expr, old)

    def _is_exit(self, condition) -> bool:
        return self.kernel_env is not None and condition == self.exit_condition()

    def exit_condition(self):
        """The kernel's early-exit condition as it stands (the last exit variable bound)."""
        names = [name for name in self.exit_guards if name in (self.kernel_env or {})]
        return self.truth(self.kernel_env[names[-1]]) if names else None

    @property
    def exit_active(self) -> bool:
        """True once the kernel has passed an early return (the branchless pass's exit value)."""
        return self.exit_condition() is not None

    def index_expr(self, value):
        if not isinstance(value, Scalar) or value.is_float:
            self.refuse("an array index that is not an integer", "index arrays with integers")
        return value.expr

    # ------------------------------------------------------------------ expressions
    def expression(self, node, env):
        numeric = (cst.Integer, cst.Float)
        if isinstance(node, numeric) or (isinstance(node, cst.UnaryOperation) and isinstance(node.expression, numeric)):
            try:
                value = literal_value(node)
            except NotStatic:
                value = None
            if isinstance(value, int):
                return Scalar(sympy.Integer(value), "int32")
            if isinstance(value, float):
                return Scalar(sympy.Float(value), self.compute_dtype)
        if isinstance(node, cst.Name):
            if node.value in ("True", "False"):
                return Scalar(sympy.true if node.value == "True" else sympy.false, "bool")
            if node.value in env:
                return env[node.value]
            if node.value in self.kernel_scalars:  # a lifted parameter, used inside a functional
                return self.kernel_scalars[node.value]
            if node.value in self.processed:
                return FunctionRef(node.value)
            if node.value == "type":
                return "type"
            self.refuse(f"the name {node.value!r}", "it is not defined at this point of the functional")
        if isinstance(node, cst.Attribute):
            if isinstance(node.value, cst.Name) and node.value.value == "wp":
                return ("wp", node.attr.value)
            base = self.expression(node.value, env)
            if isinstance(base, ArrayRef) and node.attr.value == "shape":
                return ShapeRef(base)
            self.refuse(f"the attribute `{code(node)}`", "only array.shape and wp.* are supported")
        if isinstance(node, cst.Subscript):
            return self.subscript(node, env)
        if isinstance(node, cst.BinaryOperation):
            op = type(node.operator).__name__
            return self.binary(op, self.expression(node.left, env), self.expression(node.right, env))
        if isinstance(node, cst.UnaryOperation):
            operand = self.expression(node.expression, env)
            if isinstance(node.operator, cst.Minus):
                if isinstance(operand, Scalar) and not operand.is_float:
                    return Scalar(-operand.expr, operand.dtype)
                return self.binary("Multiply", Scalar(sympy.Integer(-1), "int32"), operand)
            if isinstance(node.operator, cst.Plus):
                return operand
            if isinstance(node.operator, cst.Not):
                return Scalar(sympy.Not(self.truth(operand)), "bool")
        if isinstance(node, cst.Comparison):
            return self.comparison(node, env)
        if isinstance(node, cst.BooleanOperation):
            left, right = self.truth(self.expression(node.left, env)), self.truth(self.expression(node.right, env))
            return Scalar(sympy.And(left, right) if isinstance(node.operator, cst.And) else sympy.Or(left, right), "bool")
        if isinstance(node, cst.Call):
            return self.call(node, env)
        if isinstance(node, cst.Tuple):
            return tuple(self.expression(el.value, env) for el in node.elements)
        self.refuse(f"the expression `{code(node)}`", "it is outside the subset adjointgen differentiates")

    def truth(self, value):
        if not isinstance(value, Scalar):
            self.refuse("a condition that is not a scalar", "compare scalars")
        if value.dtype == "bool":
            return value.expr
        return sympy.Ne(value.expr, 0)

    def comparison(self, node, env):
        if len(node.comparisons) != 1:
            self.refuse("a chained comparison", "split it with `and`")
        left = self.expression(node.left, env)
        right = self.expression(node.comparisons[0].comparator, env)
        if not (isinstance(left, Scalar) and isinstance(right, Scalar)):
            self.refuse("a comparison of non-scalars", "compare scalars")
        op = type(node.comparisons[0].operator).__name__
        make = {"Equal": sympy.Eq, "NotEqual": sympy.Ne, "LessThan": sympy.Lt, "LessThanEqual": sympy.Le,
                "GreaterThan": sympy.Gt, "GreaterThanEqual": sympy.Ge}.get(op)
        if make is None:
            self.refuse(f"the comparison operator {op}", "use ==, !=, <, <=, > or >=")
        return Scalar(make(left.expr, right.expr), "bool")

    def subscript(self, node, env):
        base = self.expression(node.value, env)
        indices = [self.expression(el.slice.value, env) for el in node.slice]
        if isinstance(base, Vector):
            return base.items[self.constant_index(indices)]
        if isinstance(base, ShapeRef):
            axis = self.constant_index(indices)
            name = f"{base.array.name}_shape_{axis}"
            self.shapes[name] = (base.array.name, axis)
            self.dtypes[name] = "int32"
            return Scalar(sympy.Symbol(name, integer=True, positive=True), "int32")
        if isinstance(base, ArrayRef):
            if len(indices) != base.ndim:
                self.refuse(f"reading {base.name} with {len(indices)} indices", f"index all {base.ndim} axes")
            return self.load(base, tuple(self.index_expr(i) for i in indices))
        if isinstance(base, tuple):
            return base[self.constant_index(indices)]
        self.refuse(f"subscript of `{code(node.value)}`", "subscript vectors, arrays and array.shape only")

    def load(self, base: ArrayRef, index: tuple) -> Scalar:
        """``base[index]``. An index that depends on run-time data through a select (XLB's
        extrapolation outlet reads the neighbour along a normal found from the missing mask) is
        split into one read per case and a select of the values, so every read has a fixed
        offset that the access analysis can prove."""
        condition = self._data_condition(index)
        if condition is not None:
            cases = [tuple(sympy.sympify(e).xreplace({condition: truth}) for e in index) for truth in (sympy.true, sympy.false)]
            return self.select(condition, self.load(base, cases[0]), self.load(base, cases[1]))
        key = (base.name, index)
        if key in self.current:
            return Scalar(self.current[key], base.dtype)
        symbol = self.load_cse.get(key)
        if symbol is None:
            population = f"_{index[0]}" if sympy.sympify(index[0]).is_Integer else ""
            symbol = self.fresh(f"{base.name}{population}", base.dtype)
            self.statements.append(Load(symbol, base.name, index, self.origin()))
            self.load_cse[key] = symbol
        return Scalar(symbol, base.dtype)

    def _data_condition(self, index):
        """The condition of a select in ``index`` that depends on more than the thread index and
        the grid size (None if there is none)."""
        static = set(self.thread) | {sympy.Symbol(name, integer=True, positive=True) for name in self.shapes}
        for expr in index:
            for select in sorted(sympy.sympify(expr).atoms(Select), key=sympy.default_sort_key):
                if select.args[0].free_symbols - static:
                    return select.args[0]
        return None

    def cast(self, value, dtype: str):
        if isinstance(value, Vector):
            return Vector([self.cast(item, dtype) for item in value.items], dtype)
        if value.dtype == dtype:
            return value
        if dtype in FLOAT_TYPES:
            if value.is_float:
                if value.expr.is_Number:
                    return Scalar(value.expr, dtype)
                # a change of floating-point precision gets its own statement
                symbol = self.fresh("cast", dtype)
                self.statements.append(Assign(symbol, value.expr, self.origin()))
                return Scalar(symbol, dtype)
            if value.expr.is_Number:
                return Scalar(sympy.Float(float(value.expr)), dtype)
            self.refuse("converting an integer or boolean into a float", "differentiable values must stay floating point")
        if value.is_float:
            self.refuse(f"converting a floating-point value to {dtype}",
                        "the gradient through an integer conversion is zero; keep the value floating point")
        return Scalar(value.expr, dtype)

    def binary(self, op, left, right):
        if isinstance(left, Vector) or isinstance(right, Vector):
            size = len(left.items) if isinstance(left, Vector) else len(right.items)
            dtype = left.dtype if isinstance(left, Vector) else right.dtype
            items = []
            for n in range(size):
                a = left.items[n] if isinstance(left, Vector) else left
                b = right.items[n] if isinstance(right, Vector) else right
                items.append(self.binary(op, a, b))
            return Vector(items, dtype)
        if not (isinstance(left, Scalar) and isinstance(right, Scalar)):
            self.refuse(f"the operator {op} on non-numbers", "operate on scalars and vectors")
        is_float = left.is_float or right.is_float
        dtype = (left.dtype if left.is_float else right.dtype) if is_float else (left.dtype if left.dtype != "int32" else right.dtype)
        a, b = left.expr, right.expr
        if op == "Add":
            expr = a + b
        elif op == "Subtract":
            expr = a - b
        elif op == "Multiply":
            expr = a * b
        elif op == "Divide":
            if not is_float:
                self.refuse("integer division with `/`", "use `//` for integers")
            expr = a / b
        elif op == "Power":
            expr = a ** b
        elif op == "FloorDivide" and not is_float:
            expr = sympy.floor(a / b)
        elif op == "Modulo" and not is_float:
            expr = sympy.Mod(a, b)
        else:
            self.refuse(f"the operator {op}", "use +, -, *, / and ** on floating-point values")
        return Scalar(expr, dtype)

    def call(self, node, env):
        func = self.expression(node.func, env) if not (isinstance(node.func, cst.Name) and node.func.value == "type") else "type"
        positional = [a for a in node.args if a.keyword is None]
        keywords = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
        if func == "type":
            return TypeOf(self.expression(positional[0].value, env))
        if isinstance(func, TypeOf):
            value = func.value
            if isinstance(value, Vector) and not positional:
                zero = Scalar(sympy.Integer(0), value.dtype) if value.dtype not in FLOAT_TYPES else Scalar(sympy.Float(0.0), value.dtype)
                return Vector([zero] * len(value.items), value.dtype)
            self.refuse("type(x)(...) of a non-vector", "construct vectors with wp.vector")
        if isinstance(func, FunctionRef):
            return self.inline(func.symbol, [self.expression(a.value, env) for a in positional], env)
        if isinstance(func, tuple) and func[0] == "wp":
            return self.builtin(func[1], [self.expression(a.value, env) for a in positional], keywords, env, node)
        self.refuse(f"a call of `{code(node.func)}`",
                    "only @wp.func functions found in the closure and a set of Warp builtins can be differentiated")

    def builtin(self, name, args, keywords, env, node):
        if name == "tid":
            if self.depth > 0:
                self.refuse("wp.tid() inside a function", "call wp.tid() in the kernel and pass the index")
            count = self.kernel_dims
            names = ("i", "j", "k", "l")[:count]
            self.thread = tuple(sympy.Symbol(n, integer=True, nonnegative=True) for n in names)
            for n in names:
                self.dtypes[n] = "int32"
            return tuple(Scalar(s, "int32") for s in self.thread) if count > 1 else Scalar(self.thread[0], "int32")
        if name in FLOAT_TYPES or name in _INT_TYPES or name == "bool":
            if len(args) != 1:
                self.refuse(f"wp.{name} with {len(args)} arguments", "convert one value")
            return self.cast(args[0], name)
        if name in ("vector", "vec3i", "vec2i", "vec3", "vec3f", "vec3d", "vec2", "vec2f", "vec2d"):
            if name == "vector":
                length = int(literal_value(keywords["length"]))
                dtype = code(keywords["dtype"]).replace("wp.", "")
            else:
                length = int(name[3])
                dtype = {"i": "int32", "f": "float32", "d": "float64", "": "float32"}[name[4:]]
            if not args:
                zero = sympy.Float(0.0) if dtype in FLOAT_TYPES else sympy.Integer(0)
                return Vector([Scalar(zero, dtype)] * length, dtype)
            if len(args) != length:
                self.refuse(f"a vector of length {length} built from {len(args)} values", "pass one value per component")
            return Vector([self.cast(a, dtype) for a in args], dtype)
        if name == "where":
            condition, a, b = args
            truth = self.truth(condition)
            return self.select(truth, a, b)
        if name in ("cw_mul", "cw_div"):
            a, b = args
            op = "Multiply" if name == "cw_mul" else "Divide"
            return Vector([self.binary(op, x, y) for x, y in zip(a.items, b.items)], a.dtype)
        if name == "dot":
            a, b = args
            total = None
            for x, y in zip(a.items, b.items):
                term = self.binary("Multiply", x, y)
                total = term if total is None else self.binary("Add", total, term)
            return total
        if name in ("sqrt", "exp", "log", "abs", "sin", "cos", "tanh"):
            (value,) = args
            fn = {"sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log, "abs": sympy.Abs,
                  "sin": sympy.sin, "cos": sympy.cos, "tanh": sympy.tanh}[name]
            if isinstance(value, Vector):
                return Vector([Scalar(fn(v.expr), v.dtype) for v in value.items], value.dtype)
            return Scalar(fn(value.expr), value.dtype)
        if name in ("min", "max") and len(args) == 2:
            a, b = args
            return self.select(sympy.Lt(a.expr, b.expr) if name == "min" else sympy.Gt(a.expr, b.expr), a, b)
        if name.startswith("atomic_"):
            self.refuse(f"wp.{name}", "atomics make the cell program depend on other threads; write each cell once")
        self.refuse(f"the Warp builtin wp.{name}", "it has no adjoint rule in adjointgen yet; open an issue with the functional")

    def select(self, truth, a, b):
        if isinstance(a, Vector) or isinstance(b, Vector):
            size = len(a.items) if isinstance(a, Vector) else len(b.items)
            return Vector([self.select(truth, a.items[n] if isinstance(a, Vector) else a, b.items[n] if isinstance(b, Vector) else b)
                           for n in range(size)], a.dtype if isinstance(a, Vector) else b.dtype)
        if truth == sympy.true:
            return a
        if truth == sympy.false:
            return b
        dtype = a.dtype if a.is_float else b.dtype
        return Scalar(Select(truth, a.expr, b.expr), dtype)

    kernel_dims = 3

    def inline(self, symbol, args, env):
        functional, module = self.processed[symbol]
        spec = field_of(functional.pyfunc)
        if spec is not None:
            return self.field_read(spec, args)
        if symbol in self.call_stack:
            self.refuse(f"a recursive call of {symbol}", "unroll the recursion by hand; kernels cannot recurse")
        fdef = _function_def(module)
        params = [p.name.value for p in fdef.params.params]
        if len(args) != len(params):
            self.refuse(f"calling {symbol} with {len(args)} arguments", f"it takes {len(params)}")
        saved = (self.functional, self.tag)
        self.functional, self.depth = functional, self.depth + 1
        self.call_stack.append(symbol)
        local = dict(zip(params, args))
        try:
            self.execute(fdef.body.body, local)
            result = None
        except _Return as ret:
            result = ret.value
        finally:
            self.functional, self.tag = saved
            self.depth -= 1
            self.call_stack.pop()
        return result


    def field_read(self, spec, args) -> Scalar:
        """A design field's reader (:func:`adjointgen.xlb.fields.field`): this cell's element
        ``name[c, i, j, k]`` of the field's kernel array, in the compute precision; ``c`` is 0 for a
        field of one component, else the reader's argument, which must be a constant."""
        if spec.components == 1 and args:
            self.refuse(f"the field reader of {spec.name!r} called with arguments", "call it without arguments: porosity()")
        if spec.components > 1 and len(args) != 1:
            self.refuse(f"the field reader of {spec.name!r} called with {len(args)} arguments",
                        f"pass the component's index, a constant in [0, {spec.components}): wall_distance(l)")
        if len(self.thread) != 3 or spec.name not in self.arg_types:
            self.refuse(f"a read of the field {spec.name!r} here", "read fields inside functionals the stepper kernel calls")
        component = sympy.Integer(0) if spec.components == 1 else args[0].expr if isinstance(args[0], Scalar) else None
        if component is None or not component.is_Integer or not 0 <= int(component) < spec.components:
            self.refuse(f"the field {spec.name!r} read at component {component}",
                        f"index it with a constant in [0, {spec.components}) (a loop index over range(q) is one)")
        param = self.arg_types[spec.name]
        value = self.load(ArrayRef(spec.name, param.dtype, param.ndim), (component, *self.thread))
        return self.cast(value, self.compute_dtype)


def _function_def(module: cst.Module) -> cst.FunctionDef:
    for node in module.body:
        if isinstance(node, cst.FunctionDef):
            return node
    raise UnsupportedConstruct("<source>", "a module without a function", "pass a function")


def eliminate_dead_code(program: Program) -> Program:
    live = {str(s) for store in program.stores for s in store.uses()}
    kept = []
    for statement in reversed(program.statements):
        if str(statement.target) not in live:
            continue
        kept.append(statement)
        live |= {str(s) for s in statement.uses()}
    program.statements = list(reversed(kept))
    return program


def lower(kernel, processed: dict, compute_dtype: str, params: list, name: str, exit_guards=(), fields=()) -> Program:
    """``fields``: the design fields among ``params`` (adjointgen.xlb.fields.Field; kernel arrays read at the own cell)."""
    lowering = Lowering(kernel, processed, compute_dtype, {p.name: p for p in params}, exit_guards)
    program = lowering.run(name)
    program.fields = tuple(fields)
    return program
