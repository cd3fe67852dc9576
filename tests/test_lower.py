import pytest
import sympy
import warp as wp

from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.ir import Assign, Load, Param, Select
from tests.helpers import lower_source

PARAMS = [Param("a", "array", "float32", 4), Param("b", "array", "float32", 4),
          Param("mask", "array", "uint8", 4), Param("s", "scalar", "float32")]
HEAD = "def k(a: wp.array4d(dtype=float), b: wp.array4d(dtype=float), mask: wp.array4d(dtype=wp.uint8), s: float):\n    i, j, k = wp.tid()\n"


def test_straight_line_program_with_cse_and_dead_code_removed():
    program = lower_source(HEAD + (
        "    x = a[0, i, j, k]\n"
        "    y = x * x + s\n"
        "    z = x * x + s\n"          # same right-hand side: shared
        "    unused = wp.sqrt(x)\n"    # nothing stores it: removed
        "    b[0, i, j, k] = y * z\n"
    ), PARAMS)
    kinds = [type(s).__name__ for s in program.statements]
    assert kinds == ["Load", "Assign", "Assign"]
    assert str(program.statements[1].expr) == "a_0**2 + s"
    assert program.stores[0].value == sympy.Symbol("b_out", real=True)


def test_early_return_becomes_a_keep_condition_on_stores():
    program = lower_source(HEAD + (
        "    if mask[0, i, j, k] == wp.uint8(255):\n"
        "        return\n"
        "    b[0, i, j, k] = a[0, i, j, k] * s\n"
    ), PARAMS)
    (store,) = program.stores
    assert isinstance(store.keep, sympy.Eq)
    assert not any(isinstance(st, Load) and st.array == "b" for st in program.statements)


def test_branch_on_float_condition_becomes_piecewise_select():
    program = lower_source(HEAD + (
        "    x = a[0, i, j, k]\n"
        "    y = x\n"
        "    if x > s:\n"
        "        y = s\n"
        "    b[0, i, j, k] = y\n"
    ), PARAMS)
    assigns = [st for st in program.statements if isinstance(st, Assign)]
    assert any(isinstance(st.expr, Select) for st in assigns)


@pytest.mark.parametrize("body, construct", [
    ("    n = 0\n    while n < 3:\n        n = n + 1\n", "While"),
    ("    wp.atomic_add(b, 0, 0, 0, 0, s)\n", "atomic"),
    ("    x = a[0, i, j, k]\n    v = my_unknown_helper(x)\n", "my_unknown_helper"),
    ("    b[0, i, j, k] = wp.float32(wp.int32(a[0, i, j, k]))\n", "converting a floating-point value"),
    ("    for n in range(int(s)):\n        b[0, i, j, k] = s\n", "For"),
])
def test_refused_constructs_name_file_and_line(body, construct):
    with pytest.raises(UnsupportedConstruct) as info:
        lower_source(HEAD + body, PARAMS, {"my_unknown_helper": len})
    message = str(info.value)
    assert construct in message and "snippet.py:" in message


@wp.func
def recursive(x: float):
    return recursive(x)


def test_recursion_is_refused():
    with pytest.raises(UnsupportedConstruct) as info:
        lower_source(HEAD + "    b[0, i, j, k] = recursive(a[0, i, j, k])\n", PARAMS, {"recursive": recursive})
    assert "recursive call" in str(info.value)


@wp.func
def writes_array(b: wp.array4d(dtype=float), i: int, j: int, k: int, v: float):
    b[1, i, j, k] = v


def test_array_write_in_a_functional_after_an_early_return_keeps_the_exit():
    body = (
        "    if mask[0, i, j, k] == wp.uint8(255):\n        return\n"
        "    writes_array(b, i, j, k, s)\n"
        "    b[0, i, j, k] = s\n"
    )
    program = lower_source(HEAD + body, PARAMS, {"writes_array": writes_array})
    inner, outer = program.stores
    assert inner.keep is not None and inner.keep == outer.keep  # one exit for both
    assert inner.when is None


def test_a_store_of_a_select_with_the_old_element_is_conditional():
    program = lower_source(HEAD + (
        "    b[0, i, j, k] = wp.where(mask[0, i, j, k] == wp.uint8(2), a[0, i, j, k], b[0, i, j, k])\n"
        "    b[1, i, j, k] = wp.where(mask[0, i, j, k] == wp.uint8(3), b[1, i, j, k], s)\n"
    ), PARAMS)
    first, second = program.stores
    assert str(first.when) == "Eq(mask_0, 2)" and first.value == sympy.Symbol("a_0", real=True)
    assert str(second.when) == "Ne(mask_0, 3)"
    assert not any(isinstance(st, Load) and st.array == "b" for st in program.statements)  # the old value is not read


def test_a_read_after_a_store_sees_the_stored_value():
    program = lower_source(HEAD + (
        "    b[0, i, j, k] = a[0, i, j, k] * s\n"
        "    b[1, i, j, k] = b[0, i, j, k] + s\n"
    ), PARAMS)
    assert not any(isinstance(st, Load) and st.array == "b" for st in program.statements)
    assert "b_out" in str(program.statements[-1].expr)
