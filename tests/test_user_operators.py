"""Users' own XLB-style operators: a regularized BGK collision written here (Warp functional and
JAX implementation), verified against JAX autodiff of that JAX implementation; the example file's
TRT collision and moving-wall boundary condition through the CLI; and the errors users meet."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adjointgen
import adjointgen.xlb.compat
from adjointgen.tools import cli
from adjointgen.config import Configuration
from adjointgen.errors import ConfigurationError

adjointgen.xlb.compat.apply()

import jax.numpy as jnp  # noqa: E402
import warp as wp  # noqa: E402
from jax import jit  # noqa: E402
from xlb.compute_backend import ComputeBackend  # noqa: E402
from xlb.operator import Operator  # noqa: E402
from xlb.operator.collision.collision import Collision  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user_operators.py"
CS2 = 1.0 / 3.0


@adjointgen.register
class RegularizedBGKUnderTest(Collision):
    """Regularized BGK: the non-equilibrium part is replaced by its projection on the second-order
    Hermite polynomial before relaxing, f_out = f_eq + (1 - omega) w_i Q_i : Pi_neq / (2 cs^4)."""

    @Operator.register_backend(ComputeBackend.JAX)
    @partial(jit, static_argnums=(0,))
    def jax_implementation(self, f, feq, rho, u, omega):
        c = np.asarray(self.velocity_set._c, dtype=np.float64)
        w = np.asarray(self.velocity_set._w, dtype=np.float64).reshape((-1,) + (1,) * (f.ndim - 1))
        fneq = f - feq
        pi = jnp.einsum("al,bl,l...->ab...", c, c, fneq)
        q_pi = jnp.einsum("al,bl,ab...->l...", c, c, pi) - CS2 * jnp.trace(pi)
        return feq + (1.0 - omega) * w * q_pi / (2.0 * CS2**2)

    def _construct_warp(self):
        _c = self.velocity_set.c
        _w = self.velocity_set.w
        _d = self.velocity_set.d
        _f_vec = wp.vec(self.velocity_set.q, dtype=self.compute_dtype)
        _pi_vec = wp.vec(_d * _d, dtype=self.compute_dtype)
        _cs2 = self.compute_dtype(CS2)
        _scale = self.compute_dtype(1.0 / (2.0 * CS2**2))

        @wp.func
        def functional(f: Any, feq: Any, rho: Any, u: Any, omega: Any):
            fneq = f - feq
            pi = _pi_vec()
            for a in range(_d):
                for b in range(_d):
                    s = self.compute_dtype(0.0)
                    for l in range(self.velocity_set.q):
                        s += self.compute_dtype(_c[a, l] * _c[b, l]) * fneq[l]
                    pi[a * _d + b] = s
            trace = self.compute_dtype(0.0)
            for a in range(_d):
                trace += pi[a * _d + a]
            fout = _f_vec()
            for l in range(self.velocity_set.q):
                q_pi = -_cs2 * trace
                for a in range(_d):
                    for b in range(_d):
                        q_pi += self.compute_dtype(_c[a, l] * _c[b, l]) * pi[a * _d + b]
                fout[l] = feq[l] + (self.compute_dtype(1.0) - self.compute_dtype(omega)) * _w[l] * _scale * q_pi
            return fout

        return functional, None


@pytest.mark.parametrize("label", ["D2Q9/RegularizedBGKUnderTest/FP64FP64", "D3Q19/RegularizedBGKUnderTest/FP32FP32"])
def test_user_collision_matches_jax_autodiff_of_its_jax_implementation(label):
    from adjointgen.tools.verify import verify_configuration

    row = verify_configuration(Configuration.parse(label))
    assert row.passed, row.results
    assert {"forward", "grad_1", "grad_5", "omega"} <= set(row.results)
    assert row.results["grad_5"][0] < row.results["grad_5"][1]


def test_user_collision_is_really_used():
    """The generated forward applies the regularized collision, not XLB's BGK it replaced."""
    from adjointgen.tools.verify import GeneratedSide, random_state

    config = Configuration.parse("D2Q9/RegularizedBGKUnderTest/FP64FP64")
    f0 = random_state(config, (6, 5), 0)
    ours, _ = GeneratedSide(config, (6, 5)).rollout(f0, 1)
    bgk, _ = GeneratedSide(Configuration.parse("D2Q9/BGK/FP64FP64"), (6, 5)).rollout(f0, 1)
    assert np.max(np.abs(ours - bgk)) > 1e-6


def test_example_operators_verify_through_the_cli(capsys):
    argv = ["verify", "--source", str(EXAMPLE), "--config", "D2Q9/TRT/FP64FP64", "--config", "D2Q9/TRT/FP64FP64/moving_lid"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "all 2 configurations passed" in out


def test_build_with_source_writes_a_module(tmp_path, capsys):
    assert cli.main(["build", "--source", str(EXAMPLE), "--config", "D2Q9/TRT/FP32FP32", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "d2q9_trt_fp32fp32.py").read_text()
    assert "TRT_functional" in text and "user_operators.py" in text  # provenance names the user's file


def test_unknown_collision_says_how_to_register(capsys):
    assert cli.main(["build", "--config", "D2Q9/NoSuchModel/FP32FP32"]) == 2
    assert "@adjointgen.register" in capsys.readouterr().err


def test_register_refuses_what_is_not_an_operator():
    with pytest.raises(ConfigurationError, match="neither an xlb Collision"):
        adjointgen.register(type("NotAnOperator", (), {"_construct_warp": lambda self: None}))
    with pytest.raises(ConfigurationError, match="built-in collision"):
        adjointgen.register(type("BGK", (Collision,), {"_construct_warp": lambda self: None}))


def test_source_errors(tmp_path, capsys):
    assert cli.main(["build", "--source", str(tmp_path / "missing.py"), "--config", "D2Q9/BGK/FP32FP32"]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty_ops.py"
    empty.write_text("x = 1\n")
    assert cli.main(["build", "--source", str(empty), "--config", "D2Q9/BGK/FP32FP32", "--out", str(tmp_path)]) == 2
    assert "registers no operator" in capsys.readouterr().err


def test_a_functional_outside_the_fence_is_refused_with_its_line_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "bad_ops.py"
    source.write_text(
        "from typing import Any\n"
        "import warp as wp\n"
        "import adjointgen\n"
        "from xlb.operator.collision.collision import Collision\n\n\n"
        "@adjointgen.register\n"
        "class WhileBGK(Collision):\n"
        "    def _construct_warp(self):\n"
        "        @wp.func\n"
        "        def functional(f: Any, feq: Any, rho: Any, u: Any, omega: Any):\n"
        "            n = 0\n"
        "            while n < 3:\n"
        "                n = n + 1\n"
        "            return f - self.compute_dtype(omega) * (f - feq)\n\n"
        "        return functional, None\n")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["build", "--source", str(source), "--config", "D2Q9/WhileBGK/FP32FP32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad_ops.py:13" in err and "While" in err
    assert list(out.iterdir()) == []
