"""Each lint rule on a minimal snippet it must flag and a minimal one it must leave alone."""

from __future__ import annotations

import textwrap

import pytest

from adjointgen.tools.lint import lint

HEADER = "import warp as wp\nfrom typing import Any\nN = 20\n\n"


def findings(tmp_path, body: str, rule: str, velocity_set: str | None = None, name: str = "snippet.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    result = lint([str(path)], velocity_set=velocity_set, select=[rule])
    return result.findings


CASES = {
    "dynamic-loop": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            s = float(1.0)
            for i in range(N):
                s = s * x[i]
            y[0] = s
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            for i in range(N):
                y[i] = x[i] * x[i]
        """,
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
            w = wp.vec3(2.0, v[1], v[2])
            y[i] = w[0]
        """,
    ),
    "array-read-write": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float)):
            i = wp.tid()
            x[i] = x[i] * x[i]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = x[i] * x[i]
        """,
    ),
    "array-augmented-assign": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] *= x[i]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] += x[i]
        """,
    ),
    "early-return": (
        """
        @wp.kernel
        def k(mask: wp.array(dtype=wp.uint8), x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            if mask[i] == wp.uint8(1):
                return
            y[i] = x[i]
        """,
        """
        @wp.kernel
        def k(mask: wp.array(dtype=wp.uint8), x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = wp.where(mask[i] == wp.uint8(1), 0.0, x[i])
        """,
    ),
    "integer-cast": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = float(wp.int32(x[i] * 10.0))
        """,
        """
        @wp.kernel
        def k(n: wp.array(dtype=wp.int32), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = float(wp.int32(n[i]) * 2)
        """,
    ),
    "comparison-cast": (
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = float(x[i] > 0.5) * x[i]
        """,
        """
        @wp.kernel
        def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
            i = wp.tid()
            y[i] = wp.where(x[i] > 0.5, x[i], 0.0)
        """,
    ),
    "tape-buffer-reuse": (
        """
        def rollout(step, a, b):
            tape = wp.Tape()
            with tape:
                for t in range(10):
                    wp.launch(step, dim=4, inputs=[a], outputs=[b])
                    a, b = b, a
            return tape
        """,
        """
        def rollout(step, states):
            tape = wp.Tape()
            with tape:
                wp.launch(step, dim=4, inputs=[states[0]], outputs=[states[1]])
            return tape
        """,
    ),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_flags_its_positive_case(tmp_path, rule):
    positive, _ = CASES[rule]
    found = findings(tmp_path, positive, rule)
    assert found, f"{rule} missed its positive case"
    assert all(f.rule == rule and f.line > 0 and f.column > 0 and f.fix and f.backward for f in found)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_leaves_its_negative_case_alone(tmp_path, rule):
    _, negative = CASES[rule]
    assert findings(tmp_path, negative, rule) == []


def test_dynamic_loop_position_and_trip_count(tmp_path):
    (finding,) = findings(tmp_path, CASES["dynamic-loop"][0], "dynamic-loop")
    assert (finding.line, finding.column) == (9, 5)  # the `for` line (after the 4-line header), 1-based column
    assert finding.details == {"trip_count": 20, "reassigned": ["s"]}


def test_dynamic_loop_unrolled_when_short_or_static(tmp_path):
    short = CASES["dynamic-loop"][0].replace("range(N)", "range(16)")
    assert findings(tmp_path, short, "dynamic-loop") == []
    static = CASES["dynamic-loop"][0].replace("s = s * x[i]", "s = s * x[wp.static(i * 1)]")
    assert findings(tmp_path, static, "dynamic-loop") == []


def test_dynamic_loop_break_and_runtime_bound(tmp_path):
    with_break = """
    @wp.kernel
    def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
        s = float(1.0)
        for i in range(4):
            s = s * x[i]
            if s > 2.0:
                break
        y[0] = s
    """
    (finding,) = findings(tmp_path, with_break, "dynamic-loop")
    assert "break" in finding.message
    runtime = """
    @wp.kernel
    def k(x: wp.array(dtype=float), n: int, y: wp.array(dtype=float)):
        s = float(1.0)
        for i in range(n):
            s = s * x[i]
        y[0] = s
    """
    (finding,) = findings(tmp_path, runtime, "dynamic-loop")
    assert finding.details["trip_count"] == "runtime"


VELOCITY_LOOP = """
class Op:
    def _construct_warp(self):
        _q = self.velocity_set.q

        @wp.func
        def moment(f: Any):
            rho = float(1.0)
            for l in range(_q):
                rho = rho * f[l]
            return rho

        return moment
"""


