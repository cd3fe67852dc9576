"""The lint rules are grounded in behaviour: on the snippet a rule flags, Warp's own tape gives a
wrong gradient (checked against the derivative worked out by hand); on the fixed snippet the rule
is silent and the tape is right. Each snippet is a file that is both linted and imported."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import numpy as np
import pytest
import warp as wp

from adjointgen.tools.lint import lint

X = np.linspace(0.9, 1.1, 20).astype(np.float32)

SNIPPETS = {
    # rule: (flagged source, fixed source, kernel launch dim, expected d sum(y) / dx)
    "dynamic-loop": (
        """
        N = 20

        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            s = float(1.0)
            for i in range(N):
                s = s * x[i]
            y[0] = s
        """,
        """
        N = 20
        wp.set_module_options({"max_unroll": N})

        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            s = float(1.0)
            for i in range(N):
                s = s * x[i]
            y[0] = s
        """,
        1,
        np.prod(X) / X,
    ),
    "dynamic-loop/vector": (  # XLB's pattern: load populations into a local vector in a loop of q
        """
        N = 20
        vec20 = wp.types.vector(length=20, dtype=float)

        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            v = vec20()
            for i in range(N):
                v[i] = x[i] * x[i]
            y[0] = wp.dot(v, v)
        """,
        """
        N = 20
        vec20 = wp.types.vector(length=20, dtype=float)
        wp.set_module_options({"max_unroll": N})

        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            v = vec20()
            for i in range(N):
                v[i] = x[i] * x[i]
            y[0] = wp.dot(v, v)
        """,
        1,
        4 * X**3,
    ),
    "vector-component-write": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            v = wp.vec3(x[i], 0.0, 0.0)
            w = v[0] * v[0]
            v[0] = 2.0
            y[i] = w + v[0]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            v = wp.vec3(x[i], 0.0, 0.0)
            w = v[0] * v[0]
            v2 = wp.vec3(2.0, v[1], v[2])
            y[i] = w + v2[0]
        """,
        20,
        2 * X,
    ),
    "array-read-write": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = x[i]
            y[i] = y[i] * y[i]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            t = x[i]
            y[i] = t * t
        """,
        20,
        2 * X,
    ),
    "array-augmented-assign": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = x[i]
            y[i] *= x[i]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = x[i] * x[i]
        """,
        20,
        2 * X,
    ),
}


def _load(tmp_path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text("import warp as wp\n" + textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return path, module


def _tape_gradient(kernel, dim: int) -> np.ndarray:
    x = wp.array(X, dtype=float, requires_grad=True, device="cpu")
    y = wp.zeros(20, dtype=float, requires_grad=True, device="cpu")
    tape = wp.Tape()
    with tape:
        wp.launch(kernel, dim=dim, inputs=[x, y], device="cpu")
    tape.backward(grads={y: wp.ones(20, dtype=float, device="cpu")})
    return x.grad.numpy()


@pytest.mark.parametrize("case", sorted(SNIPPETS))
def test_flagged_snippet_has_a_wrong_tape_gradient_and_the_fix_a_right_one(tmp_path, case):
    flagged, fixed, dim, expected = SNIPPETS[case]
    rule = case.split("/")[0]
    stem = f"grounding_{case.replace('-', '_').replace('/', '_')}"
    path, module = _load(tmp_path, f"{stem}_flagged", flagged)
    assert [f.rule for f in lint([str(path)], select=[rule]).findings] == [rule]
    wrong = _tape_gradient(module.k, dim)
    assert not np.allclose(wrong, expected, rtol=1e-3), f"{rule}: Warp's tape was right on the flagged snippet"

    path, module = _load(tmp_path, f"{stem}_fixed", fixed)
    assert lint([str(path)], select=[rule]).findings == []
    np.testing.assert_allclose(_tape_gradient(module.k, dim), expected, rtol=1e-5)


def test_sums_in_a_dynamic_loop_are_differentiated_right_and_not_flagged(tmp_path):
    """The rule's one exemption, grounded too: a loop of 20 that only adds to a scalar."""
    source = """
    N = 20

    @wp.kernel
    def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
        s = float(0.0)
        t = float(0.0)
        for i in range(N):
            s += x[i] * x[i]
            t = t - x[i]
        y[0] = s + t
    """
    path, module = _load(tmp_path, "grounding_accumulation", source)
    assert lint([str(path)]).findings == []
    np.testing.assert_allclose(_tape_gradient(module.k, 1), 2 * X - 1, rtol=1e-5)
