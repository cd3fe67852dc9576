"""Lint output: one text block per finding (``file:line:col: rule: message``) or JSON."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import asdict

from . import LintResult
from .rules import RULES


def text(result: LintResult, explain: bool = True) -> str:
    lines = []
    for f in result.findings:
        certainty = "" if f.certainty == "certain" else f" ({f.certainty})"
        lines.append(f"{f.path}:{f.line}:{f.column}: {f.rule}{certainty}: {f.message} [in {f.function}]")
        if explain:
            for label, body in (("backward", f.backward), ("fix", f.fix)):
                if body:
                    lines.extend(textwrap.wrap(body, width=100, initial_indent=f"    {label}: ", subsequent_indent="      "))
    lines.append(summary(result))
    return "\n".join(lines)


def summary(result: LintResult) -> str:
    counts = Counter(f.rule for f in result.findings)
    per_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
    vs = result.velocity_set or "not given (velocity-set loops are 'unknown')"
    head = f"{len(result.findings)} finding(s)" + (f" ({per_rule})" if per_rule else "")
    return (f"{head}; {result.files} file(s), {result.functions} Warp function(s) checked, "
            f"{result.backward_disabled} with backward disabled (skipped), {len(result.suppressed)} suppressed; "
            f"velocity set: {vs}; max_unroll: {result.max_unroll}")


def as_json(result: LintResult) -> str:
    return json.dumps({
        "findings": [asdict(f) for f in result.findings],
        "suppressed": [asdict(f) for f in result.suppressed],
        "files": result.files,
        "functions_checked": result.functions,
        "backward_disabled": result.backward_disabled,
        "velocity_set": result.velocity_set,
        "max_unroll": result.max_unroll,
    }, indent=2)


def rules_text() -> str:
    lines = []
    for rule in RULES:
        lines.append(f"{rule.name}: {rule.summary}")
        lines.extend(textwrap.wrap(rule.backward, width=100, initial_indent="    backward: ", subsequent_indent="      "))
        lines.extend(textwrap.wrap(rule.fix, width=100, initial_indent="    fix: ", subsequent_indent="      "))
    return "\n".join(lines)
