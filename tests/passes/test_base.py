"""The passes' shared helpers: bound names and the statement walk they rely on."""

import libcst as cst

from adjointgen.compiler.passes.base import free_names_of, local_names, walk_statements

SOURCE = """\
def f(a, b: int, *rest, c=1, **more):
    x = 1
    (y, [z, w]) = a
    v: float = 2.0
    u += 1
    if a:
        p = 1
    elif b:
        q = 2
    else:
        for i in range(3):
            r, s = i, i
    while a:
        t = 0
    if c: k = 3
    g[h] = 1
    o.attr = 2
    return lambda m: m + [n for n in rest]
"""


def test_local_names_are_every_binding_in_every_block_and_nothing_else():
    bound = local_names(cst.parse_module(SOURCE))
    assert bound == {"a", "b", "rest", "c", "more", "x", "y", "z", "w", "v", "u", "p", "q", "i", "r", "s", "t", "k"}


def test_the_statement_walk_reaches_nested_and_one_line_blocks():
    module = cst.parse_module("def f(a):\n    if a:\n        pass\n    else:\n        if a: return 1\n    return 2\n")
    returns = [s for s in walk_statements(module.body) if isinstance(s, cst.Return)]
    assert len(returns) == 2


def test_free_names_leave_out_attribute_and_keyword_names():
    assert free_names_of("self.velocity_set.q") == {"self"}
    assert free_names_of("wp.vector(a, length=n, dtype=wp.float32)") == {"wp", "a", "n"}
