"""The lint rules: places where Warp's automatic adjoint is silently wrong (or silently zero).

Each rule names the hazard, says what goes wrong in the backward pass and how to fix it, and
yields :class:`Finding` s for one Warp function (or, for the host rule, one file). The rules are
grounded in measured behaviour: ``tests/lint/test_tape_grounding.py`` runs Warp's tape on the
snippets the rules flag and shows the gradient is wrong there and right on the fixed version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from .facts import FLOAT_CASTS, INT_CASTS, ROUNDING, Facts, call_name, code, subscript_base, walk
from .sources import SourceFile, WarpFunction, _dotted


@dataclass
class Finding:
    path: str
    line: int
    column: int
    rule: str
    function: str
    message: str
    backward: str
    fix: str
    certainty: str = "certain"  # "certain", "likely" (a type the lint could not see) or "unknown"
    details: dict = field(default_factory=dict)
    suppressed: str | None = None  # the reason, when an inline comment silences it


@dataclass
class Context:
    source: SourceFile
    function: WarpFunction | None
    facts: Facts | None
    max_unroll: int
    vector_overwrites: bool

    def finding(self, rule: "Rule", node: cst.CSTNode, message: str, **extra) -> Finding:
        line, column = self.source.position(node)
        name = self.function.name if self.function else extra.pop("function", "<module>")
        return Finding(self.source.display, line, column, rule.name, name, message, rule.backward, rule.fix, **extra)


class Rule:
    name = ""
    summary = ""
    backward = ""
    fix = ""
    host = False  # True: checks host code (tape usage) instead of Warp functions

    def check(self, ctx: Context):
        raise NotImplementedError


def _line(ctx: Context, node) -> int:
    return ctx.source.position(node)[0]


def _store_targets(body) -> list[tuple[cst.CSTNode, cst.BaseExpression, cst.CSTNode]]:
    """(statement, target, value-or-None) for every assignment target below ``body``."""
    found = []
    for node in walk(body):
        if isinstance(node, cst.Assign):
            found.extend((node, t.target, node.value) for t in node.targets)
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
            found.append((node, node.target, node.value))
    return found


class DynamicLoop(Rule):
    name = "dynamic-loop"
    summary = "a loop Warp does not unroll that carries values from one iteration to the next"
    backward = ("Warp runs a loop it does not unroll (more iterations than max_unroll, a run-time "
                "bound, a break, or a while) as a dynamic loop and keeps only the last value of each variable "
                "it reassigns; the backward pass replays every iteration with those last values, so gradients "
                "through the reassigned variables are wrong, without a warning.")
    fix = ("Raise the unroll limit for the module before it builds (wp.set_module_options({'max_unroll': N}) "
           "with N >= the trip count), wrap the bound in wp.static(...) so Warp unrolls it, accumulate into "
           "a fresh variable per iteration, or generate an explicit adjoint (adjointgen build).")

    def check(self, ctx: Context):
        first_bound = _first_binding_lines(ctx)
        for node in walk(ctx.function.node.body):
            if isinstance(node, cst.For):
                status = self._status(ctx, node)
            elif isinstance(node, cst.While):
                status = ("dynamic", "runtime", "a while loop")
            else:
                continue
            if status is None:
                continue
            verdict, trip, why = status
            carried = self._carried(ctx, node, first_bound)
            if not carried:
                continue
            names = ", ".join(sorted(carried))
            if verdict == "unknown":
                message = f"loop trip count unknown ({why}); if Warp does not unroll it, the values it reassigns ({names}) get wrong gradients"
                yield ctx.finding(self, node, message, certainty="unknown", details={"trip_count": "unknown", "reassigned": sorted(carried)})
            else:
                message = f"{why}: dynamic loop that reassigns {names}"
                yield ctx.finding(self, node, message, details={"trip_count": trip, "reassigned": sorted(carried)})

    def _status(self, ctx: Context, loop: cst.For):
        """None when Warp unrolls the loop, else (verdict, trip count, why)."""
        call = loop.iter
        if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and call.func.value == "range" and 1 <= len(call.args) <= 3):
            return None
        values = [ctx.facts.integer(arg.value) for arg in call.args]
        range_text = code(call)
        has_static = any(isinstance(n, cst.Call) and call_name(n, ctx.source.warp_names) == "static" for n in walk(loop))
        if has_static and all(v.status == "const" or _is_static(ctx, a.value) for v, a in zip(values, call.args)):
            return None  # Warp unrolls constant loops with wp.static inside, whatever their length
        for value in values:
            if value.status == "runtime":
                return ("dynamic", "runtime", f"{range_text} has a run-time bound ({value.why})")
        for value in values:
            if value.status == "unknown":
                return ("unknown", "unknown", f"{range_text}: {value.why}")
        trip = len(range(*(v.value for v in values)))
        if trip > ctx.max_unroll:
            return ("dynamic", trip, f"{range_text} runs {trip} times, more than max_unroll={ctx.max_unroll}")
        if _has_break(loop.body):
            return ("dynamic", trip, f"{range_text} contains a break")
        return None

    def _carried(self, ctx: Context, loop, first_bound: dict) -> set[str]:
        loop_line = _line(ctx, loop)
        own = set(_names_of(loop.target)) if isinstance(loop, cst.For) else set()
        carried = set()
        for _, target, _ in _store_targets(loop.body):
            if isinstance(target, cst.Name):
                name = target.value
            elif isinstance(target, (cst.Subscript, cst.Attribute)) and isinstance(target.value, cst.Name):
                name = target.value.value
                if ctx.facts.kind(name) == "array":
                    continue  # array stores are not loop-carried values
            else:
                continue
            if name not in own and first_bound.get(name, loop_line) < loop_line:
                carried.add(name)
        return {name for name in carried if not _only_accumulated(loop.body, name, carried)}


def _only_accumulated(body, name: str, carried: set[str]) -> bool:
    """True when the loop only adds to ``name`` (``name += e``, ``name = name + e``, ``-`` alike)
    with ``e`` free of carried values, and reads it nowhere else: the adjoint of a sum needs no
    intermediate values, so Warp's dynamic loop differentiates it correctly (measured)."""
    expected_occurrences = 0
    for node in walk(body):
        if isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Name) and node.target.value == name:
            if not isinstance(node.operator, (cst.AddAssign, cst.SubtractAssign)) or _mentions(node.value, carried):
                return False
            expected_occurrences += 1
        elif isinstance(node, cst.Assign) and any(isinstance(t.target, cst.Name) and t.target.value == name for t in node.targets):
            value = node.value
            if not (len(node.targets) == 1 and isinstance(value, cst.BinaryOperation)
                    and isinstance(value.operator, (cst.Add, cst.Subtract))
                    and isinstance(value.left, cst.Name) and value.left.value == name and not _mentions(value.right, carried)):
                return False
            expected_occurrences += 2
    # any other occurrence of the name in the loop reads an intermediate value
    return expected_occurrences == sum(1 for n in walk(body) if isinstance(n, cst.Name) and n.value == name)


