import pytest

from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.passes.unroll import Unroll
from tests.helpers import assert_idempotent, run, strip_tags


def test_nested_constant_loops_unroll_with_bindings_in_tags():
    source = "def f(u):\n    for l in range(2):\n        for d in range(1, 3):\n            u[d] += c[d, l]\n    return u\n"
    code, _ = run(Unroll(), source, located=True)
    assert strip_tags(code) == (
        "def f(u):\n"
        "    u[1] += c[1, 0]\n    u[2] += c[2, 0]\n"
        "    u[1] += c[1, 1]\n    u[2] += c[2, 1]\n"
        "    return u\n"
    )
    assert "# @src:4 d=1 l=0" in code


def test_empty_loop_disappears_and_empty_block_gets_pass():
    code, _ = run(Unroll(), "def f(a):\n    for i in range(0):\n        a = 1\n")
    assert code == "def f(a):\n    pass\n"


def test_dynamic_trip_count_is_left_alone():
    source = "def f(a, n):\n    for i in range(n):\n        a = a + 1.0\n    return a\n"
    assert run(Unroll(), source)[0] == source


@pytest.mark.parametrize("body", ["        break\n", "        i = 2\n"])
def test_refused_loops(body):
    with pytest.raises(UnsupportedConstruct):
        run(Unroll(), "def f(a):\n    for i in range(3):\n" + body)


def test_idempotent():
    assert_idempotent(Unroll(), "def f(u):\n    for l in range(3):\n        u[l] = 0.0\n    return u\n")
