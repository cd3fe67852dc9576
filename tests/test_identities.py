"""Kept dependency records: the identity without the passes, and what happens to damaged files."""

import dataclasses

import pytest

from adjointgen.compiler.frontend import stepper_kernel
from adjointgen.config import Configuration
from adjointgen.runtime import identities
from adjointgen.runtime.step import load_module
from adjointgen.xlb.support import make_stepper

CONFIG = Configuration.parse("D2Q9/BGK/FP64FP64/cavity")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADJOINTGEN_CACHE_DIR", str(tmp_path))
    return tmp_path


def _stepper():
    return make_stepper(CONFIG, "warp", (6, 5))


@pytest.fixture(scope="module")
def record():
    from adjointgen.compiler.pipeline import process_functionals

    return process_functionals(stepper_kernel(_stepper())).record


def test_the_second_load_takes_the_identity_from_the_kept_record(cache):
    identity, processed = identities.identity_of(_stepper(), {})
    assert processed is not None and processed.record.identity == identity
    again, none = identities.identity_of(_stepper(), {})
    assert (again, none) == (identity, None)
    module = load_module(_stepper(), CONFIG)  # generated into the cache, served by the record's identity
    assert module.manifest.program_sha256 == identity


def test_a_damaged_records_file_is_ignored_and_replaced(cache):
    identity, _ = identities.identity_of(_stepper(), {})
    path = identities.records_path(stepper_kernel(_stepper()))
    path.write_text(path.read_text()[:-40])  # cut short
    assert identities.read_records(path) == []
    again, processed = identities.identity_of(_stepper(), {})
    assert again == identity and processed is not None  # the passes ran
    assert [record.identity for record in identities.read_records(path)] == [identity]


def test_a_record_that_does_not_replay_is_never_used(cache, record):
    kernel = stepper_kernel(_stepper())
    identities.remember(kernel, record)
    stale = dataclasses.replace(record, identity="f" * 64,
                                entries=record.entries[:-1] + (dataclasses.replace(record.entries[-1], code="1 + 1"),))
    identities.remember(kernel, stale)
    assert identities.read_records(identities.records_path(kernel))[0].identity == "f" * 64
    assert identities.recorded_identity(kernel, {}) == record.identity


def test_at_most_kept_records_per_kernel(cache, record):
    kernel = stepper_kernel(_stepper())
    for index in range(identities.KEPT + 3):
        identities.remember(kernel, dataclasses.replace(record, identity=f"{index:064x}"))
    kept = identities.read_records(identities.records_path(kernel))
    assert len(kept) == identities.KEPT and kept[0].identity == f"{identities.KEPT + 2:064x}"
