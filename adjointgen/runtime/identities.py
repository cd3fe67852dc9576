"""Program identities without running the source passes again: their dependency records, kept in
the per-user cache.

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
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import warp as wp

from adjointgen.compiler.frontend import Functional, stepper_kernel
from adjointgen.compiler.passes.record import DependencyRecord, replay
from adjointgen.runtime.modules import cache_dir, generator_fingerprint, write_atomically

log = logging.getLogger("adjointgen")

KEPT = 16


def records_path(kernel: Functional) -> Path:
    key = hashlib.sha256("\0".join([generator_fingerprint(), wp.config.version, kernel.filename, str(kernel.first_line),
                                    kernel.source]).encode()).hexdigest()[:24]
    return cache_dir() / "identities" / f"{kernel.symbol}_{key}.json"


def read_records(path: Path) -> list[DependencyRecord]:
    """The records in ``path``; none if it is missing or is not a list of records."""
    try:
        data = json.loads(path.read_text())
        return [DependencyRecord.from_json(item) for item in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("adjointgen: %s is not a list of dependency records (%s); it is ignored", path, exc)
        return []


def recorded_identity(kernel: Functional, lifts: dict) -> str | None:
    """The identity of the first kept record that replays for ``kernel`` and ``lifts``, else None."""
    for record in read_records(records_path(kernel)):
        if replay(record, kernel, lifts):
            return record.identity
    return None


def remember(kernel: Functional, record: DependencyRecord) -> None:
    """Keep ``record`` first among ``kernel``'s records (at most :data:`KEPT`)."""
    path = records_path(kernel)
    records = [record] + [kept for kept in read_records(path) if kept != record]
    write_atomically(path, json.dumps([kept.to_json() for kept in records[:KEPT]], separators=(",", ":")))


def identity_of(stepper, lifts: dict):
    """``(identity, processed)`` for ``stepper`` with ``lifts``: ``processed`` is the passes'
    result (:class:`~adjointgen.compiler.pipeline.ProcessedFunctionals`) when they had to run,
    None when a kept record gave the identity."""
    from adjointgen.compiler.pipeline import process_functionals

    kernel = stepper_kernel(stepper)
    identity = recorded_identity(kernel, lifts)
    if identity is not None:
        return identity, None
    processed = process_functionals(kernel, lifts)
    remember(kernel, processed.record)
    return processed.record.identity, processed
