"""Every default configuration, 1 and 5 steps, against XLB-JAX and FP64 finite differences."""

import re

import numpy as np
import pytest

from adjointgen.config import Configuration, default_configurations
from adjointgen.manifest import body_sha256, split_generated
from adjointgen.runtime.modules import load_checked
from adjointgen.tools.verify import STEPS, TOLERANCES, relative_error, verify_configuration, xlb_warp_fails

CONFIGS = default_configurations()
WITH_BOUNDARIES = default_configurations(key="verify_also")


@pytest.mark.parametrize("config", CONFIGS + WITH_BOUNDARIES, ids=lambda c: c.name)
def test_configuration_matches_oracles(config):
    row = verify_configuration(config)
    expected = {"grad_1", f"grad_{STEPS}", "omega"} | ({"fd"} if config.is_fp64 else set())
    expected |= set() if xlb_warp_fails(config) else {"forward"}
    # prescribed values: the lid's rho and u, the ZouHe/Regularized inlet's and outlet's values
    expected |= {"bc_values"} if config.boundaries not in ("periodic", "box") else set()
    assert set(row.results) == expected
    for name, (error, tolerance) in row.results.items():
        assert error <= tolerance, f"{config.label} {name}: {error:.2e} > {tolerance:.0e}"
    assert row.passed


def test_default_configurations_cover_the_foundation_scope():
    everything = {(vs, p) for vs in ("D2Q9", "D3Q19", "D3Q27") for p in ("FP32FP32", "FP64FP64")}
    assert {(c.velocity_set, c.precision) for c in CONFIGS} == everything
    assert {(c.velocity_set, c.precision) for c in WITH_BOUNDARIES if c.boundaries == "cavity"} == everything


def test_every_boundary_mix_and_collision_model_is_verified_in_2d_and_3d():
    from adjointgen.config import BOUNDARIES, COLLISIONS

    verified = WITH_BOUNDARIES + default_configurations(key="verify_extended")
    verified += default_configurations(key="verify_fields")  # the bouzidi mix (its wall reads a design field)
    for mix in BOUNDARIES:
        assert {c.dim for c in CONFIGS + verified if c.boundaries == mix} == {2, 3}, mix
    for model in ("BGK", "KBC", "SmagorinskyLESBGK", "ForcedBGK"):
        assert model in COLLISIONS
        assert {c.dim for c in CONFIGS + verified if c.collision == model} == {2, 3}, model


def _planted(tmp_path, name, mutate):
    from adjointgen.tools.cli import generated_dir

    text = (generated_dir() / "d2q9_bgk_fp64fp64.py").read_text()
    # the first reverse sweep is the adjoint kernel's (adjoint_fresh follows; mutations use count=1)
    head, sweep = text.split("    # reverse sweep\n", 1)
    mutated = mutate(sweep)
    assert mutated != sweep
    planted = head + "    # reverse sweep\n" + mutated
    # re-hashed, so the planted module loads as an intact one would: the checker, not the load-time
    # hash check, must be what rejects it
    recorded, body = split_generated(planted)
    path = tmp_path / f"{name}.py"
    path.write_text(planted.replace(recorded, body_sha256(body), 1))
    return load_checked(path, f"planted_{name}")


def test_checker_rejects_a_slightly_wrong_adjoint(tmp_path):
    # one partial derivative off by 0.1%
    module = _planted(tmp_path, "scaled", lambda s: re.sub(r"(    adj_fneq_3 = )(.*)\n", r"\1(\2) * wp.float64(1.001)\n", s, count=1))
    row = verify_configuration(Configuration.parse("D2Q9/BGK/FP64FP64"), module=module, checks=("grad_1", "fd"))
    assert not row.passed
    assert row.results["grad_1"][0] > 1e-6 and row.results["fd"][0] > 1e-7


def test_checker_rejects_a_nan_adjoint(tmp_path):
    module = _planted(tmp_path, "nan", lambda s: re.sub(r"(    adj_fneq_3 = )(.*)\n", r"\1(\2) * wp.log(wp.float64(-1.0))\n", s, count=1))
    row = verify_configuration(Configuration.parse("D2Q9/BGK/FP64FP64"), module=module, checks=("grad_1",))
    assert not row.passed


def test_relative_error_is_max_norm_relative():
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.0, 2.5], [1.0, 2.0]) == 0.25
    assert TOLERANCES["FP64FP64"]["grad"] == 1e-10 and TOLERANCES["FP32FP32"]["grad"] == 1e-5
    assert np.isnan(relative_error([np.nan], [1.0]))
