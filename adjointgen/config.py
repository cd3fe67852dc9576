"""What to generate: configurations and where their defaults come from.

A :class:`Configuration` names one stepper: velocity set, collision model and precision policy
(boundary conditions come with the boundaries issue). Its :attr:`~Configuration.name` is the
generated module's name. Defaults live in ``adjointgen/configurations.toml``; a project's
``pyproject.toml`` may override them in ``[tool.adjointgen]``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from adjointgen.errors import ConfigurationError

VELOCITY_SETS = ("D2Q9", "D3Q19", "D3Q27")
# "Forced<model>": XLB's ForcedCollision around <model>, exact-difference forcing, with the
# force of adjointgen.xlb.support.FORCE (the stepper's force_vector)
BUILTIN_COLLISIONS = ("BGK", "KBC", "SmagorinskyLESBGK", "ForcedBGK", "ForcedKBC", "ForcedSmagorinskyLESBGK")
# adjointgen's own design operators (adjointgen.xlb.design: XLB-style collisions that read a
# per-cell design field); registered like users' operators when a configuration names one
DESIGN_COLLISIONS = ("PorousBGK",)
COLLISIONS = BUILTIN_COLLISIONS  # plus the collisions users register (adjointgen.xlb.user.register)
PRECISIONS = ("FP32FP32", "FP64FP64", "FP64FP32")  # compute precision, then store precision
# built by adjointgen.xlb.support.boundary_conditions (see its docstring for each mix)
BUILTIN_BOUNDARIES = ("periodic", "cavity", "box", "channel", "outflow", "regularized", "extrapolation", "obstacle",
                      "bouzidi")
# mixes of adjointgen's design operators (a wall that reads a per-link design field)
DESIGN_BOUNDARIES = ("bouzidi",)
BOUNDARIES = BUILTIN_BOUNDARIES  # plus the mixes users register (adjointgen.xlb.user.register_mix)


@dataclass(frozen=True, order=True)
class Configuration:
    velocity_set: str
    collision: str
    precision: str
    boundaries: str = "periodic"

    def __post_init__(self):
        from adjointgen.xlb import user

        if self.collision not in BUILTIN_COLLISIONS + tuple(user.COLLISIONS) and self.collision in DESIGN_COLLISIONS:
            user.load_design_operators()
        for value, allowed, what in (
            (self.velocity_set, VELOCITY_SETS, "velocity_set"),
            (self.collision, BUILTIN_COLLISIONS + tuple(user.COLLISIONS), "collision"),
            (self.precision, PRECISIONS, "precision"),
            (self.boundaries, BUILTIN_BOUNDARIES + tuple(user.MIXES), "boundaries"),
        ):
            if value not in allowed:
                hint = (" (a collision of your own: register it with @adjointgen.register and pass its file "
                        "with --source)") if what == "collision" else ""
                raise ConfigurationError(
                    f"unknown {what} {value!r}; choose one of {', '.join(allowed)}{hint}"
                )

    @property
    def has_design_fields(self) -> bool:
        """Whether adjointgen's own design operators read per-cell fields in this configuration."""
        return self.collision in DESIGN_COLLISIONS or self.boundaries in DESIGN_BOUNDARIES

    def __reduce__(self):
        # rebuilt through __init__ in another process (adjointgen.tools.parallel), so that its
        # checks run there and the design operators it names get registered there too
        return Configuration, (self.velocity_set, self.collision, self.precision, self.boundaries)

    @property
    def name(self) -> str:
        suffix = "" if self.boundaries == "periodic" else f"_{self.boundaries}"
        return f"{self.velocity_set}_{self.collision}_{self.precision}{suffix}".lower()

    @property
    def label(self) -> str:
        suffix = "" if self.boundaries == "periodic" else f"/{self.boundaries}"
        return f"{self.velocity_set}/{self.collision}/{self.precision}{suffix}"

    @property
    def dim(self) -> int:
        return int(self.velocity_set[1])

    @property
    def q(self) -> int:
        """The velocity set's number of populations (D3Q19: 19)."""
        return int(self.velocity_set.split("Q")[1])

    @property
    def is_fp64(self) -> bool:
        """Computed and stored in double precision (finite differences are meaningful)."""
        return self.precision == "FP64FP64"

    def with_precision(self, precision: str) -> "Configuration":
        return Configuration(self.velocity_set, self.collision, precision, self.boundaries)

    @classmethod
    def parse(cls, text: str) -> "Configuration":
        """Parse ``D3Q19/BGK/FP32FP32[/cavity]`` or a module name such as ``d3q19_bgk_fp32fp32``."""
        parts = text.split("/") if "/" in text else text.split("_", 3)  # a label, or a module name
        if len(parts) not in (3, 4):
            raise ConfigurationError(
                f"cannot read configuration {text!r}: write VELOCITYSET/COLLISION/PRECISION[/BOUNDARIES], "
                "e.g. D3Q19/BGK/FP32FP32 or D2Q9/BGK/FP64FP64/cavity"
            )
        from adjointgen.xlb import user

        if parts[1].lower() in (name.lower() for name in DESIGN_COLLISIONS):
            user.load_design_operators()
        collision = next((c for c in BUILTIN_COLLISIONS + tuple(user.COLLISIONS) if c.lower() == parts[1].lower()), parts[1])
        return cls(parts[0].upper(), collision, parts[2].upper(), *(part.lower() for part in parts[3:]))

    @classmethod
    def from_mapping(cls, entry: dict, where: str) -> "Configuration":
        keys = {"velocity_set", "collision", "precision"}
        if isinstance(entry, str):  # the label form, "D3Q19/BGK/FP32FP32[/mix]"
            try:
                return cls.parse(entry)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
        if not isinstance(entry, dict) or not keys <= set(entry) or not set(entry) <= keys | {"boundaries"}:
            raise ConfigurationError(
                f"{where}: each configuration is a label such as \"D3Q19/BGK/FP32FP32\" or a table with the keys "
                f"{sorted(keys)} (and optionally 'boundaries'), got {entry!r}"
            )
        try:
            return cls(entry["velocity_set"], entry["collision"], entry["precision"], entry.get("boundaries", "periodic"))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None


def _read_list(data: dict, where: str, key: str = "configurations") -> list[Configuration]:
    entries = data.get(key)
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{where}: `{key}` must be a non-empty list of tables")
    return [Configuration.from_mapping(entry, where) for entry in entries]


def default_configurations(project_dir: Path | None = None, key: str = "configurations") -> list[Configuration]:
    """The configurations to build (``key="configurations"``) or to verify besides them
    (``key="verify_also"``, and ``"verify_extended"`` for ``verify --extended``): from ``[tool.adjointgen]`` of ``project_dir/pyproject.toml`` if it
    has that key, else from the packaged ``configurations.toml``."""
    if project_dir is not None:
        pyproject = Path(project_dir) / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"{pyproject}: not valid TOML: {exc}") from None
            table = data.get("tool", {}).get("adjointgen")
            if table is not None and key in table:
                return _read_list(table, f"{pyproject} [tool.adjointgen]", key)
            if table is not None and "configurations" in table:
                return []  # a project that lists its own configurations verifies only those
    packaged = resources.files("adjointgen").joinpath("configurations.toml")
    return _read_list(tomllib.loads(packaged.read_text()), "adjointgen/configurations.toml", key)


def load_configuration_file(path: Path) -> list[Configuration]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    return _read_list(data.get("tool", {}).get("adjointgen", data), str(path))
