"""The PyTorch face: torch.autograd through the generated step equals the Warp tape's gradient
(d/d f_0, f_1 and omega over a few steps of XLB's two-buffer loop), passes gradcheck against
finite differences, and leaves the caller's tensors alone. D2Q9 FP64: periodic, a cavity, and a
ZouHe channel (whose step writes f_0 and reads f_1)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import warp as wp  # noqa: E402

import adjointgen  # noqa: E402
from adjointgen.config import Configuration  # noqa: E402
from adjointgen.errors import RuntimeArgumentError  # noqa: E402
from adjointgen.runtime.torch_face import torch_step  # noqa: E402
from adjointgen.tools.verify import OMEGA, random_state  # noqa: E402
from adjointgen.xlb.support import make_stepper, prepare_fields  # noqa: E402

STEPS = 3
TOLERANCE = 1e-12  # the same kernels on both sides: FP64 rounding only


@functools.cache
def _setup(label: str, shape: tuple):
    """One step (and generated module) per configuration, shared by the tests."""
    config = Configuration.parse(label)
    stepper = make_stepper(config, "warp", shape)
    step = adjointgen.differentiable(stepper)
    _, f_1, bc_mask, missing_mask = prepare_fields(stepper, config)
    f_0 = random_state(config, shape, 0).astype(np.float64)
    cotangent = np.random.default_rng(1).standard_normal(f_0.shape)
    return step, f_0, f_1.numpy(), bc_mask, missing_mask, cotangent


def _tensor(array, like, requires_grad=True):
    """A float64 tensor of ``array`` on the device of the Warp array ``like`` (Warp's default device)."""
    return torch.tensor(array, device=wp.device_to_torch(like.device), requires_grad=requires_grad)


def _torch_gradients(step, f_0, f_1, bc_mask, missing_mask, cotangent):
    face = torch_step(step)
    x0, x1, seed = _tensor(f_0, bc_mask), _tensor(f_1, bc_mask), _tensor(cotangent, bc_mask, False)
    bc_mask, missing_mask = wp.to_torch(bc_mask), wp.to_torch(missing_mask)  # masks as tensors (gradcheck: Warp arrays)
    omega = torch.tensor(OMEGA, dtype=torch.float64, device=x0.device, requires_grad=True)
    state, other = x0, x1
    for t in range(STEPS):
        state, other = face(state, other, bc_mask, missing_mask, omega, t)
        state, other = other, state  # XLB's loop: the new state becomes f_0
    (seed * state).sum().backward()
    return x0.grad.cpu().numpy(), x1.grad.cpu().numpy(), float(omega.grad)


def _warp_gradients(step, f_0, f_1, bc_mask, missing_mask, cotangent):
    device = bc_mask.device
    x0, x1 = (wp.array(a, dtype=wp.float64, device=device, requires_grad=True) for a in (f_0, f_1))
    omega = wp.array([OMEGA], dtype=wp.float64, device=device, requires_grad=True)
    state, other = x0, x1
    with wp.Tape() as tape:
        for t in range(STEPS):
            state, other = step(state, other, bc_mask, missing_mask, omega, t)
            state, other = other, state
    tape.backward(grads={state: wp.array(cotangent, dtype=wp.float64, device=device)})
    return x0.grad.numpy(), x1.grad.numpy(), float(omega.grad.numpy()[0])


def _assert_same(ours, reference, what):
    scale = max(float(np.max(np.abs(reference))), 1e-300)
    error = float(np.max(np.abs(np.asarray(ours) - np.asarray(reference)))) / scale
    assert error <= TOLERANCE, f"{what}: relative difference {error:.3e} > {TOLERANCE:g}"


CASES = [("D2Q9/BGK/FP64FP64", (8, 6)), ("D2Q9/BGK/FP64FP64/cavity", (8, 6)), ("D2Q9/BGK/FP64FP64/channel", (10, 6))]


@pytest.mark.parametrize("label, shape", CASES)
def test_gradients_equal_the_warp_tapes(label, shape):
    setup = _setup(label, shape)
    before = [np.array(a) for a in setup[1:3]]
    ours = _torch_gradients(*setup)
    reference = _warp_gradients(*setup)
    assert np.abs(reference[0]).max() > 0 and reference[2] != 0
    for what, a, b in zip(("d/d f_0", "d/d f_1", "d/d omega"), ours, reference):
        _assert_same(a, b, what)
    for array, copy in zip(setup[1:3], before):
        np.testing.assert_array_equal(array, copy)


def test_masks_as_tensors_read_no_list_back_and_the_flags_come_back():
    """Masks passed as tensors are new Warp views at every call: the step's split and gather run
    over the grid then (no list read back per call), whatever its flags, which it keeps after."""
    step, *arrays = _setup("D2Q9/BGK/FP64FP64/cavity", (8, 6))
    step.split_listed = step.gather_listed = True
    try:
        _torch_gradients(step, *arrays)
        assert not step._gathered and not step._listed
    finally:
        assert step.split_listed is True and step.gather_listed is True
        step.split_listed = step.gather_listed = None


def test_the_comparison_rejects_a_wrong_gradient():
    setup = _setup(*CASES[0])
    reference = _warp_gradients(*setup)
    wrong = reference[0].copy()
    wrong.flat[17] *= 1 + 1e-9  # one population's gradient off by a billionth
    with pytest.raises(AssertionError, match="d/d f_0"):
        _assert_same(wrong, reference[0], "d/d f_0")


def _gradcheck_inputs():
    step, f_0, f_1, bc_mask, missing_mask, _ = _setup("D2Q9/BGK/FP64FP64", (4, 3))
    x0, x1 = _tensor(f_0, bc_mask), _tensor(f_1, bc_mask)
    omega = torch.tensor([OMEGA], dtype=torch.float64, device=x0.device, requires_grad=True)
    return torch_step(step), (x0, x1, omega), bc_mask, missing_mask


def test_gradcheck_against_finite_differences():
    face, inputs, bc_mask, missing_mask = _gradcheck_inputs()

    def two_steps(f_0, f_1, omega):  # two steps, so that d/d f_1 is not trivially the zero it is for one
        a, b = face(f_0, f_1, bc_mask, missing_mask, omega, 0)
        return face(b, a, bc_mask, missing_mask, omega, 1)

    assert torch.autograd.gradcheck(two_steps, inputs, eps=1e-6, atol=1e-9, rtol=1e-6)


def test_gradcheck_rejects_a_wrong_gradient():
    face, inputs, bc_mask, missing_mask = _gradcheck_inputs()

    def wrong(f_0, f_1, omega):
        f_0, f_new = face(f_0, f_1, bc_mask, missing_mask, omega, 0)
        f_new.register_hook(lambda grad: None if grad is None else grad * 1.001)  # the backward sees a cotangent 0.1 % off
        return f_0, f_new

    assert not torch.autograd.gradcheck(wrong, inputs, eps=1e-6, atol=1e-9, rtol=1e-6, raise_exception=False)


def test_wrong_inputs_are_clear_errors():
    step, f_0, f_1, bc_mask, missing_mask, _ = _setup(*CASES[0])
    face = torch_step(step)
    with pytest.raises(RuntimeArgumentError, match="dtype"):
        face(_tensor(f_0, bc_mask).float(), _tensor(f_1, bc_mask).float(), bc_mask, missing_mask, OMEGA)
    with pytest.raises(RuntimeArgumentError, match="one element"):
        face(_tensor(f_0, bc_mask), _tensor(f_1, bc_mask), bc_mask, missing_mask, torch.ones(2, dtype=torch.float64))


def test_missing_torch_is_a_clear_error(monkeypatch):
    import sys

    step = _setup(*CASES[0])[0]
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if it were not installed
    with pytest.raises(RuntimeArgumentError, match=r"pip install 'adjointgen\[torch\]'"):
        torch_step(step)


def test_the_example_recovers_the_velocity():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "torch_inverse.py"
    spec = importlib.util.spec_from_file_location("torch_inverse", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    report = example.main(["--grid", "16", "--steps", "8", "--iterations", "30", "--lr", "5e-3"])
    assert report["final_loss"] < 1e-2 * report["first_loss"]
