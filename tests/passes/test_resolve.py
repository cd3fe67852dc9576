import types

import pytest
import warp as wp

from adjointgen.errors import UnresolvedName
from adjointgen.compiler.passes.resolve import Resolve
from tests.helpers import assert_idempotent, run


@wp.func
def helper(x: float):
    return x


VS = types.SimpleNamespace(q=9, d=2)
SELF = types.SimpleNamespace(velocity_set=VS, compute_dtype=wp.float64, fn=helper, items=[1, 2])
NAMESPACE = {"self": SELF, "_f_vec": wp.types.vector(length=9, dtype=wp.float32)}


def test_constants_types_vectors_and_functions():
    source = """\
def f(a):
    for l in range(self.velocity_set.q):
        a = self.compute_dtype(a)
    v = _f_vec()
    n = wp.static(len(self.items))
    return self.fn(a)
"""
    code, ctx = run(Resolve(), source, NAMESPACE)
    assert "range(9)" in code
    assert "a = wp.float64(a)" in code
    assert "v = wp.vector(length=9, dtype=wp.float32)" in code
    assert "n = 2" in code
    assert "return helper(a)" in code
    assert "helper" in ctx.functions


def test_locals_shadow_closure_names():
    source = "def f(self):\n    return self.velocity_set.q\n"
    assert run(Resolve(), source, NAMESPACE)[0] == source


def test_unknown_name_is_refused_with_its_line():
    source = "def f(a):\n    b = a\n    return a + undefined_thing\n"
    with pytest.raises(UnresolvedName) as info:
        run(Resolve(), source, NAMESPACE, located=True)
    assert "snippet.py:3" in str(info.value) and "undefined_thing" in str(info.value)


def test_nothing_to_change():
    source = "def f(a, b):\n    return a * b + 1.0\n"
    assert run(Resolve(), source, NAMESPACE)[0] == source


def test_idempotent():
    source = "def f(a):\n    v = _f_vec()\n    return self.fn(a) * self.velocity_set.q\n"
    assert_idempotent(Resolve(), source, NAMESPACE)


def test_lifted_boundary_values_become_parameter_names():
    from adjointgen.compiler.parameters import Lifted
    from adjointgen.compiler.passes import PassContext
    from tests.helpers import functional

    namespace = {"_u": wp.types.vector(length=2, dtype=wp.float32)(0.05, 0.0), "_rho": wp.float32(1.0)}
    source = "def f(a):\n    return eq(_rho, _u) + a\n"
    f = functional(source, dict(namespace, eq=helper))
    lifts = {id(f.pyfunc): [Lifted("_rho", "bc1_rho", 0, 1, "rho"), Lifted("_u", "bc1_u", 2, 1, "u")]}
    ctx = PassContext(f, {}, lifts=lifts)
    import libcst as cst

    once = Resolve()(cst.parse_module(source), ctx).code
    assert "helper(bc1_rho, wp.vector(bc1_u_0, bc1_u_1, length=2, dtype=wp.float32)) + a" in once
    assert Resolve()(cst.parse_module(once), ctx).code == once  # idempotent, parameters left alone
