"""Design fields: a collision reading a per-cell field (PorousBGK, porosity), its gradient through
wp.Tape and checkpointed rollouts, checked against XLB-JAX and FP64 finite differences; a planted
wrong field adjoint is rejected; modules without fields are unchanged; errors users meet."""

from __future__ import annotations

import re

import numpy as np
import pytest
import warp as wp

import adjointgen
from adjointgen.config import Configuration
from adjointgen.errors import ConfigurationError, RuntimeArgumentError
from adjointgen.manifest import body_sha256, split_generated
from adjointgen.runtime.modules import load_checked
from adjointgen.tools.verify import (STEPS, TOLERANCES, GeneratedSide, design_fields, probe_cells, random_state,
                                     verify_configuration)

D2Q9_64 = Configuration.parse("D2Q9/PorousBGK/FP64FP64")
SHAPE = (6, 5)


@pytest.fixture(scope="module")
def side():
    return GeneratedSide(D2Q9_64, SHAPE)


@pytest.mark.parametrize("label, shape, checks", [
    ("D2Q9/PorousBGK/FP64FP64", None, ("forward", "grad_1", f"grad_{STEPS}", "omega", "field", "field_fd", "fd")),
    ("D2Q9/PorousBGK/FP32FP32", None, ("forward", "grad_1", "field")),
    ("D3Q19/PorousBGK/FP32FP32", (4, 5, 3), ("forward", "field")),
])
def test_porous_rows_match_the_oracles(label, shape, checks):
    row = verify_configuration(Configuration.parse(label), shape, checks=checks)
    expected = set(checks) - ({"field_fd", "fd"} if "FP32" in label else set())
    assert set(row.results) == expected
    for name, (error, tolerance) in row.results.items():
        assert error <= tolerance, f"{label} {name}: {error:.2e} > {tolerance:.0e}"


def test_the_checker_rejects_a_wrong_field_adjoint(side, tmp_path):
    source = open(side.step.module.__file__).read()
    # one contribution to the porosity's adjoint off by 0.1 %, in every variant's one body
    mutated = re.sub(r"(        adj_porosity_0 = adj_porosity_0 \+ )(.*)\n", r"\1(\2) * wp.float64(1.001)\n", source, count=1)
    assert mutated != source
    recorded, body = split_generated(mutated)
    path = tmp_path / "planted_porous.py"
    path.write_text(mutated.replace(recorded, body_sha256(body), 1))
    module = load_checked(path, "planted_porous")
    row = verify_configuration(D2Q9_64, module=module, checks=("grad_1", "field", "field_fd"))
    assert not row.passed
    assert row.results["field"][0] > 1e-6 and row.results["field_fd"][0] > 1e-7
    assert row.results["grad_1"][0] <= TOLERANCES["FP64FP64"]["grad"]  # the state gradient is still right


def test_manifest_identity_and_modules_without_fields(side):
    from adjointgen.runtime.step import stepper_identity
    from adjointgen.tools.cli import generated_dir
    from adjointgen.xlb.support import make_stepper

    assert side.step.manifest.fields == ("porosity",)
    assert '"fields"' in open(side.step.module.__file__).read()
    shipped = (generated_dir() / "d2q9_bgk_fp64fp64.py").read_text()
    assert '"fields"' not in shipped and "porosity" not in shipped
    bgk = make_stepper(Configuration.parse("D2Q9/BGK/FP64FP64"), "warp", SHAPE)
    assert stepper_identity(bgk) != stepper_identity(side.stepper)
    assert adjointgen.differentiable(bgk).manifest.fields == ()


def test_probe_cells_cover_fluid_solid_gray_and_interface():
    values = design_fields({"porosity": (1, *SHAPE, 1)})["porosity"]
    kinds = {float(values[cell]) for cell in probe_cells(values)}
    assert 0.0 in kinds and 1.0 in kinds and any(0.0 < v < 1.0 for v in kinds)
    assert len(probe_cells(values)) == 4


