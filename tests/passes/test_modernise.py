from adjointgen.compiler.passes.modernise import Modernise
from tests.helpers import assert_idempotent, run


def test_removed_type_constructors_become_wp_vector_and_matrix():
    code, _ = run(Modernise(), "v = wp.vec(3, dtype=wp.float32)(a, b, c)\nm = wp.mat((2, 2), dtype=wp.float64)()\n")
    assert code == "v = wp.vector(a, b, c, length=3, dtype=wp.float32)\nm = wp.matrix(shape=(2, 2), dtype=wp.float64)\n"


def test_select_becomes_where_with_swapped_branches():
    code, _ = run(Modernise(), "y = wp.select(c, if_false, if_true)\n")
    assert code == "y = wp.where(c, if_true, if_false)\n"


def test_scoped_timer_moves():
    code, _ = run(Modernise(), "t = wp.utils.ScopedTimer('x')\n")
    assert code == "t = wp.ScopedTimer('x')\n"


def test_nothing_to_change():
    source = "y = wp.where(c, a, b)\nv = wp.vector(length=3, dtype=wp.float32)\n"
    assert run(Modernise(), source)[0] == source


def test_idempotent():
    assert_idempotent(Modernise(), "v = wp.vec(3, dtype=wp.float32)(a, b, c)\ny = wp.select(c, a, b)\n")
