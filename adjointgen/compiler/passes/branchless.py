"""Branchless: rewrite run-time branches and early returns into selects.

Guarantees, for what is left after folding:

- ``if c: <assignments> [else: <assignments>]`` becomes ``_cond_N = c``, each branch's
  assignments to fresh temporaries, then one ``x = wp.where(_cond_N, x_then, x_else)`` per
  variable or vector component assigned in either branch (``x = x_then``, and likewise for its
  components, for a variable first bound inside the branch: there is no earlier value to keep). Select semantics: the value of the
  branch not taken is computed but never mixed in arithmetically, so garbage or NaN there cannot
  leak into the result (or, later, into its gradient). Integer masks
  (``if mask[...]: m[l] = 1 else: m[l] = 0``) are the same rule.
- A top-level ``if c: return`` of a kernel becomes ``_exit_N = c`` and every later store into an
  array parameter ``a[idx] = v`` becomes ``a[idx] = wp.where(_exit_N, a[idx], v)``: the cell
  keeps what the array held. The exit variables are recorded in the pass context.
- In a function, top-level ``if c: return v`` statements (XLB's "first missing direction gives the
  normal" helpers, after unrolling) become ``_retcond_N = c`` and ``_retval_N = v`` where they
  stand, and the function returns ``wp.where(_retcond_1, _retval_1, wp.where(..., last))``: the
  first return whose condition holds wins, as in Warp. ``last`` is the final ``return`` or, when
  the function can fall off its end, the zero value of the return type (what Warp returns).
- Anything else that depends on a run-time condition (a loop, a call statement, a return nested
  deeper in a branch) is refused with its ``file:line``.

Idempotent: the result has no ``if`` statements.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from .base import NameAwareTransformer, PassContext, code, refuse, statement, tag_of, walk_statements

_EARLY_RETURN = m.If(body=m.IndentedBlock(body=[m.SimpleStatementLine(body=[m.Return(value=None)])]), orelse=None)
_VALUE_RETURN = m.If(body=m.IndentedBlock(body=[m.SimpleStatementLine(body=[m.Return(value=m.MatchIfTrue(lambda v: v is not None))])]),
                     orelse=None)
_ARRAY_ANNOTATION = m.Annotation(annotation=m.Call(func=m.Attribute(value=m.Name("wp"), attr=m.MatchIfTrue(lambda n: n.value.startswith("array")))))


def _key(target: cst.BaseExpression) -> str | None:
    """Variables and vector components with literal indices are what a branch may assign."""
    if isinstance(target, cst.Name):
        return target.value
    if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
        return code(target)
    return None


def _stem(target: cst.BaseExpression) -> str:
    """A readable stem for a branch temporary: ``x``, ``m_3`` for ``m[3]``, ``f_0_e`` for an array element."""
    if isinstance(target, cst.Name):
        return target.value
    first = target.slice[0].slice
    index = code(first.value) if isinstance(first, cst.Index) else ""
    name = target.value.value
    return f"{name}_{index}" if index.isdigit() and len(target.slice) == 1 else f"{name}_e"


class _Rename(NameAwareTransformer):
    """Replace reads of branch-assigned keys by the branch's temporaries."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def leave_Subscript(self, original, updated):
        # the original text: the vector's own name may have been renamed inside it already
        new = self.names.get(code(original)) or self.names.get(code(updated))
        return cst.Name(new) if new else updated

    def leave_Name(self, original, updated):
        new = self.names.get(updated.value)
        return cst.Name(new) if new and self.is_expression(original) else updated


class _BoundBefore(cst.CSTVisitor):
    """For every ``if``, the names bound before it in program order (parameters, earlier
    assignments, including those inside earlier branches, which the conversion makes
    unconditional)."""

    def __init__(self):
        self.bound: set[str] = set()
        self.before: dict[int, frozenset] = {}

    def visit_Param(self, node):
        self.bound.add(node.name.value)

    def visit_If(self, node):
        self.before[id(node)] = frozenset(self.bound)

    def visit_AssignTarget(self, node):
        if isinstance(node.target, cst.Name):
            self.bound.add(node.target.value)
        for element in m.findall(node.target, m.Name()) if isinstance(node.target, cst.Tuple) else ():
            self.bound.add(element.value)

    def visit_AugAssign(self, node):
        if isinstance(node.target, cst.Name):
            self.bound.add(node.target.value)


class _Branchless(cst.CSTTransformer):
    def __init__(self, ctx: PassContext):
        super().__init__()
        self.ctx = ctx
        self.elifs: set[int] = set()
        self.bound_before: dict[int, frozenset] = {}

    def visit_FunctionDef(self, node):
        bound = _BoundBefore()
        node.visit(bound)
        self.bound_before.update(bound.before)

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
                base = _stem(target)
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
        if m.matches(updated, _EARLY_RETURN) or m.matches(updated, _VALUE_RETURN):
            return updated  # handled at function level (a nested one is refused by the enclosing branch)
        return cst.FlattenSentinel(self._convert(updated, self.bound_before.get(id(original))))

    def _convert(self, node: cst.If, bound: frozenset | None) -> list:
        tag = tag_of(node)
        orelse = node.orelse
        if isinstance(orelse, cst.If):  # elif: an else holding the converted inner if
            orelse = cst.Else(body=cst.IndentedBlock(body=self._convert(orelse, bound)))
        cond = self.ctx.fresh("cond")
        out = [statement(f"{cond} = {code(node.test)}", tag)]
        then_stmts, then_names, then_order = self._branch(node.body, cond, "then", node)
        else_stmts, else_names, else_order = self._branch(orelse.body if orelse else None, cond, "else", node)
        out += then_stmts + else_stmts
        for key in then_order + [k for k in else_order if k not in then_names]:
            if bound is not None and key.split("[")[0] not in bound and key in then_names and key not in else_names:
                # first bound in this branch: no value to keep where it is not taken (a select
                # with the branch's own value; used only where the branch is)
                out.append(statement(f"{key} = {then_names[key]}", tag))
                continue
            out.append(statement(f"{key} = wp.where({cond}, {then_names.get(key, key)}, {else_names.get(key, key)})", tag))
        return out

    # ---- early returns
    def _conditional_returns(self, lines: list) -> list:
        """``if c: return v`` at the top level of a function -> one select-chain return."""
        if not any(m.matches(line, _VALUE_RETURN) for line in lines):
            return lines
        body, candidates = [], []
        for line in lines:
            if m.matches(line, _VALUE_RETURN):
                cond, value = self.ctx.fresh("retcond"), self.ctx.fresh("retval")
                returned = line.body.body[0].body[0].value
                body.append(statement(f"{cond} = {code(line.test)}", tag_of(line)))
                body.append(statement(f"{value} = {code(returned)}", tag_of(line)))
                candidates.append((cond, value, tag_of(line)))
            else:
                body.append(line)
        final = body[-1] if body and m.matches(body[-1], m.SimpleStatementLine(body=[m.Return()])) else None
        if final is not None and final.body[0].value is not None:
            body.pop()
            result, tag = code(final.body[0].value), tag_of(final)
        else:
            result, tag = f"type({candidates[-1][1]})()", candidates[-1][2]  # Warp returns zero on falling off
        for cond, value, _ in reversed(candidates):
            result = f"wp.where({cond}, {value}, {result})"
        body.append(statement(f"return {result}", tag))
        return body

    def leave_FunctionDef(self, original, updated: cst.FunctionDef):
        updated = updated.with_changes(body=updated.body.with_changes(body=self._conditional_returns(list(updated.body.body))))
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
            has_return = any(isinstance(s, cst.Return) for s in walk_statements([line]))
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