def _mentions(node, names: set[str]) -> bool:
    return any(isinstance(n, cst.Name) and n.value in names for n in walk(node))


def _is_static(ctx: Context, node) -> bool:
    """``wp.static(...)``: Warp evaluates it when it builds the module (or fails to build)."""
    return isinstance(node, cst.Call) and call_name(node, ctx.source.warp_names) == "static"


def _has_break(body) -> bool:
    for node in walk(body):
        if isinstance(node, (cst.For, cst.While)):
            continue
        if isinstance(node, cst.Break):
            return True
    return False


def _names_of(target) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for e in target.elements for n in _names_of(e.value)]
    return []


def _first_binding_lines(ctx: Context) -> dict[str, int]:
    """Line of the first binding of each name in the function; parameters bind at line 0."""
    lines = {param.name.value: 0 for param in ctx.function.node.params.params}
    for statement, target, _ in _store_targets(ctx.function.node.body):
        for name in _names_of(target):
            lines.setdefault(name, _line(ctx, statement))
    for node in walk(ctx.function.node.body):
        if isinstance(node, cst.For):
            for name in _names_of(node.target):
                lines.setdefault(name, _line(ctx, node))
    return lines


class VectorComponentWrite(Rule):
    name = "vector-component-write"
    summary = "a component of a local vector or matrix overwritten in place after it was read"
    backward = ("Without enable_vector_component_overwrites, Warp updates the vector in place; the "
                "backward pass reads the vector as it is after the last write, so partials that needed the "
                "overwritten component use the new value and the gradient is wrong, without a warning.")
    fix = ("Build a new vector instead of writing a component (e.g. with wp.where per component), or set "
           "wp.config.enable_vector_component_overwrites = True before any module is built (a global switch: "
           "Warp 1.19 ignores it as a module option; clear the kernel cache if kernels were built without it), "
           "or generate an explicit adjoint (adjointgen build).")

    def check(self, ctx: Context):
        if ctx.vector_overwrites:
            return
        body = ctx.function.node.body
        for statement, target, value in _store_targets(body):
            if isinstance(target, cst.Subscript):
                base = subscript_base(target)
            elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.attr.value in "xyzw":
                base = target.value.value
            else:
                continue
            kind = ctx.facts.kind(base)
            if base is None or kind == "array" or self._integer_vector(ctx, base) or self._initialises(ctx, body, statement, base, value):
                continue
            if kind == "value":
                yield ctx.finding(self, target, f"{code(target)} overwrites a component of the local value {base} in place "
                                                "(read earlier, or an alias)")
            else:
                yield ctx.finding(self, target, f"{code(target)} overwrites a component of {base}, typed Any and indexed like a vector",
                                  certainty="likely")

    @staticmethod
    def _integer_vector(ctx: Context, base: str) -> bool:
        """An integer vector (``wp.vec3i()``), or a vector only ever used as array indices or in
        comparisons (XLB's ``pull_index``): nothing flows back through it."""
        body = ctx.function.node.body
        bindings = [node.value for node in walk(body) if isinstance(node, cst.Assign)
                    and any(isinstance(t.target, cst.Name) and t.target.value == base for t in node.targets)]
        if (len(bindings) == 1 and isinstance(bindings[0], cst.Call)
                and re.fullmatch(r"vec\d(i|ui|s|us|b|ub|l|ul)", call_name(bindings[0], ctx.source.warp_names) or "")):
            return True
        harmless = set()
        for node in walk(body):
            if isinstance(node, cst.Subscript) and subscript_base(node) != base:
                harmless.update(id(n) for element in node.slice for n in walk(element) if isinstance(n, cst.Name))
            elif isinstance(node, cst.Comparison):
                harmless.update(id(n) for n in walk(node) if isinstance(n, cst.Name))
        store_bases = {id(t.value) for _, t, _ in _store_targets(body) if isinstance(t, cst.Subscript)}
        binding_names = {id(t.target) for node in walk(body) if isinstance(node, cst.Assign) for t in node.targets}
        loads = [n for n in walk(body) if isinstance(n, cst.Name) and n.value == base
                 and id(n) not in store_bases and id(n) not in binding_names]
        return bool(loads) and all(id(n) in harmless for n in loads)

    @staticmethod
    def _initialises(ctx: Context, body, statement, base: str, value) -> bool:
        """A write that fills a freshly built local vector before anything read it is harmless
        (the tape never needs the old component): ``v = vec_t()`` then ``v[l] = ...``. A write
        after a read, inside a loop that reads the vector, into an alias of another value, or
        as ``+=`` is not."""
        if value is not None and _mentions(value, {base}):
            return False
        if isinstance(statement, cst.AugAssign):
            # adding to a component needs no old value in the backward pass (measured right)
            return isinstance(statement.operator, (cst.AddAssign, cst.SubtractAssign))
        bindings = [node.value for node in walk(body) if isinstance(node, cst.Assign)
                    and any(isinstance(t.target, cst.Name) and t.target.value == base for t in node.targets)]
        if len(bindings) != 1 or isinstance(bindings[0], cst.Name) or base in {p.name.value for p in ctx.function.node.params.params}:
            return False
        line = _line(ctx, statement)
        loops = [node for node in walk(body) if isinstance(node, (cst.For, cst.While)) and any(n is statement for n in walk(node.body))]
        store_bases = {id(t.value) for _, t, _ in _store_targets(body) if isinstance(t, (cst.Subscript, cst.Attribute))}
        binding_names = {id(t.target) for node in walk(body) if isinstance(node, cst.Assign) for t in node.targets}
        for node in walk(body):
            if isinstance(node, cst.Name) and node.value == base and id(node) not in store_bases and id(node) not in binding_names:
                if _line(ctx, node) < line or any(any(n is node for n in walk(loop.body)) for loop in loops):
                    return False
        return True


