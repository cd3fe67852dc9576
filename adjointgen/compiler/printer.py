"""Printing sympy expressions as Warp code.

Floating-point numbers are printed typed (``wp.float32(0.5)``) with Python's shortest
round-trip representation, so FP64 constants survive exactly and Warp never has to guess a
literal's type. Integer constants compared with typed integers (``bc_mask == 255`` on a uint8)
take that type. Selects print as ``wp.where``; powers by small integers as products. A printer may carry
aliases: subexpressions printed as the name of a variable the kernel defines for them (a split
step's tests of the listed boundary ids, see :meth:`adjointgen.compiler.lines.Lines.aliased`).
"""

from __future__ import annotations

import sympy

from adjointgen.compiler.ir import FLOAT_TYPES, Reciprocal, Select

_RELATIONS = {sympy.Eq: "==", sympy.Ne: "!=", sympy.Lt: "<", sympy.Le: "<=", sympy.Gt: ">", sympy.Ge: ">="}


class WarpPrinter:
    def __init__(self, dtypes: dict, float_type: str, aliases: dict | None = None):
        self.dtypes = dtypes
        self.float_type = float_type
        self.aliases = dict(aliases or {})  # sympy expression -> the text printed for it

    # ---- typing
    def dtype_of(self, expr) -> str:
        expr = sympy.sympify(expr)
        if isinstance(expr, sympy.Symbol):
            return self.dtypes.get(expr.name, "int32")
        if expr.is_Float or isinstance(expr, sympy.Rational) and not expr.is_Integer:
            return self.float_type
        if isinstance(expr, Select):
            types = [self.dtype_of(e) for e in expr.args[1:]]
            return next((t for t in types if t in FLOAT_TYPES), types[0])
        for symbol in sorted(expr.free_symbols, key=str):
            if self.dtypes.get(symbol.name) in FLOAT_TYPES:
                return self.dtypes[symbol.name]
        if expr.free_symbols:
            return "int32"
        return "int32" if expr.is_Integer else self.float_type

    def number(self, value, dtype: str) -> str:
        if dtype in FLOAT_TYPES:
            return f"wp.{dtype}({float(value)!r})"
        if dtype == "int32":
            return str(int(value))
        return f"wp.{dtype}({int(value)})"

    # ---- printing
    def __call__(self, expr, dtype: str | None = None) -> str:
        expr = sympy.sympify(expr)
        return self.print(expr, dtype or self.dtype_of(expr))

    def print(self, expr, dtype: str) -> str:
        if expr in self.aliases:
            return self.aliases[expr]
        if expr is sympy.true or expr is sympy.false:
            return "True" if expr is sympy.true else "False"
        if isinstance(expr, sympy.Symbol):
            own = self.dtypes.get(expr.name)
            if own in FLOAT_TYPES and dtype in FLOAT_TYPES and own != dtype:
                return f"wp.{dtype}({expr.name})"  # mixed precision: a stored value used in the compute precision, or back
            return expr.name
        if expr.is_Number:
            return self.number(expr, dtype)
        if isinstance(expr, sympy.Add):
            return self.add(expr, dtype)
        if isinstance(expr, sympy.Mul):
            return self.mul(expr, dtype)
        if isinstance(expr, sympy.Pow):
            return self.pow(expr, dtype)
        if isinstance(expr, Reciprocal):
            return f"({self.number(1, dtype)} / ({self.print(expr.args[0], dtype)}))"
        if isinstance(expr, Select):
            condition, value, other = expr.args
            return f"wp.where({self.print(condition, 'bool')}, {self.print(value, dtype)}, {self.print(other, dtype)})"
        if type(expr) in _RELATIONS:
            left, right = expr.args
            operand = self.dtype_of(left) if not left.is_Number else self.dtype_of(right)
            return f"{self.atom(left, operand)} {_RELATIONS[type(expr)]} {self.atom(right, operand)}"
        if isinstance(expr, sympy.And):
            return " and ".join(f"({self.print(a, 'bool')})" for a in sorted(expr.args, key=sympy.default_sort_key))
        if isinstance(expr, sympy.Or):
            return " or ".join(f"({self.print(a, 'bool')})" for a in sorted(expr.args, key=sympy.default_sort_key))
        if isinstance(expr, sympy.Not):
            return f"not ({self.print(expr.args[0], 'bool')})"
        if isinstance(expr, sympy.Mod):
            a, b = expr.args
            return f"({self.print(a, dtype)}) % ({self.print(b, dtype)})"
        if expr.func in (sympy.exp, sympy.log, sympy.Abs, sympy.sin, sympy.cos, sympy.tanh):
            name = {sympy.exp: "wp.exp", sympy.log: "wp.log", sympy.Abs: "wp.abs", sympy.sin: "wp.sin",
                    sympy.cos: "wp.cos", sympy.tanh: "wp.tanh"}[expr.func]
            return f"{name}({self.print(expr.args[0], dtype)})"
        raise NotImplementedError(f"cannot print {expr!r} ({type(expr).__name__}) as Warp code")

    def atom(self, expr, dtype: str) -> str:
        text = self.print(expr, dtype)
        if isinstance(expr, sympy.Add) or (isinstance(expr, sympy.Mul) and sympy.Mul(*expr.args).could_extract_minus_sign()) \
                or (expr.is_Number and expr < 0):
            return f"({text})"
        if isinstance(expr, sympy.Mul) or isinstance(expr, sympy.Pow):
            return f"({text})"
        return text

    def add(self, expr, dtype: str) -> str:
        terms = sorted(expr.args, key=sympy.default_sort_key)
        # numbers last, for readability: a + b + 1.0
        terms = [t for t in terms if not t.is_Number] + [t for t in terms if t.is_Number]
        out = ""
        for index, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            body = -term if negative else term
            text = self.print(body, dtype)
            if isinstance(body, sympy.Add):
                text = f"({text})"
            if index == 0:
                out = f"-{self.wrap_unary(body, text)}" if negative else text
            else:
                out += f" - {self.wrap_unary(body, text)}" if negative else f" + {text}"
        return out

    def wrap_unary(self, body, text: str) -> str:
        return text if isinstance(body, (sympy.Symbol, sympy.Mul, sympy.Pow)) or body.is_Number else f"({text})"

    def mul(self, expr, dtype: str) -> str:
        coefficient, factors = expr.as_coeff_mul()
        numerator, denominator = [], []
        for factor in factors:
            if isinstance(factor, sympy.Pow) and factor.exp.is_Integer and factor.exp < 0:
                denominator.append(sympy.Pow(factor.base, -factor.exp))
            else:
                numerator.append(factor)
        prefix = ""
        if coefficient == -1:
            prefix = "-"
        elif coefficient != 1:
            numerator.insert(0, coefficient)
        parts = [self.atom(f, dtype) for f in numerator] or [self.number(1, dtype)]
        text = " * ".join(parts)
        if denominator:
            below = " * ".join(self.atom(f, dtype) for f in denominator)
            text = f"{text} / ({below})" if len(denominator) > 1 else f"{text} / {below}"
        if prefix:
            text = f"-({text})" if (len(parts) > 1 or denominator) else f"-{text}"
        return text

    def pow(self, expr, dtype: str) -> str:
        base, exponent = expr.args
        if exponent.is_Integer and 0 < exponent <= 4:
            return " * ".join([self.atom(base, dtype)] * int(exponent))
        if exponent.is_Integer and exponent < 0:
            return f"{self.number(1, dtype)} / ({self.print(sympy.Pow(base, -exponent), dtype)})"
        if exponent == sympy.Rational(1, 2):
            return f"wp.sqrt({self.print(base, dtype)})"
        if exponent == sympy.Rational(-1, 2):
            return f"{self.number(1, dtype)} / wp.sqrt({self.print(base, dtype)})"
        return f"wp.pow({self.print(base, dtype)}, {self.print(exponent, dtype)})"
