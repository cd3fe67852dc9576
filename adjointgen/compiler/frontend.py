"""Front end: the Warp functionals of a configured XLB stepper, as source plus namespace.

Guarantees: every :class:`Functional` carries the exact source text of the Python function that
Warp compiles (read from the installed package at build time, never copied into this project),
the file and line it starts at, a SHA-256 of that text, and the namespace Warp itself resolves
free names in: the function's closure cells first, then its module globals, then builtins.
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import textwrap
from dataclasses import dataclass, field

import warp as wp

from adjointgen.errors import UnsupportedConstruct


@dataclass
class Functional:
    symbol: str
    pyfunc: object
    source: str
    filename: str
    first_line: int
    namespace: dict = field(repr=False)
    is_kernel: bool = False
    warp_object: object = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def location(self) -> str:
        return f"{self.filename}:{self.first_line}"

    def source_line(self, line: int) -> str:
        """The text of absolute source line ``line`` of this functional's file."""
        lines = self.source.splitlines()
        index = line - self.first_line
        if 0 <= index < len(lines):
            return lines[index].strip()
        return ""


def _namespace_of(pyfunc) -> dict:
    namespace = dict(vars(builtins))
    namespace.update(pyfunc.__globals__)
    if pyfunc.__closure__:
        for name, cell in zip(pyfunc.__code__.co_freevars, pyfunc.__closure__):
            try:
                namespace[name] = cell.cell_contents
            except ValueError:  # an empty cell: the name is not bound yet
                pass
    return namespace


def symbol_for(pyfunc) -> str:
    """A readable, deterministic identifier for a Python function: the class that built it and
    its own name, e.g. ``Stream_functional`` or ``IncompressibleNavierStokesStepper_kernel``."""
    parts = [p for p in pyfunc.__qualname__.split(".") if p not in ("<locals>",) and not p.startswith("_construct")]
    return "_".join(parts)


def functional_from(obj) -> Functional:
    """Wrap a Warp ``Kernel`` or user ``Function`` (or a plain Python function)."""
    is_kernel = isinstance(obj, wp.Kernel)
    pyfunc = getattr(obj, "func", obj)
    if not inspect.isfunction(pyfunc):
        raise UnsupportedConstruct(
            repr(obj), "a callable that is not a Python function",
            "adjointgen differentiates Warp kernels and @wp.func functions written in Python",
        )
    try:
        lines, first_line = inspect.getsourcelines(pyfunc)
    except (OSError, TypeError) as exc:
        raise UnsupportedConstruct(
            f"{pyfunc.__module__}.{pyfunc.__qualname__}", "a function without readable source",
            f"adjointgen reads functionals from source files ({exc})",
        ) from None
    return Functional(
        symbol=symbol_for(pyfunc),
        pyfunc=pyfunc,
        source=textwrap.dedent("".join(lines)),
        filename=inspect.getsourcefile(pyfunc) or "<unknown>",
        first_line=first_line,
        namespace=_namespace_of(pyfunc),
        is_kernel=is_kernel,
        warp_object=obj,
    )


def is_user_function(value) -> bool:
    """True for a ``@wp.func`` written in Python (not a Warp builtin)."""
    return isinstance(value, wp.Function) and not value.is_builtin() and inspect.isfunction(getattr(value, "func", None))


def stepper_kernel(stepper) -> Functional:
    """The per-cell kernel of an XLB stepper: where the front end starts."""
    kernel = getattr(stepper, "warp_kernel", None)
    if not isinstance(kernel, wp.Kernel):
        raise UnsupportedConstruct(
            type(stepper).__name__, "a stepper without a Warp kernel",
            "build the stepper with compute_backend=ComputeBackend.WARP",
        )
    return functional_from(kernel)
