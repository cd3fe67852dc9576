import libcst as cst
import numpy as np
import pytest

from adjointgen.compiler.passes import FixedPoint, Fold, Resolve, Unroll
from adjointgen.errors import UnsupportedConstruct
from tests.helpers import assert_idempotent, run, strip_tags

TABLES = {"_d": 2, "_w": np.array([0.5, 0.25, 0.125])}
# the trip count is a literal only after folding, and the unrolled copies' table reads only fold then
SOURCE = "def f(a):\n    nt = _d * (_d + 1) // 2\n    for i in range(nt):\n        a = a + _w[i]\n    return a\n"


def group():
    return FixedPoint(Unroll(), Resolve(), Fold())


def test_repeats_until_nothing_changes():
    code, _ = run(group(), SOURCE, TABLES)
    assert strip_tags(code) == "def f(a):\n    nt = 3\n    a = a + 0.5\n    a = a + 0.25\n    a = a + 0.125\n    return a\n"


def test_one_round_is_not_enough_here():
    once, _ = run(FixedPoint(Unroll(), Resolve(), Fold(), limit=1), "def f(a):\n    return a\n")
    assert once == "def f(a):\n    return a\n"
    with pytest.raises(UnsupportedConstruct, match="still change after 1 rounds"):
        run(FixedPoint(Unroll(), Resolve(), Fold(), limit=1), SOURCE, TABLES)


def test_nothing_to_change():
    source = "def f(a, b):\n    if a > b:\n        a = b\n    return a\n"
    assert run(group(), source, TABLES)[0] == source


def test_idempotent():
    assert_idempotent(group(), SOURCE, TABLES)


class _AppendPass:
    """A pass that never settles: it adds a statement every time."""

    def __call__(self, module, ctx):
        function = module.body[0]
        line = cst.parse_statement("a = a + 1.0\n")
        return module.with_changes(body=[function.with_changes(body=function.body.with_changes(
            body=[line, *function.body.body]))])


def test_a_group_that_never_settles_is_refused_with_the_bound():
    with pytest.raises(UnsupportedConstruct, match=r"snippet.py:1: .*_AppendPass still change after 3 rounds"):
        run(FixedPoint(_AppendPass(), limit=3), "def f(a):\n    return a\n")