class ArrayReadWrite(Rule):
    name = "array-read-write"
    summary = "an array read and overwritten by the same kernel or function"
    backward = ("The backward pass runs after the launch and reads the array's current contents, which the "
                "forward already overwrote; and the adjoint of the stored value is not cleared before the read's "
                "adjoint is added to the same element, so gradients are wrong, without a warning.")
    fix = ("Write the result to a separate output array (ping-pong with one array per recorded step), or "
           "keep this launch off the tape and record an explicit adjoint (wp.Tape.record_func), as "
           "adjointgen's generated modules do. wp.config.verify_autograd_array_access reports it at run time.")

    def check(self, ctx: Context):
        effects = ctx.facts.array_effects()
        for name, store in effects.stores.items():
            if name in effects.reads:
                read = effects.reads[name]
                read_line = _line(ctx, read)
                via = "" if isinstance(store, cst.Subscript) else f" (through the call {code(store.func)}(...))"
                yield ctx.finding(self, store, f"{name} is stored here{via} and read at line {read_line} of the same {ctx.function.kind}",
                                  details={"array": name, "read_line": read_line})


class ArrayAugmentedAssign(Rule):
    name = "array-augmented-assign"
    summary = "*=, /= (or another non-additive operator) applied to an array element"
    backward = ("Only += and -= on arrays become differentiable atomics; other augmented assignments read "
                "and overwrite the element, and the backward pass sees the overwritten value: the gradient is "
                "wrong, without a warning.")
    fix = "Compute into a separate output array: out[i] = a[i] * x (or write a fresh value with plain =)."

    def check(self, ctx: Context):
        for node in walk(ctx.function.node.body):
            if (isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Subscript)
                    and ctx.facts.kind(subscript_base(node.target)) == "array"
                    and not isinstance(node.operator, (cst.AddAssign, cst.SubtractAssign))):
                yield ctx.finding(self, node, f"{code(node.target)} {code(node.operator).strip()} on an array element")


