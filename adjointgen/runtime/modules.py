"""Generated modules found, checked and loaded: the only place the runtime imports one.

:func:`load_module` serves a stepper from the shipped ``generated/`` module of its configuration
when that module was generated from the same XLB sources and constants (its manifest's
``program_sha256``), else from a per-user cache, generating into the cache on first use. Every
file is checked before it is imported (:func:`adjointgen.manifest.check_body`): a shipped module
that was edited or damaged is never used (a warning names it and the repair command; the step is
served from the cache), and a damaged cache file is regenerated. Cache files are written whole
to a temporary name and renamed, so two processes generating the same module never see half a file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from adjointgen import __version__, locations
from adjointgen.config import Configuration
from adjointgen.errors import DamagedModule
from adjointgen.manifest import Manifest, check_body

log = logging.getLogger("adjointgen")


@dataclass(frozen=True)
class GeneratedModule:
    """A loaded generated module and its checked manifest."""

    module: ModuleType
    manifest: Manifest
    path: Path

    def kernel(self, name: str):
        return getattr(self.module, name)  # present: load_checked saw every kernel the manifest names


def cache_dir() -> Path:
    root = os.environ.get("ADJOINTGEN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "adjointgen")
    return Path(root) / __version__


@functools.cache
def generator_fingerprint() -> str:
    """SHA-256 of adjointgen's own code and templates: cached modules from another generator are
    never reused, even within one version number."""
    digest = hashlib.sha256()
    package = locations.PACKAGE_DIR
    code = [path for path in sorted(package.rglob("*.py")) if path.relative_to(package).parts[0] != "generated"]
    for path in code + sorted(locations.templates_dir().glob("*.j2")):
        digest.update(path.relative_to(path.parents[1]).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_checked(path: Path, module_name: str) -> GeneratedModule:
    """Import ``path`` as ``module_name`` after checking its body hash; then read its manifest.
    Raises :class:`DamagedModule` for an edited, cut-short or foreign file."""
    check_body(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = Manifest.from_mapping(getattr(module, "MANIFEST", None), str(path))
    missing = [name for name in manifest.kernels if not hasattr(module, name)]
    if missing:
        raise DamagedModule(f"{path}: the manifest names kernels the module does not define: {', '.join(missing)}")
    sys.modules[module_name] = module
    return GeneratedModule(module, manifest, Path(path))


def describe(stepper, config: Configuration) -> str:
    names = [type(bc).__name__ for bc in stepper.boundary_conditions]
    return f"{config.label} with {', '.join(names)}" if names else config.label


def _shipped(config: Configuration, identity: str) -> GeneratedModule | None:
    """The module in ``generated/`` when it exists, is intact and serves this identity."""
    path = locations.generated_dir() / f"{config.name}.py"
    if not path.is_file():
        return None
    try:
        loaded = load_checked(path, f"adjointgen.generated.{config.name}")
    except DamagedModule as exc:
        log.warning("adjointgen: %s. It is not used; a module generated into the cache serves instead. "
                    "Repair the file with: adjointgen build --config %s", exc, config.label)
        return None
    if loaded.manifest.program_sha256 != identity:
        log.info("adjointgen: %s does not match this stepper (other XLB sources or constants)", path)
        return None
    return loaded


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def load_module(stepper, config: Configuration, identity: str, generate) -> GeneratedModule:
    """The checked generated module for ``stepper``, whose program identity is ``identity``:
    the shipped one, else the cached one, else ``generate()``'s text written into the cache."""
    shipped = _shipped(config, identity)
    if shipped is not None:
        return shipped
    key = hashlib.sha256(f"{identity}:{generator_fingerprint()}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{config.name}_{key}.py"
    name = f"adjointgen_cache_{config.name}_{key}"
    if path.exists():
        try:
            return load_checked(path, name)
        except DamagedModule as exc:
            log.warning("adjointgen: %s; regenerating it", exc)
    else:
        log.warning("adjointgen: no generated module for %s; generating %s", describe(stepper, config), path)
    write_atomically(path, generate())
    return load_checked(path, name)
