"""``adjointgen lint``: find where Warp's automatic adjoint is silently wrong, before running it.

The pipeline, one stage per module: :mod:`.sources` (targets -> parsed files, their Warp
functions, settings and inline suppressions) -> :mod:`.facts` (constants, array/value kinds,
differentiable values per function) -> :mod:`.rules` (one class per hazard) -> :mod:`.report`
(text or JSON). Functions whose backward pass Warp never builds (``enable_backward=False`` on the
kernel or for the module, as in adjointgen's generated modules) are not Warp-tape hazards and are
counted, not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .facts import Facts
from .rules import RULE_NAMES, RULES, Context, Finding
from .sources import LintUsageError, collect, load

DEFAULT_MAX_UNROLL = 16  # Warp's default for wp.config.max_unroll


@dataclass
class LintResult:
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    files: int = 0
    functions: int = 0
    backward_disabled: int = 0
    velocity_set: str | None = None
    max_unroll: int = DEFAULT_MAX_UNROLL

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0


def lint(targets: list[str], velocity_set: str | None = None, max_unroll: int | None = None,
         select: list[str] | None = None) -> LintResult:
    """Check every Warp kernel and function under ``targets`` (files, directories, module names)."""
    if velocity_set is not None and not re.fullmatch(r"D\d+Q\d+", velocity_set):
        raise LintUsageError(f"--velocity-set {velocity_set!r}: write it like D3Q19")
    unknown = sorted(set(select or ()) - set(RULE_NAMES))
    if unknown:
        raise LintUsageError(f"unknown rule(s) {', '.join(unknown)}; the rules are: {', '.join(RULE_NAMES)}")
    rules = [rule for rule in RULES if not select or rule.name in select]
    limit = DEFAULT_MAX_UNROLL if max_unroll is None else max_unroll
    result = LintResult(velocity_set=velocity_set, max_unroll=limit)
    files = collect(targets)
    if not files:
        raise LintUsageError(f"no Python files under {', '.join(targets)}")
    for path in files:
        source = load(path)
        result.files += 1
        found: list[Finding] = []
        file_limit = source.settings.max_unroll if (max_unroll is None and source.settings.max_unroll) else limit
        for function in source.functions:
            if not (function.enable_backward and source.settings.enable_backward):
                result.backward_disabled += 1
                continue
            result.functions += 1
            ctx = Context(source, function, Facts(source, function, velocity_set), file_limit, source.settings.vector_overwrites)
            for rule in rules:
                if not rule.host:
                    found.extend(rule.check(ctx))
        if source.settings.enable_backward:
            host = Context(source, None, None, file_limit, source.settings.vector_overwrites)
            for rule in rules:
                if rule.host:
                    found.extend(rule.check(host))
        found.extend(_bad_suppressions(source))
        for finding in found:
            reason = _suppression_reason(source, finding)
            if reason:
                finding.suppressed = reason
                result.suppressed.append(finding)
            else:
                result.findings.append(finding)
    result.findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule))
    return result


def _suppression_reason(source, finding: Finding) -> str | None:
    for suppression in source.suppressions.get(finding.line, []):
        if finding.rule in suppression.rules and suppression.reason:
            return suppression.reason
    return None


def _bad_suppressions(source) -> list[Finding]:
    bad = []
    seen = set()
    for suppressions in source.suppressions.values():
        for s in suppressions:
            if id(s) in seen:
                continue
            seen.add(id(s))
            unknown = [r for r in s.rules if r not in RULE_NAMES]
            problem = None
            if not s.rules:
                problem = "names no rule"
            elif unknown:
                problem = f"names unknown rule(s) {', '.join(unknown)}"
            elif not s.reason:
                problem = "gives no reason"
            if problem:
                column = source.lines[s.line - 1].find("#") + 1
                bad.append(Finding(source.display, s.line, column, "bad-suppression", "<module>",
                                   f"this suppression {problem}; it silences nothing",
                                   "", "Write `# adjointgen: ignore[rule-name] why this is safe here`, with a rule from "
                                   "`adjointgen lint --list-rules`."))
    return bad


__all__ = ["lint", "LintResult", "Finding", "LintUsageError", "RULES", "RULE_NAMES"]