class EarlyReturn(Rule):
    name = "early-return"
    summary = "a return that lets some threads skip array writes"
    backward = ("Elements a returning thread does not write keep what the array held before the launch. "
                "The backward pass leaves their adjoint in place, so it flows to whichever launch wrote that "
                "buffer earlier: right only if those values survived, wrong when buffers are swapped or reused "
                "between steps (XLB's f_0/f_1 ping-pong); and nothing flows to this launch's inputs there.")
    fix = ("Write every output on every path (copy the input through for skipped cells) or select the "
           "result with wp.where so that all threads store; if skipping is intended, say why with an "
           "inline suppression.")

    def check(self, ctx: Context):
        stores = [(_line(ctx, target), subscript_base(target))
                  for statement, target, _ in _store_targets(ctx.function.node.body)
                  if isinstance(target, cst.Subscript) and ctx.facts.kind(subscript_base(target)) == "array"]
        for node in walk(ctx.function.node.body):
            if isinstance(node, cst.If):
                for inner in walk(node.body):
                    if isinstance(inner, cst.Return):
                        line = _line(ctx, inner)
                        skipped = sorted({name for store_line, name in stores if store_line > line})
                        if skipped:
                            yield ctx.finding(self, inner, f"threads returning here skip the writes to {', '.join(skipped)}",
                                              details={"skipped": skipped})


class IntegerCast(Rule):
    name = "integer-cast"
    summary = "a differentiable value cast to an integer or rounded"
    backward = "Integer casts and rounding have zero derivative: no gradient flows through this value."
    fix = ("If the value only selects an index or a branch, this is expected: silence the finding with a "
           "reason. If a gradient is wanted, keep the value floating point (or interpolate between the two "
           "neighbouring integers).")

    def check(self, ctx: Context):
        for node in walk(ctx.function.node.body):
            if isinstance(node, cst.Call) and node.args:
                name = call_name(node, ctx.source.warp_names)
                if (name in INT_CASTS or name in ROUNDING) and ctx.facts.is_differentiable(node.args[0].value):
                    yield ctx.finding(self, node, f"{code(node)} of the differentiable value {code(node.args[0].value)}")


class ComparisonCast(Rule):
    name = "comparison-cast"
    summary = "a comparison of a differentiable value used as a number (a 0/1 mask)"
    backward = ("A comparison has zero derivative: a 0/1 mask built from it passes no gradient to the "
                "compared value, and multiplying by the mask turns NaN or Inf in the unselected branch into "
                "NaN gradients.")
    fix = "Use wp.where(condition, a, b) to select between values; keep the comparison out of arithmetic."

    def check(self, ctx: Context):
        for node in walk(ctx.function.node.body):
            comparisons = []
            if isinstance(node, cst.Call) and call_name(node, ctx.source.warp_names) in FLOAT_CASTS and node.args:
                comparisons = [node.args[0].value]
            elif isinstance(node, cst.BinaryOperation):
                comparisons = [node.left, node.right]
            for comparison in comparisons:
                while isinstance(comparison, cst.Call) and call_name(comparison, ctx.source.warp_names) in FLOAT_CASTS and comparison.args:
                    comparison = comparison.args[0].value
                if isinstance(comparison, cst.Comparison) and (
                        ctx.facts.is_differentiable(comparison.left)
                        or any(ctx.facts.is_differentiable(t.comparator) for t in comparison.comparisons)):
                    yield ctx.finding(self, comparison, f"{code(comparison)} used as a number")


