"""Names that appear in generated code, in one place."""

from __future__ import annotations

AXIS_SIZES = ("nx", "ny", "nz")
SLOTS = "adj_slots"  # per-thread slots for reads that are not scattered directly


def grad_param(array: str) -> str:
    """The kernel parameter holding the gradient of ``array``."""
    return f"adj_{array}"


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


def parameter_cells(parameter: str) -> str:
    """The adjoint kernel's output array of per-cell adjoints of a scalar parameter."""
    return f"adj_{parameter}_cells"


def seed_array(array: str) -> str:
    """The seed array adjoint_prepare fills for an array updated in place."""
    return f"seed_{array}"
