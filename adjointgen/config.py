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

from .errors import ConfigurationError

VELOCITY_SETS = ("D2Q9", "D3Q19", "D3Q27")
COLLISIONS = ("BGK",)
PRECISIONS = ("FP32FP32", "FP64FP64")


@dataclass(frozen=True, order=True)
class Configuration:
    velocity_set: str
    collision: str
    precision: str

    def __post_init__(self):
        for value, allowed, what in (
            (self.velocity_set, VELOCITY_SETS, "velocity_set"),
            (self.collision, COLLISIONS, "collision"),
            (self.precision, PRECISIONS, "precision"),
        ):
            if value not in allowed:
                raise ConfigurationError(
                    f"unknown {what} {value!r}; choose one of {', '.join(allowed)}"
                )

    @property
    def name(self) -> str:
        return f"{self.velocity_set}_{self.collision}_{self.precision}".lower()

    @property
    def label(self) -> str:
        return f"{self.velocity_set}/{self.collision}/{self.precision}"

    @property
    def dim(self) -> int:
        return int(self.velocity_set[1])

    @property
    def is_fp64(self) -> bool:
        return self.precision.startswith("FP64")

    def with_precision(self, precision: str) -> "Configuration":
        return Configuration(self.velocity_set, self.collision, precision)

    @classmethod
    def parse(cls, text: str) -> "Configuration":
        """Parse ``D3Q19/BGK/FP32FP32`` or a module name such as ``d3q19_bgk_fp32fp32``."""
        parts = text.replace("_", "/").upper().split("/")
        if len(parts) != 3:
            raise ConfigurationError(
                f"cannot read configuration {text!r}: write VELOCITYSET/COLLISION/PRECISION, "
                "e.g. D3Q19/BGK/FP32FP32"
            )
        return cls(*parts)

    @classmethod
    def from_mapping(cls, entry: dict, where: str) -> "Configuration":
        keys = {"velocity_set", "collision", "precision"}
        if not isinstance(entry, dict) or set(entry) != keys:
            raise ConfigurationError(
                f"{where}: each configuration needs exactly the keys {sorted(keys)}, got {entry!r}"
            )
        try:
            return cls(entry["velocity_set"], entry["collision"], entry["precision"])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None


def _read_list(data: dict, where: str) -> list[Configuration]:
    entries = data.get("configurations")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{where}: `configurations` must be a non-empty list of tables")
    return [Configuration.from_mapping(entry, where) for entry in entries]


def default_configurations(project_dir: Path | None = None) -> list[Configuration]:
    """The configurations to build: ``[tool.adjointgen]`` of ``project_dir/pyproject.toml`` if it
    has one, else the packaged ``configurations.toml``."""
    if project_dir is not None:
        pyproject = Path(project_dir) / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"{pyproject}: not valid TOML: {exc}") from None
            table = data.get("tool", {}).get("adjointgen")
            if table is not None and "configurations" in table:
                return _read_list(table, f"{pyproject} [tool.adjointgen]")
    packaged = resources.files("adjointgen").joinpath("configurations.toml")
    return _read_list(tomllib.loads(packaged.read_text()), "adjointgen/configurations.toml")


def load_configuration_file(path: Path) -> list[Configuration]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    return _read_list(data.get("tool", {}).get("adjointgen", data), str(path))