class TapeBufferReuse(Rule):
    name = "tape-buffer-reuse"
    summary = "an array overwritten while a wp.Tape records (buffer swaps, repeated outputs)"
    host = True
    backward = ("The tape keeps references, not copies: its backward pass runs every recorded launch on the "
                "arrays as they are at backward() time, so a launch whose inputs were overwritten later is "
                "differentiated at the wrong state, and adjoints of reused outputs add up. Wrong, without a warning.")
    fix = ("Allocate one state array per recorded step, or use adjointgen's differentiable step (it saves "
           "its input while recording) or adjointgen.checkpointed_rollout for long rollouts.")

    def check(self, ctx: Context):
        tapes = {target.target.value for node in walk(ctx.source.module, into_functions=True)
                 if isinstance(node, cst.Assign) and _is_tape(node.value)
                 for target in node.targets if isinstance(target.target, cst.Name)}
        for with_node in walk(ctx.source.module, into_functions=True):
            if not (isinstance(with_node, cst.With) and any(
                    _is_tape(item.item) or (isinstance(item.item, cst.Name) and item.item.value in tapes)
                    for item in with_node.items)):
                continue
            function = _enclosing_function_name(ctx.source.module, with_node)
            yield from self._swaps(ctx, with_node, function)
            yield from self._launches(ctx, with_node, function)

    def _swaps(self, ctx, with_node, function):
        for loop in walk(with_node.body):
            if not isinstance(loop, (cst.For, cst.While)):
                continue
            for node in walk(loop.body):
                if (isinstance(node, cst.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0].target, cst.Tuple) and isinstance(node.value, cst.Tuple)):
                    left = [code(e.value) for e in node.targets[0].target.elements]
                    right = [code(e.value) for e in node.value.elements]
                    if sorted(left) == sorted(right) and left != right:
                        yield ctx.finding(self, node, f"buffers {', '.join(left)} are swapped in a loop under a wp.Tape",
                                          function=function)

    def _launches(self, ctx, with_node, function):
        used: dict[str, int] = {}
        for node in walk(with_node.body):
            if not (isinstance(node, cst.Call) and call_name(node, ctx.source.warp_names) == "launch"):
                continue
            inputs = _keyword_names(node, "inputs")
            outputs = _keyword_names(node, "outputs")
            line = _line(ctx, node)
            in_loop = _inside_loop(with_node.body, node)
            for name in outputs:
                if name in used:
                    yield ctx.finding(self, node, f"{name} is an output here and was used by the launch at line {used[name]}",
                                      function=function)
                elif in_loop:
                    yield ctx.finding(self, node, f"{name} is an output of a launch in a loop: each iteration overwrites it",
                                      function=function)
            for name in inputs + outputs:
                used.setdefault(name, line)


def _is_tape(node) -> bool:
    return isinstance(node, cst.Call) and (_dotted(node.func) or "").split(".")[-1] == "Tape"


def _keyword_names(call: cst.Call, keyword: str) -> list[str]:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword and isinstance(arg.value, (cst.List, cst.Tuple)):
            return [e.value.value for e in arg.value.elements if isinstance(e.value, cst.Name)]
    return []


def _inside_loop(body, target) -> bool:
    for node in walk(body):
        if isinstance(node, (cst.For, cst.While)) and any(n is target for n in walk(node.body)):
            return True
    return False


def _enclosing_function_name(module, target) -> str:
    best = "<module>"
    for node in walk(module, into_functions=True):
        if isinstance(node, cst.FunctionDef) and any(n is target for n in walk(node.body, into_functions=True)):
            best = node.name.value
    return best


RULES: tuple[Rule, ...] = (
    DynamicLoop(), VectorComponentWrite(), ArrayReadWrite(), ArrayAugmentedAssign(), EarlyReturn(),
    IntegerCast(), ComparisonCast(), TapeBufferReuse(),
)
RULE_NAMES = tuple(rule.name for rule in RULES)
