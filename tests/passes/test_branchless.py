import pytest

from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.passes.branchless import Branchless
from tests.helpers import assert_idempotent, run, strip_tags


def test_if_else_becomes_selects_of_both_branches():
    source = "def f(a, b):\n    if a > b:\n        x = a\n        y = x * 2.0\n    else:\n        x = b\n    return x + y\n"
    code, _ = run(Branchless(), source)
    assert strip_tags(code) == (
        "def f(a, b):\n"
        "    _cond_0 = a > b\n"
        "    _x_then_1 = a\n"
        "    _y_then_2 = _x_then_1 * 2.0\n"
        "    _x_else_3 = b\n"
        "    x = wp.where(_cond_0, _x_then_1, _x_else_3)\n"
        "    y = _y_then_2\n"  # first bound in the branch: nothing to keep
        "    return x + y\n"
    )


def test_integer_mask_becomes_a_select_not_a_blend():
    source = "def f(m, mask):\n    if mask[0, 1]:\n        m[0] = wp.uint8(1)\n    else:\n        m[0] = wp.uint8(0)\n    return m\n"
    code, _ = run(Branchless(), source)
    assert "m[0] = wp.where(_cond_0, _m_0_then_1, _m_0_else_2)" in code
    assert "*" not in code  # no 0/1 multiplication


def test_elif_chain_nests():
    source = "def f(p, n):\n    if p < 0:\n        p = n - 1\n    elif p >= n:\n        p = 0\n    return p\n"
    code, _ = run(Branchless(), source)
    lines = strip_tags(code).splitlines()
    assert lines[-2] == "    p = wp.where(_cond_2, _p_then_3, _p_else_4)"
    assert "if" not in code.replace("# @src", "")


def test_early_return_guards_later_array_stores():
    source = (
        "def k(out: wp.array4d(dtype=float), mask: wp.array4d(dtype=wp.uint8)):\n"
        "    b = mask[0, 0, 0, 0]\n"
        "    if b == wp.uint8(255):\n"
        "        return\n"
        "    out[0, 0, 0, 0] = 1.0\n"
    )
    code, ctx = run(Branchless(), source)
    assert "_exit_0 = b == wp.uint8(255)" in code
    assert "out[0, 0, 0, 0] = wp.where(_exit_0, out[0, 0, 0, 0], 1.0)" in code
    assert ctx.exit_guards == ["_exit_0"]


@pytest.mark.parametrize("body", ["        g(a)\n", "        if a > 1:\n            return a\n", "        for i in range(n):\n            a = 1\n"])
def test_non_assignments_under_a_runtime_condition_are_refused(body):
    with pytest.raises(UnsupportedConstruct) as info:
        run(Branchless(), "def f(a, n):\n    if a > 0:\n" + body + "    return a\n", located=True)
    assert "snippet.py:" in str(info.value)


def test_nothing_to_change():
    source = "def f(a, b):\n    x = wp.where(a > b, a, b)\n    return x\n"
    assert run(Branchless(), source)[0] == source


def test_idempotent():
    assert_idempotent(Branchless(), "def f(a, b):\n    if a > b:\n        a = b\n    return a\n")


def test_conditional_returns_become_a_first_wins_select_chain():
    source = (
        "def normal(m):\n"
        "    if m[1] == 1:\n"
        "        return -v(1.0, 0.0)\n"
        "    if m[2] == 1:\n"
        "        return -v(0.0, 1.0)\n"
    )
    code, _ = run(Branchless(), source)
    assert strip_tags(code) == (
        "def normal(m):\n"
        "    _retcond_0 = m[1] == 1\n"
        "    _retval_1 = -v(1.0, 0.0)\n"
        "    _retcond_2 = m[2] == 1\n"
        "    _retval_3 = -v(0.0, 1.0)\n"
        "    return wp.where(_retcond_0, _retval_1, wp.where(_retcond_2, _retval_3, type(_retval_3)()))\n"
    )


def test_conditional_returns_fall_back_to_the_final_return():
    source = "def f(a, b):\n    if a > b:\n        return a\n    c = b * 2.0\n    return c\n"
    code, _ = run(Branchless(), source)
    assert strip_tags(code).splitlines()[-1] == "    return wp.where(_retcond_0, _retval_1, c)"


def test_a_vector_first_bound_in_a_branch_keeps_its_component_writes():
    source = (
        "def f(m, index, nv):\n"
        "    if m == 1:\n"
        "        p = type(index)()\n"
        "        p[0] = index[0] - nv[0]\n"
        "        a = g(p[0], p[1])\n"
        "    return a\n"
    )
    code, _ = run(Branchless(), source)
    lines = strip_tags(code).splitlines()
    assert "    _a_then_3 = g(_p_0_then_2, _p_then_1[1])" in lines  # the written component, the rest of the vector
    assert "    p = _p_then_1" in lines and "    p[0] = _p_0_then_2" in lines  # bound in the branch: no select
