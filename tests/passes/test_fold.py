import numpy as np

from adjointgen.compiler.passes.fold import Fold
from tests.helpers import assert_idempotent, run, strip_tags

TABLES = {"_c": np.array([[0, 1, -1], [0, 0, 0]]), "_w": np.array([0.5, 0.25, 0.25])}


def test_table_lookups_comparisons_and_branches_fold():
    source = """\
def f(u, rho):
    cu = 0.0
    if _c[0, 1] == 1:
        cu += u[0]
    elif _c[0, 1] == -1:
        cu -= u[0]
    if _c[0, 2] == 1:
        cu += u[0]
    elif _c[0, 2] == -1:
        cu -= u[0]
    return rho * _w[1] * (2 * 3) + cu
"""
    code, _ = run(Fold(), source, TABLES)
    assert strip_tags(code) == "def f(u, rho):\n    cu = 0.0\n    cu += u[0]\n    cu -= u[0]\n    return rho * 0.25 * 6 + cu\n"


def test_integer_division_is_left_to_warp():
    source = "def f(a):\n    return a + 7 / 2\n"
    assert run(Fold(), source)[0] == source


def test_nothing_to_change():
    source = "def f(a, b):\n    if a > b:\n        a = b\n    return a\n"
    assert run(Fold(), source, TABLES)[0] == source


def test_idempotent():
    assert_idempotent(Fold(), "def f(a):\n    if _c[0, 1] == 1:\n        a = a * _w[0]\n    return a\n", TABLES)


def test_a_literal_index_into_a_written_out_constant_vector_folds():
    source = "def f(x):\n    return x[wp.vector(0, 2, 1, length=3, dtype=wp.int32)[1]]\n"
    assert strip_tags(run(Fold(), source)[0]) == "def f(x):\n    return x[2]\n"


def test_a_local_bound_once_to_a_literal_is_propagated():
    source = "def f(x):\n    nt = 2 * (2 + 1) // 2\n    for t in range(nt):\n        x = x + t\n    return x\n"
    code = strip_tags(run(Fold(), source)[0])
    assert "range(3)" in code and "nt = 3" in code


def test_a_local_bound_twice_is_not_propagated():
    source = "def f(x):\n    n = 2\n    n = n + x\n    return n\n"
    assert run(Fold(), source)[0] == source
