"""Branchless: rewrite run-time branches and early returns into selects.

Guarantees, for what is left after folding:

- ``if c: <assignments> [else: <assignments>]`` becomes ``_cond_N = c``, each branch's
  assignments to fresh temporaries, then one ``x = wp.where(_cond_N, x_then, x_else)`` per
  variable or vector component assigned in either branch. Select semantics: the value of the
  branch not taken is computed but never mixed in arithmetically, so garbage or NaN there cannot
  leak into the result (or, later, into its gradient). Integer masks
  (``if mask[...]: m[l] = 1 else: m[l] = 0``) are the same rule.
- A top-level ``if c: return`` of a kernel becomes ``_exit_N = c`` and every later store into an
  array parameter ``a[idx] = v`` becomes ``a[idx] = wp.where(_exit_N, a[idx], v)``: the cell
  keeps what the array held. The exit variables are recorded in the pass context.
- Anything else that depends on a run-time condition (a loop, a call statement, a return inside
  a branch) is refused with its ``file:line``.

Idempotent: the result has no ``if`` statements.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from .base import NameAwareTransformer, PassContext, code, refuse, statement, tag_of

_EARLY_RETURN = m.If(body=m.IndentedBlock(body=[m.SimpleStatementLine(body=[m.Return(value=None)])]), orelse=None)
_ARRAY_ANNOTATION = m.Annotation(annotation=m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.MatchIfTrue(lambda n: n.value.startswith("array")))))


def _key(target: cst.BaseExpression) -> str | None:
    """Variables and vector components with literal indices are what a branch may assign."""
    if isinstance(target, cst.Name):
        return target.value
    if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
        return code(target)
    return None


class _Rename(NameAwareTransformer):
    """Replace reads of branch-assigned keys by the branch's temporaries."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def leave_Subscript(self, original, updated):
        new = self.names.get(code(updated))
        return cst.Name(new) if new else updated

    def leave_Name(self, original, updated):
        new = self.names.get(updated.value)
        return cst.Name(new) if new and self.is_expression(original) else updated


class _Branchless(cst.CSTTransformer):
    def __init__(self, ctx: PassContext):
        super().__init__()
        self.ctx = ctx
        self.elifs: set[int] = set()

    # ---- if/else -> selects
    def _branch(self, block, cond: str, label: str, node) -> tuple[list, dict[str, str], list[str]]:
        statements, names, order = [], {}, []
        for line in block.body if block is not None else ():
            if not isinstance(line, cst.SimpleStatementLine):
                refuse(self.ctx, line, f"a {type(line).__name__} statement inside a run-time branch",
                       "only assignments may depend on a run-time condition; compute both cases and select")
            for small in line.body:
                if isinstance(small, cst.Pass):
                    continue
                if isinstance(small, cst.Assign) and len(small.targets) == 1:
                    target, value = small.targets[0].target, small.value
                elif isinstance(small, cst.AugAssign):
                    target = small.target
                    op = code(small.operator).strip()[:-1]
                    value = cst.parse_expression(f"({code(target)}) {op} ({code(small.value)})")
                else:
                    refuse(self.ctx, line, f"`{code(small).strip()}` inside a run-time branch",
                           "only assignments may depend on a run-time condition; compute both cases and select")
                key = _key(target)
                if key is None:
                    refuse(self.ctx, line, f"assignment to `{code(target)}` inside a run-time branch",
                           "assign to a variable or a vector component with a constant index")
                value = value.visit(_Rename(names))
                if key in self.ctx.temporaries:  # a temporary of an inner (elif) conversion
                    statements.append(statement(f"{key} = {code(value)}", tag_of(line)))
                    continue
                base = key.replace("[", "_").replace("]", "").replace(",", "_").replace(" ", "").replace("-", "m")
                temp = self.ctx.fresh(f"{base}_{label}")
                statements.append(statement(f"{temp} = {code(value)}", tag_of(line)))
                if key not in names:
                    order.append(key)
                names[key] = temp
        return statements, names, order

    def visit_If(self, node):
        if isinstance(node.orelse, cst.If):
            self.elifs.add(id(node.orelse))

    def leave_If(self, original: cst.If, updated: cst.If):
        if id(original) in self.elifs:
            return updated  # converted by the `if` that owns it
        if m.matches(updated, _EARLY_RETURN):
            return updated  # handled at function level
        return cst.FlattenSentinel(self._convert(updated))

    def _convert(self, node: cst.If) -> list:
        tag = tag_of(node)
        orelse = node.orelse
        if isinstance(orelse, cst.If):  # elif: an else holding the converted inner if
            orelse = cst.Else(body=cst.IndentedBlock(body=self._convert(orelse)))
        cond = self.ctx.fresh("cond")
        out = [statement(f"{cond} = {code(node.test)}", tag)]
        then_stmts, then_names, then_order = self._branch(node.body, cond, "then", node)
        else_stmts, else_names, else_order = self._branch(orelse.body if orelse else None, cond, "else", node)
        out += then_stmts + else_stmts
        for key in then_order + [k for k in else_order if k not in then_names]:
            out.append(statement(f"{key} = wp.where({cond}, {then_names.get(key, key)}, {else_names.get(key, key)})", tag))
        return out

    # ---- early returns
    def leave_FunctionDef(self, original, updated: cst.FunctionDef):
        arrays = {p.name.value for p in updated.params.params if p.annotation is not None and m.matches(p.annotation, _ARRAY_ANNOTATION)}
        body, guard = [], None
        for line in updated.body.body:
            if m.matches(line, _EARLY_RETURN):
                exit_name = self.ctx.fresh("exit")
                test = code(line.test)
                expression = f"({guard}) or ({test})" if guard else test
                body.append(statement(f"{exit_name} = {expression}", tag_of(line)))
                self.ctx.exit_guards.append(exit_name)
                guard = exit_name
                continue
            if guard is not None:
                line = line.visit(_GuardStores(arrays, guard))
            body.append(line)
        for line in body:
            has_return = bool(m.findall(line, m.Return()))
            if has_return and (line is not body[-1] or not isinstance(line, cst.SimpleStatementLine)):
                refuse(self.ctx, line, "a return that is not the last statement",
                       "return once, at the end of the function")
        return updated.with_changes(body=updated.body.with_changes(body=body))


class _GuardStores(cst.CSTTransformer):
    def __init__(self, arrays: set[str], guard: str):
        super().__init__()
        self.arrays = arrays
        self.guard = guard

    def leave_Assign(self, original, updated: cst.Assign):
        if len(updated.targets) == 1:
            target = updated.targets[0].target
            if isinstance(target, cst.Subscript) and m.matches(target.value, m.Name()) and target.value.value in self.arrays:
                if m.matches(updated.value, m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.Name("where")),
                                                   args=[m.Arg(m.Name(self.guard)), m.DoNotCare(), m.DoNotCare()])):
                    return updated
                value = cst.parse_expression(f"wp.where({self.guard}, {code(target)}, {code(updated.value)})")
                return updated.with_changes(value=value)
        return updated


class Branchless:
    """Rewrite run-time branches and early returns into selects."""

    name = "branchless"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        return module.visit(_Branchless(ctx))
