"""Program identities without running the source passes again: their dependency records, kept in
the per-user cache; and the passes' results per functional, kept there for other steppers.

A stepper's program identity (what a generated module must carry to serve it) is a digest of
the source passes' result, and the passes take seconds for a 3D stepper with boundary
conditions, while replaying what they read takes milliseconds
(:mod:`adjointgen.compiler.passes.record`). :func:`identity_of` replays the records kept for the
stepper's kernel and runs the passes only when none holds; every run's record is kept.

Records live in ``<cache>/identities/``, one file per kernel source, adjointgen code and Warp
version (a record from other code is never read), holding the newest :data:`KEPT` records (one
per precision, boundary values, lifted or not, ...). A file that cannot be read as records is
ignored and replaced; a record that does not replay is skipped. Files are written whole under a
temporary name and renamed, like cached modules.

:class:`CachedRuns` keeps the passes' result per functional (``<cache>/functionals/``, one file
per functional text, lifting, adjointgen code and Warp version, newest :data:`KEPT` first), for
:func:`adjointgen.compiler.passes.runs.reuse` to take where the passes would repeat it: every
D3Q19 FP32 stepper streams with the same functional, whatever its boundary conditions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import warp as wp

from adjointgen.compiler.frontend import Functional, stepper_kernel
from adjointgen.compiler.passes.record import DependencyRecord, Stamp, replay
from adjointgen.compiler.passes.runs import FunctionalRun, RunStore, text_is_tree
from adjointgen.runtime.modules import cache_dir, generator_fingerprint, write_atomically

log = logging.getLogger("adjointgen")

KEPT = 16


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join([generator_fingerprint(), wp.config.version, *parts]).encode()).hexdigest()[:24]


def records_path(kernel: Functional) -> Path:
    return cache_dir() / "identities" / f"{kernel.symbol}_{_key(kernel.filename, str(kernel.first_line), kernel.source)}.json"


def _read(path: Path, from_json) -> list:
    """The items ``from_json`` makes of ``path``'s list; none if it is missing or is not such a list."""
    try:
        return [from_json(item) for item in json.loads(path.read_text())]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("adjointgen: %s is not a list of kept records (%s); it is ignored", path, exc)
        return []


def _keep_first(path: Path, item, from_json) -> None:
    items = [item] + [kept for kept in _read(path, from_json) if kept != item]
    write_atomically(path, json.dumps([kept.to_json() for kept in items[:KEPT]], separators=(",", ":")))


def read_records(path: Path) -> list[DependencyRecord]:
    """The records in ``path``; none if it is missing or is not a list of records."""
    return _read(path, DependencyRecord.from_json)


def recorded_identity(kernel: Functional, lifts: dict) -> str | None:
    """The identity of the first kept record that replays for ``kernel`` and ``lifts``, else None."""
    for record in read_records(records_path(kernel)):
        if replay(record, kernel, lifts):
            return record.identity
    return None


def remember(kernel: Functional, record: DependencyRecord) -> None:
    """Keep ``record`` first among ``kernel``'s records (at most :data:`KEPT`)."""
    _keep_first(records_path(kernel), record, DependencyRecord.from_json)


class CachedRuns(RunStore):
    """The passes' results per functional, kept in the cache (see the module docstring)."""

    @staticmethod
    def path(stamp: Stamp, lifted: tuple) -> Path:
        key = _key(stamp.filename, str(stamp.first_line), stamp.sha256, str(stamp.field), *lifted)
        return cache_dir() / "functionals" / f"{Path(stamp.filename).stem}_{stamp.first_line}_{key}.json"

    def candidates(self, stamp: Stamp, lifted: tuple) -> list[FunctionalRun]:
        return _read(self.path(stamp, lifted), FunctionalRun.from_json)

    def keep(self, run: FunctionalRun) -> None:
        if text_is_tree(run):  # else a later process could not rebuild the tree from the text
            _keep_first(self.path(run.stamp, run.lifted), run, FunctionalRun.from_json)


def identity_of(stepper, lifts: dict):
    """``(identity, processed)`` for ``stepper`` with ``lifts``: ``processed`` is the passes'
    result (:class:`~adjointgen.compiler.pipeline.ProcessedFunctionals`) when they had to run,
    None when a kept record gave the identity."""
    from adjointgen.compiler.pipeline import process_functionals

    kernel = stepper_kernel(stepper)
    identity = recorded_identity(kernel, lifts)
    if identity is not None:
        return identity, None
    processed = process_functionals(kernel, lifts, CachedRuns())
    remember(kernel, processed.record)
    return processed.record.identity, processed
