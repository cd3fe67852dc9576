"""The per-cell program: what the lowering produces and every later stage consumes.

A :class:`Program` is straight-line code for one lattice cell in static single assignment form.
Floating-point values live in :class:`Assign` statements (one per source assignment, so a
statement's right-hand side stays small); integer and boolean values (indices, masks) stay
inline as sympy expressions. Memory is touched only by :class:`Load` and :class:`Store`.

Every statement answers ``operands()`` (the expressions it reads) and ``uses()`` (their free
symbols): the one definition of "what a statement depends on" that dead-code removal, the guard
analysis, reverse mode and the kernel plans share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

FLOAT_TYPES = ("float32", "float64")


class Select(sympy.Function):
    """``Select(c, a, b)``: ``a`` where ``c`` holds, else ``b`` (Warp's ``wp.where``).

    Not sympy's Piecewise, which simplifies conditions it cannot see through (it folded
    ``Eq(Piecewise((1, m), (0, True)), 1)`` to True). Derivatives keep select semantics,
    ``d Select(c, a, b) = Select(c, da, db)``: the branch not taken is discarded, never multiplied
    by zero, so a NaN computed there cannot reach a gradient.
    """

    nargs = 3

    @classmethod
    def eval(cls, condition, a, b):
        if condition is sympy.true:
            return a
        if condition is sympy.false:
            return b
        if a == b:
            return a
        return None

    def _eval_derivative(self, symbol):
        condition, a, b = self.args
        return Select(condition, a.diff(symbol), b.diff(symbol))

    def _eval_is_real(self):
        return self.args[1].is_real and self.args[2].is_real

    def _eval_is_integer(self):
        return self.args[1].is_integer and self.args[2].is_integer


class Reciprocal(sympy.Function):
    """``Reciprocal(x)``: ``1 / x``, printed as that division of one; a replayed ``a / x`` written
    ``a * Reciprocal(x)`` shares the division with the reverse sweep's ``rcp_x = 1 / x`` (equal
    expressions, which the compiler computes once; see :mod:`adjointgen.compiler.reciprocals`).
    Only the adjoint's replay holds it; nothing differentiates it."""

    nargs = 1

    def _eval_is_real(self):
        return self.args[0].is_real


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "array" or "scalar"
    dtype: str  # Warp scalar type name, e.g. "float32", "uint8", "bool", "int32"
    ndim: int = 0

    @property
    def differentiable(self) -> bool:
        return self.kind == "array" and self.dtype in FLOAT_TYPES

    def annotation(self) -> str:
        if self.kind == "array":
            return f"wp.array{self.ndim}d(dtype=wp.{self.dtype})"
        return f"wp.{self.dtype}"


def _free_symbols(exprs) -> frozenset:
    """The symbols the expressions (sympy, or plain numbers) mention."""
    return frozenset().union(*(sympy.sympify(e).free_symbols for e in exprs))


@dataclass(frozen=True)
class Origin:
    """Where a statement came from: ``site`` is the source line (``file:line  text``), ``bindings``
    the unrolled loop variables' values there (``("d=1", "l=8")``)."""

    site: str
    bindings: tuple = ()

    def __str__(self) -> str:
        return f"{self.site}  [{', '.join(self.bindings)}]" if self.bindings else self.site


@dataclass
class Load:
    target: sympy.Symbol
    array: str
    index: tuple
    origin: Origin

    def operands(self) -> tuple:
        """The index expressions (integer, inline)."""
        return tuple(self.index)

    def uses(self) -> frozenset:
        return _free_symbols(self.operands())


@dataclass
class Assign:
    target: sympy.Symbol
    expr: sympy.Expr
    origin: Origin

    def operands(self) -> tuple:
        return (self.expr,)

    def uses(self) -> frozenset:
        return _free_symbols(self.operands())


@dataclass
class Store:
    array: str
    index: tuple
    value: sympy.Expr
    origin: Origin
    keep: object = None  # a sympy boolean: where it holds, the cell keeps the array's old value
    when: object = None  # a sympy boolean: the store happens only where it holds (None: always)

    def operands(self) -> tuple:
        """The stored value, the index expressions and the conditions that are set."""
        return (self.value, *self.index) + tuple(c for c in (self.keep, self.when) if c is not None)

    def uses(self) -> frozenset:
        return _free_symbols(self.operands())


@dataclass
class Program:
    name: str
    params: list
    statements: list
    stores: list
    dtypes: dict  # symbol name -> Warp scalar type name
    thread: tuple  # the thread index symbols, one per launch dimension
    shapes: dict = field(default_factory=dict)  # shape symbol name -> (array, axis)
    compute_dtype: str = "float32"
    fields: tuple = ()  # adjointgen.xlb.fields.Field per design field: arrays read at the own cell, differentiable inputs

    @property
    def field_names(self) -> tuple:
        return tuple(spec.name for spec in self.fields)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def is_float(self, symbol) -> bool:
        return self.dtypes.get(str(symbol)) in FLOAT_TYPES
