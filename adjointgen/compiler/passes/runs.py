"""The source passes over one functional, and the reuse of an earlier result where the passes
would repeat it.

XLB builds one closure per operator instance, so one pipeline run meets the same text several
times (each boundary condition has its own equilibrium), and runs for other configurations meet
it again (every D3Q19 FP32 stepper streams with the same functional). A :class:`FunctionalRun`
holds the passes' result for one functional with everything it depended on: the source stamp,
how the functional is lifted, the condensed reads (:mod:`~adjointgen.compiler.passes.record`)
and the fresh names it took.

Guarantee of :func:`reuse`: it returns a run's result for ``ctx.functional`` only if the stamps
and the lifting are equal, every read replays with the same outcome in this functional's
namespace (with the functions registered so far), and the fresh names, renumbered from the
context's counter, clash with no name of the source. Then the passes would make the same
decisions in the same order, taking the same fresh names up to their numbers, so the result
is the earlier one with the names renumbered. A result kept between processes
(:class:`RunStore`) is one whose text parses back to the very tree the passes built.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import libcst as cst

from . import SOURCE_PASSES
from .base import PassContext, Registration
from .record import Stamp, condensed, entry_from_json, entry_json, lifted_lines, parameters_line, replays_in

_NUMBERED = re.compile(r"^(_\w+_)(\d+)$")


@dataclass(frozen=True)
class FunctionalRun:
    """The passes' result for one functional, and what it depended on."""

    stamp: Stamp  # of the functional (symbol left empty: the text, not the name, matters)
    lifted: tuple  # lifted_key: its lifted values and every kernel parameter name
    reads: tuple  # condensed Evaluation | Registration entries, in order
    code: str  # the module after the passes
    fresh: tuple  # the fresh names it took, in order (consecutive numbers)
    exit_guards: tuple  # the kernel's exit values (fresh names), else ()
    module: cst.Module | None = field(default=None, compare=False, repr=False)  # in memory only

    def tree(self) -> cst.Module:
        return self.module if self.module is not None else cst.parse_module(self.code)

    def to_json(self) -> dict:
        return {"stamp": dataclasses.asdict(self.stamp), "lifted": list(self.lifted),
                "reads": [entry_json(entry) for entry in self.reads], "code": self.code,
                "fresh": list(self.fresh), "exit_guards": list(self.exit_guards)}

    @staticmethod
    def from_json(data: dict) -> "FunctionalRun":
        return FunctionalRun(Stamp.from_json(data["stamp"]), tuple(data["lifted"]), tuple(entry_from_json(e) for e in data["reads"]),
                             str(data["code"]), tuple(data["fresh"]), tuple(data["exit_guards"]))


class RunStore:
    """Where runs are kept between :func:`~adjointgen.compiler.pipeline.process_functionals`
    calls. This one keeps none; the runtime's keeps them in the cache."""

    def candidates(self, stamp: Stamp, lifted: tuple) -> list[FunctionalRun]:
        return []

    def keep(self, run: FunctionalRun) -> None:
        return None


def lifted_key(ctx: PassContext) -> tuple:
    """How ``ctx.functional`` is lifted, and every kernel parameter name, as text."""
    return tuple(lifted_lines(ctx.lifted.values())) + (parameters_line(ctx.lifts),)


def run_passes(ctx: PassContext) -> FunctionalRun:
    """The passes over ``ctx.functional``, recorded."""
    start, first_fresh = len(ctx.record), len(ctx.fresh_names)
    module = cst.parse_module(ctx.functional.source)
    for pass_ in SOURCE_PASSES:
        module = pass_(module, ctx)
    return FunctionalRun(Stamp.of("", ctx.functional), lifted_key(ctx), condensed(ctx.record[start:]), module.code,
                         tuple(ctx.fresh_names[first_fresh:]), tuple(ctx.exit_guards), module)


def text_is_tree(run: FunctionalRun) -> bool:
    """True if the run's text parses back to the tree the passes built, up to formatting (then
    it may be kept: the later stages read the tree, the identity the text)."""
    return run.module is not None and same_structure(cst.parse_module(run.code), run.module)