def test_velocity_set_bounds_resolve_or_say_unknown(tmp_path):
    (unknown,) = findings(tmp_path, VELOCITY_LOOP, "dynamic-loop")
    assert unknown.certainty == "unknown" and unknown.details["trip_count"] == "unknown"
    assert "--velocity-set" in unknown.message
    (d3q19,) = findings(tmp_path, VELOCITY_LOOP, "dynamic-loop", velocity_set="D3Q19")
    assert d3q19.details["trip_count"] == 19 and d3q19.certainty == "certain"
    assert findings(tmp_path, VELOCITY_LOOP, "dynamic-loop", velocity_set="D2Q9") == []


def test_module_options_in_the_file_are_honoured(tmp_path):
    raised = "wp.set_module_options({'max_unroll': 32})\n" + textwrap.dedent(CASES["dynamic-loop"][0])
    assert findings(tmp_path, raised, "dynamic-loop") == []
    overwrites = ("wp.config.enable_vector_component_overwrites = True\n"
                  + textwrap.dedent(CASES["vector-component-write"][0]))
    assert findings(tmp_path, overwrites, "vector-component-write") == []
    # Warp folds the global switch into every module's options: as a module option it does nothing
    ignored = ("wp.set_module_options({'enable_vector_component_overwrites': True})\n"
               + textwrap.dedent(CASES["vector-component-write"][0]))
    assert len(findings(tmp_path, ignored, "vector-component-write")) == 1
    no_backward = CASES["array-read-write"][0].replace("@wp.kernel", "@wp.kernel(enable_backward=False)")
    assert findings(tmp_path, no_backward, "array-read-write") == []


def test_any_typed_vector_write_is_likely(tmp_path):
    body = """
    @wp.func
    def bounce(f_0: Any, f_post: Any, l: int):
        _f = f_post
        _f[l] = f_0[l, 0, 0, 0]
        return _f
    """
    (finding,) = findings(tmp_path, body, "vector-component-write")
    assert finding.certainty == "likely" and "_f[l]" in finding.message


def test_inline_suppression_needs_a_reason(tmp_path):
    body = CASES["early-return"][0].replace(
        "return\n", "return  # adjointgen: ignore[early-return] solid cells keep their values on purpose\n")
    path = tmp_path / "s.py"
    path.write_text(HEADER + textwrap.dedent(body))
    result = lint([str(path)])
    assert result.findings == [] and result.suppressed[0].suppressed == "solid cells keep their values on purpose"

    no_reason = CASES["early-return"][0].replace("return\n", "return  # adjointgen: ignore[early-return]\n")
    path.write_text(HEADER + textwrap.dedent(no_reason))
    rules = sorted(f.rule for f in lint([str(path)]).findings)
    assert rules == ["bad-suppression", "early-return"]

    above = CASES["early-return"][0].replace(
        "                return\n", "                # adjointgen: ignore[early-return] -- intended\n                return\n")
    path.write_text(HEADER + textwrap.dedent(above))
    assert lint([str(path)]).findings == []

    unknown_rule = CASES["early-return"][0].replace("return\n", "return  # adjointgen: ignore[early-exit] typo\n")
    path.write_text(HEADER + textwrap.dedent(unknown_rule))
    assert sorted(f.rule for f in lint([str(path)]).findings) == ["bad-suppression", "early-return"]


def test_filling_a_fresh_vector_is_not_an_overwrite(tmp_path):
    body = """
    @wp.kernel
    def k(f: wp.array2d(dtype=float), y: wp.array(dtype=float)):
        i = wp.tid()
        v = wp.vec3()
        for l in range(3):
            v[l] = f[l, i]
        idx = wp.vec3i()
        idx[0] = i
        y[i] = v[0] * v[1] + v[2] + float(idx[0])
    """
    assert findings(tmp_path, body, "vector-component-write") == []
    read_in_loop = body.replace("v[l] = f[l, i]", "v[l] = f[l, i] * v[0]")
    assert len(findings(tmp_path, read_in_loop, "vector-component-write")) == 1


def test_kernels_made_by_a_factory_are_checked_or_skipped_as_their_wrapper_says(tmp_path):
    """``wp.kernel(...)(body)`` inside a function (a kernel factory) is a Warp kernel like a
    decorated one: flagged when Warp builds its backward, skipped with ``enable_backward=False``."""
    factory = """
        def make(scale: float, backward: bool):
            def k(x: wp.array(dtype=float), y: wp.array(dtype=float)):
                s = float(1.0)
                for i in range(N):
                    s = s * x[i]
                y[0] = s
            return wp.kernel(enable_backward={flag})(k)
        """
    assert [f.rule for f in findings(tmp_path, factory.format(flag="True"), "dynamic-loop")] == ["dynamic-loop"]
    path = tmp_path / "off.py"
    path.write_text(HEADER + textwrap.dedent(factory.format(flag="False")))
    result = lint([str(path)], select=["dynamic-loop"])
    assert result.findings == [] and result.backward_disabled == 1
