"""Boundary-condition values that become kernel parameters, so their gradients can be taken.

XLB bakes a boundary condition's prescribed values into its Warp functional as closure
constants (EquilibriumBC: ``_rho``, ``_u``). :func:`lifted_parameters` names them per stepper:
the resolve pass then writes parameter names (``bc1_u_0``) instead of literals, the generated
kernels take them as scalar arguments, and the adjoint writes their per-cell adjoints like
omega's. The module no longer depends on the values, only on which boundary carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: boundary condition class -> (closure name in its functional, attribute of the BC object)
LIFTABLE = {"EquilibriumBC": (("_rho", "rho"), ("_u", "u"))}


@dataclass(frozen=True)
class Lifted:
    closure: str  # the closure variable in the functional, e.g. "_u"
    name: str  # parameter base name, e.g. "bc1_u"
    size: int  # 0 for a scalar, else the vector length
    boundary: int  # index of the boundary condition in the stepper's list
    attribute: str  # the BC object's attribute that holds the value ("u")

    def scalar_names(self) -> list[str]:
        return [self.name] if self.size == 0 else [f"{self.name}_{c}" for c in range(self.size)]


def lifted_parameters(stepper) -> dict:
    """{id(python function of the BC functional): [Lifted, ...]} for the stepper's boundaries."""
    lifts: dict = {}
    for index, bc in enumerate(getattr(stepper, "boundary_conditions", [])):
        spec = LIFTABLE.get(type(bc).__name__)
        if spec is None:
            continue
        pyfunc = bc.warp_functional.func
        entries = []
        for closure, attribute in spec:
            value = getattr(bc, attribute)
            size = 0 if isinstance(value, (int, float)) else len(value)
            entries.append(Lifted(closure, f"bc{index}_{attribute}", size, index, attribute))
        lifts[id(pyfunc)] = entries
    return lifts


def values(stepper, lifts: dict) -> dict:
    """{scalar parameter name: float} with the boundary conditions' current values."""
    out = {}
    for entries in lifts.values():
        for lifted in entries:
            value = getattr(stepper.boundary_conditions[lifted.boundary], lifted.attribute)
            components = [value] if lifted.size == 0 else list(value)
            out.update(zip(lifted.scalar_names(), (float(v) for v in components)))
    return out


def scalar_names(lifts: dict) -> list[str]:
    """All lifted scalar parameter names, in boundary order."""
    entries = sorted((e for es in lifts.values() for e in es), key=lambda e: (e.boundary, e.name))
    return [name for entry in entries for name in entry.scalar_names()]