def _tape_gradient(step, f_0, f_1, bc_mask, missing_mask, steps, cotangent):
    gamma = step.fields["porosity"]
    gamma.grad.zero_()
    a, b = wp.array(f_0, requires_grad=True), wp.array(f_1, requires_grad=True)
    tape = wp.Tape()
    with tape:
        for t in range(steps):
            a, b = step(a, b, bc_mask, missing_mask, 1.6, t)
            a, b = b, a
    tape.backward(grads={a: wp.array(cotangent)})
    return gamma.grad.numpy().copy()


def test_rollouts_give_the_tape_gradient(side):
    step, steps = side.step, 6
    f0 = random_state(D2Q9_64, SHAPE, 0)
    f1 = side.f1_prepared
    cotangent = np.random.default_rng(3).standard_normal(f0.shape)
    step.fields["porosity"] = wp.array(side.field_values["porosity"], dtype=wp.float64, requires_grad=True)
    expected = _tape_gradient(step, f0, f1, side.bc_mask, side.missing_mask, steps, cotangent)
    for snapshots in (2, steps):
        result = adjointgen.checkpointed_rollout(step, wp.array(f0), wp.array(f1), side.bc_mask, side.missing_mask, 1.6,
                                                 steps=steps, snapshots=snapshots)
        accumulated = wp.array(np.ones((1, *SHAPE, 1)), dtype=wp.float64)  # backward adds into it
        result.backward(adj_f_0=wp.array(cotangent), adj_fields={"porosity": accumulated})
        assert np.allclose(accumulated.numpy() - 1.0, expected, rtol=1e-12, atol=1e-14)
    # recorded on a tape, a rollout fills the field's .grad
    step.fields["porosity"].grad.zero_()
    a, b = wp.array(f0, requires_grad=True), wp.array(f1, requires_grad=True)
    with wp.Tape() as tape:
        result = adjointgen.checkpointed_rollout(step, a, b, side.bc_mask, side.missing_mask, 1.6, steps=steps, snapshots=3)
    tape.backward(grads={result.f_0: wp.array(cotangent)})
    assert np.allclose(step.fields["porosity"].grad.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_errors_name_the_fields(side):
    stepper = side.stepper
    with pytest.raises(RuntimeArgumentError, match=r"fields=\{'porosity': array\}"):
        adjointgen.differentiable(stepper)
    with pytest.raises(RuntimeArgumentError, match="not read: density"):
        adjointgen.differentiable(stepper, fields={"porosity": side.step.fields["porosity"], "density": None})
    step = adjointgen.differentiable(stepper, fields={"porosity": wp.zeros((1, 5, 6, 1), dtype=wp.float64)})
    f_0, f_1 = wp.zeros((9, *SHAPE, 1), dtype=wp.float64), wp.zeros((9, *SHAPE, 1), dtype=wp.float64)
    with pytest.raises(RuntimeArgumentError, match=r"shape \(1, 6, 5, 1\) and dtype float64"):
        step(f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 0)
    step.fields["porosity"] = wp.zeros((1, *SHAPE, 1), dtype=wp.float32)
    with pytest.raises(RuntimeArgumentError, match="design field 'porosity'"):
        step(f_0, f_1, side.bc_mask, side.missing_mask, 1.6, 0)
    with pytest.raises(ConfigurationError, match="stepper kernel"):
        adjointgen.field("omega")
    from adjointgen.xlb.design import _bound

    with pytest.raises(ConfigurationError, match="bound_fields"):
        _bound(stepper.collision, "porosity")


def test_every_adjoint_variant_adds_the_field_gradient_into_the_callers_array(side):
    import re

    text = open(side.step.module.__file__).read()
    body = text[text.index("def _adjoint_variant"):]
    writes = re.findall(r"adj_porosity\[0, i, j, k\] = (.*)", body)
    assert writes and all(re.fullmatch(r"old_\d+ \+ adj_porosity_\d+", value) for value in writes), writes
    read = re.search(r"\n( *)old_\d+ = adj_porosity\[0, i, j, k\]", body)
    assert read and len(read.group(1)) == 8  # at the body's top level: read by the fresh variants too
