"""What the source passes read outside the source text, and a replay that says whether an earlier
run's result still holds.

The passes are a function of the functionals' source text and of what they read from the
functionals' namespaces. They read those namespaces only through
:meth:`~adjointgen.compiler.passes.base.PassContext.evaluate` (and ``evaluate_type``) and
:meth:`~adjointgen.compiler.passes.base.PassContext.register_function`, which append an
:class:`~adjointgen.compiler.passes.base.Evaluation` or a
:class:`~adjointgen.compiler.passes.base.Registration` to the run's record; besides, they read the
lifted boundary values (which closure names become kernel parameters).

Guarantees of :func:`replay`: it returns True only if, for the given kernel and lifts,

- every functional the run reached has the same source text, file and first line (and design
  field), under the same symbol, in the same order;
- every recorded evaluation gives a value with the same fingerprint, in the namespace the passes
  would evaluate it in (the functional's, with the symbols registered before it), and every
  registration gives the same symbol;
- the lifted values are the same closure names, parameter names and sizes.

Then a run of the passes would make the same decision at every step (by induction over the
steps: the same text and the same evaluation outcomes give the same rewrite), so its result, and
the program identity computed from it, equals the recorded run's. Anything else (a changed
constant, source, function, a name that no longer resolves) returns False, and the caller runs
the passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adjointgen.compiler.frontend import Functional
from adjointgen.errors import UnresolvedName
from adjointgen.xlb.fields import Field, field_of

from .base import Evaluation, NotStatic, NOT_STATIC, PassContext, Registration, namespace_with

FORMAT = 2  # of the JSON form: a record in another format is never replayed (2: stamps hold a field spec)


@dataclass(frozen=True)
class Stamp:
    """One functional a run reached: its symbol and what the passes read of it as text."""

    symbol: str
    sha256: str
    filename: str
    first_line: int
    field: Field | None  # the design field it reads (adjointgen.xlb.fields), if any

    @staticmethod
    def of(symbol: str, functional: Functional) -> "Stamp":
        return Stamp(symbol, functional.sha256, functional.filename, functional.first_line, field_of(functional.pyfunc))

    @staticmethod
    def from_json(data: dict) -> "Stamp":
        return Stamp(**{**data, "field": Field.from_json(data["field"])})


@dataclass(frozen=True)
class DependencyRecord:
    """One run of the passes: what it read, in order, and the program identity it produced."""

    stamps: tuple  # Stamp per functional, in processing order (the kernel first)
    entries: tuple  # Evaluation | Registration, in order, repeats dropped (see condensed)
    lifts: tuple  # lifts_description
    identity: str

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "identity": self.identity,
            "stamps": [asdict(stamp) for stamp in self.stamps],
            "entries": [entry_json(entry) for entry in self.entries],
            "lifts": list(self.lifts),
        }

    @staticmethod
    def from_json(data: dict) -> "DependencyRecord":
        """The record ``to_json`` wrote; raises ValueError (or KeyError, TypeError) for anything else."""
        if data.get("format") != FORMAT:
            raise ValueError(f"record format {data.get('format')!r}, not {FORMAT}")
        return DependencyRecord(
            stamps=tuple(Stamp.from_json(stamp) for stamp in data["stamps"]),
            entries=tuple(entry_from_json(entry) for entry in data["entries"]),
            lifts=tuple(str(line) for line in data["lifts"]),
            identity=str(data["identity"]),
        )


def entry_json(entry) -> dict:
    if isinstance(entry, Registration):
        return {"registration": asdict(entry)}
    return {"evaluation": {**asdict(entry), "names": list(entry.names)}}


def entry_from_json(data: dict):
    if "registration" in data:
        return Registration(**data["registration"])
    fields = data["evaluation"]
    return Evaluation(**{**fields, "names": tuple(fields["names"])})


def lifted_lines(entries) -> list[str]:
    """One functional's lifted values (parameters.Lifted) as text: closure name, parameter name, size."""
    return [f"{entry.closure} -> {entry.name} size {entry.size}" for entry in entries]


def parameters_line(lifts: dict) -> str:
    """Every lifted scalar parameter name (the passes leave those names alone everywhere)."""
    names = sorted({name for entries in lifts.values() for entry in entries for name in entry.scalar_names()})
    return f"parameters: {' '.join(names)}"


def lifts_description(functions: dict, lifts: dict) -> tuple:
    """The lifted values as text: per reached functional, its :func:`lifted_lines`; then
    :func:`parameters_line`."""
    lines = [f"{symbol}: {line}" for symbol, functional in functions.items()
             for line in lifted_lines(lifts.get(id(functional.pyfunc), []))]
    return tuple(lines) + (parameters_line(lifts),)


def condensed(entries: list) -> tuple:
    """``entries`` without repeats: an entry equal to an earlier one, with no new function
    registered in between, has the same outcome (same expression, same namespace)."""
    seen, out, registered = set(), [], set()
    for entry in entries:
        key = (entry, len(registered))
        if key in seen:
            continue
        seen.add(key)
        out.append(entry)
        if isinstance(entry, Registration):
            registered.add(entry.symbol)
    return tuple(out)


def replays_in(entries, functional: Functional, functions: dict) -> bool:
    """True if ``entries`` (recorded while the passes ran over another functional with the same
    text) give the same outcomes in ``functional``, with the functions in ``functions``
    registered; ``functions`` itself is left as it is."""
    scratch = dict(functions)
    registry = PassContext(functional, scratch)
    return all(_same_outcome(entry, functional, scratch, registry) for entry in entries)


def replay(record: DependencyRecord, kernel: Functional, lifts: dict) -> bool:
    """True if running the passes over ``kernel`` with ``lifts`` would give ``record``'s result
    (see the module's guarantees)."""
    functions = {kernel.symbol: kernel}
    registry = PassContext(kernel, functions)  # registers as the passes do (symbols, suffixes)
    for entry in record.entries:
        functional = functions.get(entry.functional)
        if functional is None or not _same_outcome(entry, functional, functions, registry):
            return False
    stamps = tuple(Stamp.of(symbol, functional) for symbol, functional in functions.items())
    return stamps == record.stamps and lifts_description(functions, lifts) == record.lifts


def _same_outcome(entry, functional: Functional, functions: dict, registry: PassContext) -> bool:
    namespace = namespace_with(functional, functions)
    if isinstance(entry, Registration):
        try:
            value = entry.value(namespace)
        except Exception:  # noqa: BLE001 - it evaluated when recorded: any failure is a change
            return False
        try:
            return registry.register_function(value, entry.code) == entry.symbol
        except Exception:  # noqa: BLE001 - no longer a function adjointgen reads: a change
            return False
    try:
        outcome = entry.describe(entry.value(namespace))
    except NotStatic:
        outcome = NOT_STATIC
    except UnresolvedName:
        return False  # the passes would stop with an error here: let them
    return outcome == entry.fingerprint
