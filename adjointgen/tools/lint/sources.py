"""Lint front end: which files to read, their Warp functions, module settings and suppressions.

Guarantees: a target is a file, a directory (every ``*.py`` below it, sorted, hidden folders and
``__pycache__`` skipped) or an importable module name, located with ``importlib`` *without
importing it* (so ``adjointgen lint xlb`` works although XLB 0.3.1 does not import on current
Warp). Each file is parsed with libcst, the parser of the generator's passes, keeping line and
column positions. A Warp function is a ``def`` decorated with ``kernel``/``func`` of the ``warp``
module under any of its import names; it keeps the chain of enclosing ``def`` s, which is where
its closure constants live.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from adjointgen.errors import AdjointgenError


class LintUsageError(AdjointgenError):
    """A lint target that is neither a path nor an importable module."""


_SUPPRESSION = re.compile(r"#\s*adjointgen:\s*ignore\[(?P<rules>[^\]]*)\](?P<reason>.*)$")


@dataclass
class Suppression:
    line: int
    rules: tuple[str, ...]
    reason: str


@dataclass
class ModuleSettings:
    """What the file itself sets for Warp's code generation."""

    enable_backward: bool = True
    max_unroll: int | None = None
    vector_overwrites: bool = False


@dataclass
class WarpFunction:
    node: cst.FunctionDef
    kind: str  # "kernel" or "func"
    enclosing: list = field(default_factory=list)  # outer FunctionDefs, innermost last
    enable_backward: bool = True

    @property
    def name(self) -> str:
        return ".".join([f.name.value for f in self.enclosing] + [self.node.name.value])


@dataclass
class SourceFile:
    path: Path
    display: str
    module: cst.Module
    positions: dict
    settings: ModuleSettings
    functions: list[WarpFunction]
    suppressions: dict[int, list[Suppression]]
    warp_names: set[str]
    lines: list[str]

    def position(self, node: cst.CSTNode) -> tuple[int, int]:
        start = self.positions[node].start
        return start.line, start.column + 1


def collect(targets: list[str]) -> list[Path]:
    """The ``*.py`` files named by ``targets`` (paths or module names), without duplicates."""
    files: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(_python_files(path))
        else:
            files.extend(_module_files(target))
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py")
                  if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(directory).parts[:-1]))


def _module_files(name: str) -> list[Path]:
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", name):
        raise LintUsageError(f"{name}: no such file or directory, and not a module name")
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)  # finds a top-level package without running it
    if spec is None:
        raise LintUsageError(f"{name}: no such file or directory, and no importable module {top!r}")
    if spec.submodule_search_locations:
        base = Path(list(spec.submodule_search_locations)[0])
    elif spec.origin and not rest:
        return [Path(spec.origin)]
    else:
        raise LintUsageError(f"{name}: module {top!r} is not a package with Python sources")
    candidate = base.joinpath(*rest)
    if candidate.is_dir():
        return _python_files(candidate)
    if candidate.with_suffix(".py").is_file():
        return [candidate.with_suffix(".py")]
    raise LintUsageError(f"{name}: no module {'.'.join(rest)!r} under {base}")


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load(path: Path) -> SourceFile:
    text = path.read_text(encoding="utf-8")
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise LintUsageError(f"{display_path(path)}:{exc.raw_line}:{exc.raw_column}: cannot parse: {exc.message}") from None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    warp_names = _warp_import_names(module)
    finder = _FunctionFinder(warp_names)
    module.visit(finder)
    lines = text.splitlines()
    return SourceFile(
        path=path,
        display=display_path(path),
        module=module,
        positions=positions,
        settings=_settings(module, warp_names),
        functions=finder.found,
        suppressions=_suppressions(lines),
        warp_names=warp_names,
        lines=lines,
    )


def _warp_import_names(module: cst.Module) -> set[str]:
    names = {"wp", "warp"}
    for node in _walk(module):
        if isinstance(node, cst.Import):
            for alias in node.names:
                if _dotted(alias.name) == "warp" and alias.asname is not None:
                    names.add(alias.asname.name.value)
    return names


def _walk(node: cst.CSTNode):
    yield node
    for child in node.children:
        yield from _walk(child)


def _dotted(node) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def _decorator_kind(decorator: cst.Decorator, warp_names: set[str]) -> tuple[str | None, bool]:
    """("kernel"/"func"/None, enable_backward) for one decorator."""
    return _warp_wrapper(decorator.decorator, warp_names)


