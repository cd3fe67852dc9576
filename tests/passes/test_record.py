"""The passes' dependency record: what it holds, that it replays for the same inputs, and that a
change the passes would see makes the replay fail."""

import dataclasses
import json
import types

import pytest
import warp as wp

from adjointgen.compiler import parameters
from adjointgen.compiler.frontend import stepper_kernel
from adjointgen.compiler.passes.base import Evaluation, Registration
from adjointgen.compiler.passes.record import DependencyRecord, replay
from adjointgen.compiler.passes.resolve import Resolve
from adjointgen.compiler.pipeline import process_functionals
from adjointgen.config import Configuration
from adjointgen.xlb import support
from tests.helpers import run

CAVITY = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")
SHAPE = (6, 5)


@wp.func
def helper(x: float):
    return x


def _stepper(config=CAVITY):
    return support.make_stepper(config, "warp", SHAPE)


def _processed(stepper, lifted: bool = False):
    return process_functionals(stepper_kernel(stepper), parameters.lifted_parameters(stepper) if lifted else {})


def _replays(record, stepper, lifted: bool = False) -> bool:
    return replay(record, stepper_kernel(stepper), parameters.lifted_parameters(stepper) if lifted else {})


@pytest.fixture(scope="module")
def cavity():
    return _processed(_stepper()).record


def test_the_context_records_evaluations_and_registrations():
    namespace = {"self": types.SimpleNamespace(q=9, fn=helper, dtype=wp.float64)}
    _, ctx = run(Resolve(), "def f(a):\n    n = self.q + a\n    return self.fn(self.dtype(n))\n", namespace)
    assert Evaluation("snippet", "self.q", ("self",), False, "literal 9") in ctx.record
    assert Evaluation("snippet", "self.dtype", ("self",), False, "scalar float64") in ctx.record
    assert Registration("snippet", "self.fn", "helper") in ctx.record
    assert not any(entry.code in ("a", "n", "self.q + a") for entry in ctx.record)  # locals: decided by the text


def test_a_record_replays_for_a_new_stepper_of_the_same_configuration(cavity):
    again = DependencyRecord.from_json(json.loads(json.dumps(cavity.to_json())))
    assert again == cavity
    assert _replays(again, _stepper())
    assert [stamp.symbol for stamp in cavity.stamps][0] == "IncompressibleNavierStokesStepper_kernel"
    assert any(isinstance(entry, Registration) for entry in cavity.entries)


def test_a_changed_lid_velocity_does_not_replay_unless_it_is_a_parameter(cavity, monkeypatch):
    lifted = _processed(_stepper(), lifted=True).record
    monkeypatch.setattr(support, "LID_VELOCITY", 0.07)
    moved = _stepper()
    assert not _replays(cavity, moved)
    assert _processed(moved).record.identity != cavity.identity  # the refusal was needed
    assert _replays(lifted, moved, lifted=True)  # the lid velocity is a kernel parameter there
    assert not _replays(lifted, moved)  # and a record with lifts is not one without


def test_a_record_of_one_precision_does_not_replay_for_the_other(cavity):
    fp32 = _stepper(CAVITY.with_precision("FP32FP32"))
    assert stepper_kernel(fp32).source == stepper_kernel(_stepper()).source  # one kernel text, other constants
    assert not _replays(cavity, fp32)


def _first(entries, kind):
    return next(i for i, entry in enumerate(entries) if isinstance(entry, kind) and
                (kind is Registration or entry.fingerprint.startswith("literal")))


@pytest.mark.parametrize("tamper", ["source", "evaluation", "registration", "lifts", "order"])
def test_replay_rejects_a_record_that_differs_in_anything_the_passes_read(cavity, tamper):
    entries = list(cavity.entries)
    if tamper == "source":
        stamp = cavity.stamps[-1]
        forged = dataclasses.replace(cavity, stamps=cavity.stamps[:-1] + (dataclasses.replace(stamp, sha256="0" * 64),))
    elif tamper == "evaluation":
        i = _first(entries, Evaluation)
        entries[i] = dataclasses.replace(entries[i], fingerprint="literal 12345")
        forged = dataclasses.replace(cavity, entries=tuple(entries))
    elif tamper == "registration":
        i = _first(entries, Registration)
        entries[i] = dataclasses.replace(entries[i], symbol=entries[i].symbol + "_2")
        forged = dataclasses.replace(cavity, entries=tuple(entries))
    elif tamper == "lifts":
        forged = dataclasses.replace(cavity, lifts=("x: _u -> bc1_u size 2",) + cavity.lifts)
    else:  # a function used before it is registered
        i = _first(entries, Registration)
        later = next(j for j in range(i + 1, len(entries)) if entries[j].functional == entries[i].symbol)
        entries.insert(i, entries.pop(later))
        forged = dataclasses.replace(cavity, entries=tuple(entries))
    assert forged != cavity
    assert not _replays(forged, _stepper())


def test_a_record_in_another_format_is_refused(cavity):
    data = cavity.to_json()
    data["format"] += 1
    with pytest.raises(ValueError, match="format"):
        DependencyRecord.from_json(data)
