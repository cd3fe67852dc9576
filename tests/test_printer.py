import sympy

from adjointgen.compiler.ir import Select
from adjointgen.compiler.printer import WarpPrinter

a, b = sympy.symbols("a b", real=True)
m = sympy.Symbol("m", integer=True)
PRINT32 = WarpPrinter({"a": "float32", "b": "float32", "m": "uint8"}, "float32")
PRINT64 = WarpPrinter({"a": "float64", "b": "float64"}, "float64")


def test_typed_constants_keep_full_precision():
    assert PRINT64(sympy.Float(1 / 3) * a) == "wp.float64(0.3333333333333333) * a"
    assert PRINT32(2 * a) == "wp.float32(2.0) * a"


def test_powers_divisions_and_signs():
    assert PRINT32(a**2) == "a * a"
    assert PRINT32(a / b) == "a / b"
    assert PRINT32(-a * b) == "-(a * b)"
    assert PRINT32(a - b) == "a - b"
    assert PRINT32(1 / a**2) == "wp.float32(1.0) / (a * a)"
    assert PRINT32(sympy.sqrt(a)) == "wp.sqrt(a)"


def test_selects_and_typed_comparisons():
    assert PRINT32(Select(a > b, a, b)) == "wp.where(a > b, a, b)"
    assert PRINT32(sympy.Eq(m, 255), "bool") == "m == wp.uint8(255)"


def test_printed_code_evaluates_to_the_expression():
    expr = sympy.Float(0.25) * a * (1 + 3 * b + sympy.Float(4.5) * b**2) - a / (b + 2)
    text = PRINT64(expr).replace("wp.float64", "float")
    value = eval(text, {"a": 0.7, "b": -0.3})  # noqa: S307 - our own printed arithmetic
    assert abs(value - float(expr.subs({a: 0.7, b: -0.3}))) < 1e-15


def test_mixed_precision_converts_a_symbol_of_the_other_float_type():
    mixed = WarpPrinter({"stored": "float32", "x": "float64", "m": "uint8"}, "float64")
    stored, x, m = sympy.symbols("stored x m", real=True)
    assert mixed(stored * x, "float64") == "wp.float64(stored) * x"
    assert mixed(x, "float32") == "wp.float32(x)"
    assert mixed(sympy.Eq(m, 1), "bool") == "m == wp.uint8(1)"  # integers are never converted
    assert PRINT32(sympy.Symbol("a", real=True), "float32") == "a"  # one precision: unchanged


def test_aliases_print_a_subexpression_as_the_name_given_to_it_and_nothing_else():
    aliased = WarpPrinter(PRINT32.dtypes, "float32", {sympy.Eq(m, 2): "m_is_2", sympy.Ne(m, 2): "(not m_is_2)"})
    assert aliased(Select(sympy.Eq(m, 2), a, b)) == "wp.where(m_is_2, a, b)"
    assert aliased(sympy.And(sympy.Ne(m, 2), sympy.Eq(m, 3)), "bool") == "(m == wp.uint8(3)) and ((not m_is_2))"
    assert PRINT32(Select(sympy.Eq(m, 2), a, b)) == "wp.where(m == wp.uint8(2), a, b)"  # the plain printer: unchanged