def _warp_wrapper(expr, warp_names: set[str]) -> tuple[str | None, bool]:
    """("kernel"/"func"/None, enable_backward) for ``wp.kernel``, ``wp.kernel(...)`` and the like."""
    enable_backward = True
    if isinstance(expr, cst.Call):
        for arg in expr.args:
            if arg.keyword is not None and arg.keyword.value == "enable_backward" and isinstance(arg.value, cst.Name):
                enable_backward = arg.value.value != "False"
        expr = expr.func
    dotted = _dotted(expr) or ""
    base, _, attr = dotted.rpartition(".")
    if base in warp_names and attr in ("kernel", "func"):
        return attr, enable_backward
    return None, True


class _FunctionFinder(cst.CSTVisitor):
    """Warp functions: defs decorated with ``wp.kernel``/``wp.func`` (with or without arguments), and
    defs that a call in the same scope wraps, ``wp.kernel(enable_backward=False)(body)`` (kernel
    factories, as adjointgen's generated modules make their variants)."""

    def __init__(self, warp_names: set[str]):
        self.warp_names = warp_names
        self.stack: list[cst.FunctionDef] = []
        self.found: list[WarpFunction] = []
        self.defs: dict = {}  # (id of the enclosing def or None, name) -> (def, enclosing defs)

    def _scope(self):
        return id(self.stack[-1]) if self.stack else None

    def visit_FunctionDef(self, node: cst.FunctionDef):
        self.defs[(self._scope(), node.name.value)] = (node, list(self.stack))
        for decorator in node.decorators:
            kind, enable_backward = _decorator_kind(decorator, self.warp_names)
            if kind is not None:
                self.found.append(WarpFunction(node, kind, list(self.stack), enable_backward))
                break
        self.stack.append(node)

    def leave_FunctionDef(self, node: cst.FunctionDef):
        self.stack.pop()

    def visit_Call(self, node: cst.Call):
        if len(node.args) != 1 or not isinstance(node.args[0].value, cst.Name) or node.args[0].keyword is not None:
            return
        kind, enable_backward = _warp_wrapper(node.func, self.warp_names)
        wrapped = self.defs.get((self._scope(), node.args[0].value.value))
        if kind is not None and wrapped is not None and all(f.node is not wrapped[0] for f in self.found):
            self.found.append(WarpFunction(wrapped[0], kind, wrapped[1], enable_backward))


def _literal(node):
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    if isinstance(node, cst.Integer):
        return int(node.value)
    return None


def _settings(module: cst.Module, warp_names: set[str]) -> ModuleSettings:
    """Module-level ``set_module_options({...})`` and ``wp.config.<name> = <literal>``."""
    settings = ModuleSettings()
    constants = {}  # module-level NAME = <int literal>, for options given by name
    for statement in module.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
                    if _literal(small.value) is not None:
                        constants[small.targets[0].target.value] = _literal(small.value)

    def value_of(node):
        return constants.get(node.value) if isinstance(node, cst.Name) and node.value not in ("True", "False") else _literal(node)

    keys = {"enable_backward": "enable_backward", "max_unroll": "max_unroll",
            "enable_vector_component_overwrites": "vector_overwrites"}
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                call = small.value
                dotted = _dotted(call.func) or ""
                base, _, attr = dotted.rpartition(".")
                if base in warp_names and attr == "set_module_options" and call.args and isinstance(call.args[0].value, cst.Dict):
                    for element in call.args[0].value.elements:
                        if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString):
                            key = element.key.evaluated_value
                            value = value_of(element.value)
                            # Warp folds the global enable_vector_component_overwrites into every
                            # module's build options: as a module option it has no effect
                            if key in keys and value is not None and key != "enable_vector_component_overwrites":
                                setattr(settings, keys[key], value)
            elif isinstance(small, cst.Assign) and len(small.targets) == 1:
                dotted = _dotted(small.targets[0].target) or ""
                base, _, attr = dotted.rpartition(".")
                value = value_of(small.value)
                if base in {f"{name}.config" for name in warp_names} and attr in keys and value is not None:
                    setattr(settings, keys[attr], value)
    return settings


def _suppressions(lines: list[str]) -> dict[int, list[Suppression]]:
    """``# adjointgen: ignore[rule, ...] reason`` applies to its own line and, when the comment
    stands alone on its line, to the next line."""
    found: dict[int, list[Suppression]] = {}
    for number, line in enumerate(lines, start=1):
        match = _SUPPRESSION.search(line)
        if match is None:
            continue
        rules = tuple(r.strip() for r in match["rules"].split(",") if r.strip())
        reason = match["reason"].strip().lstrip("-:").strip()
        suppression = Suppression(number, rules, reason)
        found.setdefault(number, []).append(suppression)
        if line.strip().startswith("#"):
            found.setdefault(number + 1, []).append(suppression)
    return found