# what only formats the text: commas, brackets, parentheses, whitespace, indentation
_FORMATTING = (cst.BaseParenthesizableWhitespace, cst.MaybeSentinel, cst.Comma, cst.LeftParen, cst.RightParen, cst.EmptyLine,
               cst.Newline, cst.Semicolon, cst.Colon, cst.AssignEqual, cst.Dot, cst.LeftSquareBracket,
               cst.RightSquareBracket, cst.LeftCurlyBrace, cst.RightCurlyBrace)
_FORMATTING_FIELDS = {"indent", "header", "footer", "encoding", "default_indent", "default_newline", "has_trailing_newline",
                      "whitespace", "newline", "lpar", "rpar"}


def same_structure(a, b) -> bool:
    """The same nodes with the same values (names, numbers, operators, comments), whatever the
    formatting (a pass builds lists and default commas where the parser builds tuples and
    explicit ones). Parenthesisation that changes the meaning shows as another structure."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = [x for x in a if not isinstance(x, _FORMATTING)], [y for y in b if not isinstance(y, _FORMATTING)]
        return len(a) == len(b) and all(same_structure(x, y) for x, y in zip(a, b))
    if isinstance(a, _FORMATTING) and isinstance(b, _FORMATTING):
        return True
    if type(a) is not type(b):
        return False
    if not isinstance(a, cst.CSTNode):
        return a == b
    return all(same_structure(getattr(a, name), getattr(b, name))
               for name in a.__dataclass_fields__ if name not in _FORMATTING_FIELDS)


def reuse(ctx: PassContext, candidates) -> FunctionalRun | None:
    """The result of the first of ``candidates`` that the passes would repeat for
    ``ctx.functional`` (see the module's guarantee), its reads recorded and its fresh names taken
    in ``ctx``; None if there is none."""
    stamp, lifted = Stamp.of("", ctx.functional), lifted_key(ctx)
    for run in candidates:
        if run.stamp != stamp or run.lifted != lifted or not replays_in(run.reads, ctx.functional, ctx.functions):
            continue
        renames = _renumbered(run.fresh, ctx.fresh_counter)
        if renames is None or _clashes(renames, ctx.functional.source):
            continue
        return _taken(ctx, run, renames)
    return None


def _renumbered(names: tuple, start: int) -> dict | None:
    renames = {}
    for offset, name in enumerate(names):
        match = _NUMBERED.match(name)
        if match is None:
            return None
        renames[name] = f"{match.group(1)}{start + offset}"
    return renames


def _clashes(renames: dict, source: str) -> bool:
    words = set(re.findall(r"\w+", source))
    return any(name in words for pair in renames.items() for name in pair)


class _Rename(cst.CSTTransformer):
    def __init__(self, renames: dict):
        super().__init__()
        self.renames = renames

    def leave_Name(self, original, updated):
        new = self.renames.get(updated.value)
        return updated.with_changes(value=new) if new is not None else updated


def _taken(ctx: PassContext, run: FunctionalRun, renames: dict) -> FunctionalRun:
    symbol = ctx.functional.symbol
    start = len(ctx.record)
    for entry in run.reads:
        if isinstance(entry, Registration):
            ctx.register_function(entry.value(ctx.namespace), entry.code)
        else:
            ctx.record.append(dataclasses.replace(entry, functional=symbol))
    taken = [renames[name] for name in run.fresh]
    ctx.fresh_counter += len(taken)
    ctx.fresh_names.extend(taken)
    ctx.temporaries.update(taken)
    ctx.exit_guards.extend(renames[name] for name in run.exit_guards)
    module = run.tree()
    if any(old != new for old, new in renames.items()):
        module = module.visit(_Rename(renames))
    return dataclasses.replace(run, reads=condensed(ctx.record[start:]), code=module.code,
                               fresh=tuple(renames.values()), exit_guards=tuple(ctx.exit_guards), module=module)
