"""Names that appear in generated code, in one place: :class:`Namer` builds every name the
generated kernels introduce besides the program's own variables.

Guarantees: the same request (a kind of name and what it names) always gets the same name;
a name requested for two different things, or equal to a variable of the per-cell program (a
statement target, a kernel parameter, a thread index), raises :class:`NameCollision` instead of
generating code in which one silently shadows the other. Numbered names (``old_N``,
``moved_N``, ``<id>_reader_N``) count per kind, from 0, in the order they are first requested.
"""

from __future__ import annotations

from adjointgen.errors import AdjointgenError

AXIS_SIZES = ("nx", "ny", "nz")


class NameCollision(AdjointgenError):
    """Two different things in one generated module would get the same name."""


class Namer:
    """The owner of a generated module's names (one per module; reverse mode and the kernel plans
    ask it for theirs)."""

    def __init__(self, program_names=()):
        self._owner: dict = {name: ("program variable", name) for name in program_names}
        self._names: dict = {}  # (kind, subject) -> name
        self._counts: dict = {}  # kind -> numbered names given so far

    @classmethod
    def for_program(cls, program) -> "Namer":
        """A namer that refuses every name the per-cell program already uses."""
        names = set(program.dtypes) | {p.name for p in program.params} | {t.name for t in program.thread}
        return cls(names | set(program.shapes))

    def _claim(self, kind: str, subject, name: str) -> str:
        key = (kind, subject)
        if key in self._names:
            return self._names[key]
        owner = self._owner.get(name)
        if owner is not None:
            raise NameCollision(f"generated name {name!r} for the {kind} of {subject!r} is already the {owner[0]} "
                                f"{owner[1]!r}; rename that variable in the source, or change the scheme in "
                                "adjointgen/compiler/naming.py")
        self._owner[name] = key
        self._names[key] = name
        return name

    def _numbered(self, kind: str, stem: str, subject) -> str:
        if (kind, subject) in self._names:
            return self._names[(kind, subject)]
        number = self._counts.get(kind, 0)
        self._counts[kind] = number + 1
        return self._claim(kind, subject, f"{stem}_{number}")

    def adjoint(self, variable) -> str:
        """The adjoint variable of a program variable or scalar parameter."""
        return self._claim("adjoint", str(variable), f"adj_{variable}")

    def gradient(self, array: str) -> str:
        """The kernel parameter holding the gradient of ``array``."""
        return self._claim("gradient", array, f"adj_{array}")

    def seed(self, array: str) -> str:
        """The seed array adjoint_prepare fills for an array updated in place."""
        return self._claim("seed array", array, f"seed_{array}")

    def parameter_cells(self, parameter: str) -> str:
        """The adjoint kernel's output array of per-cell adjoints of a scalar parameter."""
        return self._claim("per-cell adjoints", parameter, f"adj_{parameter}_cells")

    def slots(self) -> str:
        """The per-thread slots for reads that are not scattered directly."""
        return self._claim("slots", "", "adj_slots")

    def parameter_argument(self, parameter: str) -> str:
        """The kernel parameter that brings a scalar parameter in: the number itself, or (the
        ``device_omega`` variants) a one-element array holding it."""
        return self._claim("parameter argument", parameter, f"{parameter}_in")

    def parameter_type(self, parameter: str) -> str:
        """The variant factory's annotation for :meth:`parameter_argument` (number or array)."""
        return self._claim("parameter type", parameter, f"{parameter}_type")

    def saved(self, array: str) -> str:
        """forward_save's output array: the copy of ``array`` it stores while reading it."""
        return self._claim("saved copy", array, f"saved_{array}")

    def residuals(self) -> str:
        """forward_residuals' output array, which the residual adjoints read (one slot per value)."""
        return self._claim("residuals", "", "residuals")

    def axis_size(self, axis: int) -> str:
        return self._claim("grid size", axis, AXIS_SIZES[axis])

    def neighbour(self, thread: str, shift: int) -> str:
        """The coordinate ``(thread - shift) mod n`` (the thread's own coordinate for shift 0)."""
        if shift == 0:
            return thread
        return self._claim("neighbour coordinate", (thread, shift), f"{thread}_m{shift}" if shift > 0 else f"{thread}_p{-shift}")

    def old(self, element: str) -> str:
        """The variable holding the gradient of ``element`` as read before the write-back."""
        return self._numbered("old value", "old", element)

    def moved(self, element: str) -> str:
        """adjoint_prepare's condition that ``element``'s gradient moves to its seed array."""
        return self._numbered("move condition", "moved", element)

    def listed_cells(self) -> str:
        """The adjoint's parameter holding the listed cells' coordinates (a split step)."""
        return self._claim("listed cells", "", "listed_cells")

    def listed_position(self) -> str:
        """The listed launch's thread index: a position in the list of cells."""
        return self._claim("list position", "", "listed")

    def reload(self, variable: str, run: int) -> str:
        """A load of ``variable``'s element issued again inside a later guarded run (the forward)."""
        return self._numbered("reload", f"{variable}_again", (variable, run))

    def reciprocal(self, variable: str) -> str:
        """The reverse sweep's ``1 / variable`` (:mod:`adjointgen.compiler.reciprocals`)."""
        return self._claim("reciprocal", variable, f"rcp_{variable}")

    def reciprocal_of_expression(self, expression: str) -> str:
        """The reverse sweep's reciprocal of an expression (its sympy ``srepr``)."""
        return self._numbered("reciprocal", "rcp", expression)

    def gather_marks(self) -> str:
        """adjoint_gather_marks' output: 1 at the cells whose readers left a slot to gather."""
        return self._claim("gather marks", "", "gather_marks")

    def gather_mark(self) -> str:
        """adjoint_gather_marks' per-cell flag."""
        return self._claim("gather mark", "", "marked")

    def id_flag(self, id_variable: str, value: int) -> str:
        """A split step's flag that the cell's boundary id is ``value`` (constant False in the
        part of the step that never runs at that id)."""
        return self._claim("id flag", (id_variable, value), f"{id_variable}_is_{value}")

    def population(self) -> str:
        """The loop variable of the write-back's loops over an array's populations."""
        return self._claim("population loop", "", "population")

    def reader_id(self, id_variable: str, reader: str) -> str:
        """The boundary id of the cell at the coordinates ``reader`` (adjoint_gather)."""
        return self._numbered("reader id", f"{id_variable}_reader", reader)


def module_name(config_name: str) -> str:
    return config_name


def relative_source_path(filename: str) -> str:
    """``.../site-packages/xlb/operator/stream/stream.py`` -> ``xlb/operator/stream/stream.py``:
    the same on every machine, so generated headers are diff-stable."""
    parts = filename.replace("\\", "/").split("/")
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return "/".join(parts[-3:])
