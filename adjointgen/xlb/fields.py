"""Per-cell design fields: how an XLB-style functional reads a differentiable per-cell input.

XLB's collision functional receives ``(f, feq, rho, u, omega)`` and no cell index, so a field
cannot be read by indexing. Instead the operator builds a reader with :func:`field` in its
``_construct_warp`` and calls it without arguments inside the functional::

    porosity = adjointgen.field("porosity", self.compute_dtype)

    @wp.func
    def functional(f: Any, feq: Any, rho: Any, u: Any, omega: Any):
        gamma = porosity()          # this cell's value of the field "porosity"
        ...

The generator recognises the reader (by the name it carries, :data:`FIELD_ATTRIBUTE`) and lowers
the call to a read of a new kernel array ``porosity[0, i, j, k]`` (shape ``(1, nx, ny, nz)`` like
``bc_mask``, in the store precision) at the thread's own cell. The array is a differentiable input:
the adjoint kernels write its per-cell adjoint into ``adj_porosity`` at the own cell, one writer
per element, no atomics.

A field may have several components per cell (``components=q``: one value per lattice link, as
:class:`~adjointgen.xlb.design.BouzidiBounceBackBC`'s ``wall_distance``). Its reader then takes
the component's index, which must be a constant once the generator has unrolled the loops
(``wall_distance(l)`` inside ``for l in range(q)``); the array has shape ``(components, nx, ny,
nz)`` and the read is ``wall_distance[l, i, j, k]``. Boundary conditions' functionals read
fields the same way as collisions'.

Compiled by Warp itself (XLB's own Warp stepper, which has no per-cell inputs), the reader returns
its ``default`` (0 unless declared otherwise): the operator then runs as if the field held that
everywhere. Run operators with fields through :func:`adjointgen.differentiable`
(``fields={"porosity": array}``) or their JAX implementation.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

import warp as wp

from adjointgen.errors import ConfigurationError

#: the attribute of a reader's Python function that holds its :class:`Field`
FIELD_ATTRIBUTE = "__adjointgen_field__"
#: names a field cannot take: the XLB stepper kernel's own parameters
RESERVED = ("f_0", "f_1", "bc_mask", "missing_mask", "omega", "timestep")


@dataclass(frozen=True, order=True)
class Field:
    """A design field as its operators declare it: kernel array ``name`` of shape
    ``(components, nx, ny, nz)``; ``default`` is what the reader returns where Warp compiles the
    operator itself (XLB's own stepper); ``low`` and ``high`` bound its meaningful values (the
    verifier samples inside them)."""

    name: str
    components: int = 1
    default: float = 0.0
    low: float = 0.0
    high: float = 1.0

    @property
    def label(self) -> str:
        """``name``, with the number of components where there are several: ``wall_distance[9]``."""
        return self.name if self.components == 1 else f"{self.name}[{self.components}]"

    @staticmethod
    def from_json(data) -> "Field | None":
        return None if data is None else Field(**data)


_READERS: dict = {}  # (name, dtype name, components) -> the reader (one each, so Warp sees one function)
_DECLARED: dict = {}  # name -> Field: one meaning per name (the components may follow the lattice)


def field(name: str, dtype=wp.float32, components: int = 1, default: float = 0.0, low: float = 0.0, high: float = 1.0):
    """A ``@wp.func`` that reads this cell's value of the design field ``name`` (in ``dtype``, the
    operator's compute precision) in generated kernels: without arguments for a field of one
    component (``porosity()``), with the component's index for more (``wall_distance(l)``, ``l``
    a loop index the generator unrolls, so a constant)."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("adj_"):
        raise ConfigurationError(f"adjointgen.field: {name!r} must be a Python identifier (not starting with adj_)")
    if name in RESERVED:
        raise ConfigurationError(f"adjointgen.field: {name!r} is a parameter of XLB's stepper kernel; choose another name")
    if not isinstance(components, int) or components < 1:
        raise ConfigurationError(f"adjointgen.field: {name!r} needs a positive whole number of components, not {components!r}")
    spec = Field(name, components, float(default), float(low), float(high))
    known = _DECLARED.get(name, spec)
    if (known.default, known.low, known.high) != (spec.default, spec.low, spec.high):
        raise ConfigurationError(f"adjointgen.field: {name!r} is declared twice, as {known} and as {spec}; "
                                 "give the second field another name")
    _DECLARED[name] = spec
    key = (name, dtype.__name__, components)
    if key not in _READERS:
        _READERS[key] = wp.func(_reader(spec, dtype))
    return _READERS[key]


def _reader(spec: Field, dtype):
    _default = dtype(spec.default)

    if spec.components == 1:
        def read_field():
            return _default
    else:
        def read_field(component: int):
            return _default

    suffix = "" if spec.components == 1 else f"_{spec.components}"
    read_field.__qualname__ = read_field.__name__ = f"field_{spec.name}{suffix}_{dtype.__name__}"
    setattr(read_field, FIELD_ATTRIBUTE, spec)
    return read_field


def declared(name: str) -> Field:
    """The field ``name`` as an operator last declared it (:func:`field`): its default and range
    (take the number of components from the generated module's manifest)."""
    if name not in _DECLARED:
        raise ConfigurationError(f"no operator has declared the design field {name!r}; build the stepper first")
    return _DECLARED[name]


def field_of(pyfunc) -> Field | None:
    """The field a functional's Python function reads (None: an ordinary functional)."""
    return getattr(pyfunc, FIELD_ATTRIBUTE, None)


def fields_of(functionals) -> tuple[Field, ...]:
    """The fields read by any of ``functionals`` (frontend.Functional), sorted by name."""
    return tuple(sorted({spec for f in functionals if (spec := field_of(f.pyfunc)) is not None}))
