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

Compiled by Warp itself (XLB's own Warp stepper, which has no per-cell inputs), the reader returns
0: the operator then runs as if the field were 0 everywhere. Run operators with fields through
:func:`adjointgen.differentiable` (``fields={"porosity": array}``) or their JAX implementation.
"""

from __future__ import annotations

import keyword

import warp as wp

from adjointgen.errors import ConfigurationError

#: the attribute of a reader's Python function that names its field
FIELD_ATTRIBUTE = "__adjointgen_field__"
#: names a field cannot take: the XLB stepper kernel's own parameters
RESERVED = ("f_0", "f_1", "bc_mask", "missing_mask", "omega", "timestep")

_READERS: dict = {}  # (name, dtype name) -> the reader (one per name and precision, so Warp sees one function)


def field(name: str, dtype=wp.float32):
    """A ``@wp.func`` without arguments that reads this cell's value of the design field ``name``
    (in ``dtype``, the operator's compute precision) in generated kernels."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("adj_"):
        raise ConfigurationError(f"adjointgen.field: {name!r} must be a Python identifier (not starting with adj_)")
    if name in RESERVED:
        raise ConfigurationError(f"adjointgen.field: {name!r} is a parameter of XLB's stepper kernel; choose another name")
    key = (name, dtype.__name__)
    if key not in _READERS:
        _READERS[key] = wp.func(_reader(name, dtype))
    return _READERS[key]


def _reader(name: str, dtype):
    _zero = dtype(0.0)

    def read_field():
        return _zero

    read_field.__qualname__ = read_field.__name__ = f"field_{name}_{dtype.__name__}"
    setattr(read_field, FIELD_ATTRIBUTE, name)
    return read_field


def field_of(pyfunc) -> str | None:
    """The field a functional's Python function reads (None: an ordinary functional)."""
    return getattr(pyfunc, FIELD_ATTRIBUTE, None)


def fields_of(functionals) -> tuple[str, ...]:
    """The sorted field names read by any of ``functionals`` (frontend.Functional)."""
    return tuple(sorted({name for f in functionals if (name := field_of(f.pyfunc)) is not None}))
