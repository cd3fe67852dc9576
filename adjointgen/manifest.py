"""The manifest: what a generated module declares about itself, the compiler's hand-off to the runtime.

The emitter writes one :class:`Manifest` into every generated module (``MANIFEST = {...}``, a
plain literal inside the hashed body); the runtime reads it back once, when it loads the module,
and from then on asks the manifest, never the module, which kernels exist and which arrays the
step reads, overwrites or updates in place. :func:`check_body` is the other half of loading: a
module whose body does not hash to the ``body-sha256`` in its header is never imported.

Kernel-variant names are composed here only (:func:`adjoint_kernel_name`, :func:`forward_kernel_name`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from adjointgen.errors import DamagedModule

FORMAT = 2  # 2: the adjoint's slots cell-major (nx, ny, nz, slot_count); modules of format 1 are not read
#: manifest keys left out of a module's MANIFEST when empty (and read back as empty when absent)
OPTIONAL_KEYS = ("fields", "field_components", "f_1_read_ids", "listed_ids", "overwritten_ids", "residual_count")
HEADER_END = "# ---- end of header ----\n"
BODY_HASH_PREFIX = "# body-sha256: "


def adjoint_kernel_name(fresh: bool, state_only: bool, part: str = "", device_omega: bool = False,
                        residuals: bool = False) -> str:
    """``adjoint`` (accumulating), ``adjoint_fresh`` (writes into gradients known to be zero), each
    with ``_state`` when it leaves out the per-cell adjoints of scalar parameters, ``_device_omega``
    when it reads omega from a one-element array instead of taking the number, ``_residuals`` when
    it reads the values ``forward_residuals`` stored instead of replaying from the input (state
    only), and ``_rest`` / ``_listed`` for the two launches of a split step (the cells without the
    listed boundary ids, and the listed cells; see ``Manifest.listed_ids``)."""
    return (("adjoint_fresh" if fresh else "adjoint") + ("_state" if state_only else "")
            + ("_device_omega" if device_omega else "") + ("_residuals" if residuals else "") + (f"_{part}" if part else ""))


def forward_kernel_name(save: bool, part: str = "", device_omega: bool = False, residuals: bool = False) -> str:
    """``forward``; ``forward_save``: the same cell program that also stores each element of ``f_0``
    it reads through its primary read into ``saved_f_0`` (a copy of the step's input for the adjoint);
    ``forward_residuals``: the same cell program that also stores the values the state-only
    adjoint needs (``Manifest.residual_count`` per cell, :mod:`adjointgen.compiler.residuals`);
    ``_device_omega`` and ``_rest`` / ``_listed`` as in :func:`adjoint_kernel_name`."""
    return (("forward_save" if save else "forward") + ("_device_omega" if device_omega else "")
            + ("_residuals" if residuals else "") + (f"_{part}" if part else ""))


@dataclass(frozen=True)
class Manifest:
    """Facts about one generated module, checked when it is loaded."""

    configuration: str  # the label, e.g. "D3Q19/BGK/FP32FP32/cavity"
    program_sha256: str  # identity of the functionals after the source passes (see pipeline.program_identity)
    source_sha256: dict[str, str]  # functional symbol -> SHA-256 of its source as read from xlb
    kernels: tuple[str, ...]  # every kernel the module defines
    parameters: tuple[str, ...]  # scalar parameters whose per-cell adjoints the full adjoint kernels write
    slot_count: int  # temporary adjoint slots per cell (0: no adjoint_gather kernel)
    gather_into: tuple[str, ...]  # arrays whose gradients adjoint_gather completes
    in_place: tuple[str, ...]  # arrays the step updates in place (adjoint_prepare runs first, a seed array each)
    overwritten_inputs: tuple[str, ...]  # inputs the forward overwrites but the adjoint reads (copied when recorded)
    format: int = FORMAT
    # design fields (adjointgen.xlb.fields): kernel arrays (1, nx, ny, nz) after the scalar parameters,
    # differentiable inputs whose per-cell adjoints every adjoint variant writes; written into the
    # MANIFEST only when there are some, so modules without fields read as before
    fields: tuple[str, ...] = ()
    # the number of components of each field, in the order of ``fields`` (arrays (components, nx,
    # ny, nz)); written only where a field has several (e.g. one value per lattice link), so
    # empty means one each
    field_components: tuple[int, ...] = ()
    # the boundary ids of the cells at which the step reads its input f_1 (ZouHe's and
    # Regularized's data), where every such read is guarded by the cell's id; empty where f_1 is
    # not read or read at every cell. A rollout then stores f_1 only at those cells (and kept ones)
    f_1_read_ids: tuple[int, ...] = ()
    # boundary ids whose cells the adjoint can run in a launch of their own over a list of them
    # (``adjoint*_listed``), the other cells in ``adjoint*_rest``, compiled without those ids'
    # code (far fewer registers); empty: one launch over the grid
    listed_ids: tuple[int, ...] = ()
    # the boundary ids of the cells whose f_0 elements the step overwrites in place (where every
    # such store's condition is a test of the id); empty where nothing is, or where it is unknown
    overwritten_ids: tuple[int, ...] = ()
    # values per cell that ``forward_residuals`` stores and the ``_residuals`` adjoints read instead
    # of the step's input (array (residual_count, nx, ny, nz), compute precision); 0: none
    residual_count: int = 0

    def has(self, kernel: str) -> bool:
        return kernel in self.kernels

    def adjoint_kernel(self, fresh: bool, state_only: bool, part: str = "", device_omega: bool = False,
                       residuals: bool = False) -> str:
        """The name of the adjoint variant asked for; an error naming the module's variants if absent."""
        name = adjoint_kernel_name(fresh, state_only, part, device_omega, residuals)
        if not self.has(name):
            raise KeyError(f"{self.configuration} has no {name} kernel (it has {', '.join(self.kernels)})")
        return name

    @property
    def device_omega(self) -> bool:
        """The module has the ``_device_omega`` forward and accumulating adjoint (whole grid): a
        caller whose omega is only on the device (a traced JAX value) runs them without reading
        it back. Absent where ``adjoint_prepare``, which takes omega as a number, would read it."""
        return self.has(forward_kernel_name(False, "", True)) and self.has(adjoint_kernel_name(False, False, "", True))

    @property
    def residuals(self) -> bool:
        """The module has ``forward_residuals`` and the state-only adjoints that read what it
        stores (a recorded step then keeps ``residual_count`` values per cell, not its input)."""
        return self.residual_count > 0 and self.has(forward_kernel_name(False, residuals=True))

    @property
    def writes_f_0(self) -> bool:
        """The step updates its input ``f_0`` in place (a boundary condition recovers data into it);
        otherwise a face may hand ``f_0`` back as it came."""
        return "f_0" in self.in_place

    @property
    def reads_f_1(self) -> bool:
        """The adjoint reads the step's input ``f_1`` (a boundary condition keeps data there)."""
        return "f_1" in self.overwritten_inputs

    def to_source(self) -> str:
        """``MANIFEST = {...}``: deterministic, one key per line, valid Python (JSON without booleans);
        keys of :data:`OPTIONAL_KEYS` only where they are not empty."""
        data = {key: value for key, value in asdict(self).items() if key not in OPTIONAL_KEYS or value}
        return f"MANIFEST = {json.dumps(data, indent=4, sort_keys=True)}"

    @classmethod
    def from_mapping(cls, data, where: str) -> "Manifest":
        """The manifest read back from a module's ``MANIFEST``; :class:`DamagedModule` if it is not one."""
        expected = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not expected - set(OPTIONAL_KEYS) <= set(data) <= expected:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DamagedModule(f"{where}: MANIFEST must have exactly the keys {sorted(expected)} "
                                f"({', '.join(OPTIONAL_KEYS)} optional); found {found}")
        if data["format"] != FORMAT:
            raise DamagedModule(f"{where}: manifest format {data['format']}, this adjointgen reads format {FORMAT} "
                                "(generated by another version: run `adjointgen build` again)")
        manifest = cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})
        types = {"configuration": str, "program_sha256": str, "source_sha256": dict, "slot_count": int, "residual_count": int}
        for name in ("kernels", "parameters", "gather_into", "in_place", "overwritten_inputs", "fields", "field_components",
                     "f_1_read_ids", "listed_ids", "overwritten_ids"):
            types[name] = tuple
        for name, kind in types.items():
            if not isinstance(getattr(manifest, name), kind):
                raise DamagedModule(f"{where}: MANIFEST[{name!r}] must be a {kind.__name__}")
        if manifest.field_components and len(manifest.field_components) != len(manifest.fields):
            raise DamagedModule(f"{where}: MANIFEST['field_components'] must have one entry per field")
        return manifest

    def field_shape(self, name: str, grid: tuple) -> tuple:
        """The shape of the design field ``name``'s array for a state of cells ``grid``."""
        components = self.field_components[self.fields.index(name)] if self.field_components else 1
        return (components, *grid)


def body_sha256(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def split_generated(text: str) -> tuple[str | None, str]:
    """(recorded body hash, body) of a generated module's text; the hash is None without a header."""
    header, marker, body = text.partition(HEADER_END)
    if not marker:
        return None, text
    for line in header.splitlines():
        if line.startswith(BODY_HASH_PREFIX):
            return line[len(BODY_HASH_PREFIX):].strip(), body
    return None, body


def check_body(path: Path) -> None:
    """Raise :class:`DamagedModule` unless ``path``'s body hashes to the value in its header."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedModule(f"{path}: cannot be read ({exc})") from None
    recorded, body = split_generated(text)
    if recorded is None:
        raise DamagedModule(f"{path}: no adjointgen header with a body-sha256 line (not a generated module, or cut short)")
    if recorded != body_sha256(body):
        raise DamagedModule(f"{path}: edited or damaged (its body does not hash to the body-sha256 of its header)")
