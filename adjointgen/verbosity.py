"""How much Warp, JAX and XLB print on adjointgen's behalf.

Left alone, one ``adjointgen verify`` of one configuration prints Warp's start-up banner, a line
per Warp module loaded ("Module ... load on device 'cpu' took 12 ms"), XLB's "No GPU support is
available; CPU fallback will be used." for every JAX stepper it sets up, and on machines with a
GPU but a CPU-only jaxlib JAX's own fallback warning (logger ``jax._src.xla_bridge``).

:func:`quiet` turns that chatter off (``quiet(False)`` turns it back on); warnings and errors of
Warp and JAX, and adjointgen's own log lines, still come through. The command line calls it unless
``-v``/``--verbose`` is given. A library import of adjointgen changes nothing: these are
process-wide settings of Warp and JAX that belong to the user's program, so library users call
``adjointgen.quiet()`` themselves.
"""

from __future__ import annotations

import contextlib
import io
import logging

__all__ = ["quiet", "is_quiet", "xlb_prints"]

#: JAX's loggers whose warnings are chatter (backend discovery, CPU fallback).
JAX_LOGGERS = ("jax._src.xla_bridge",)

_state = {"quiet": False}


def quiet(enabled: bool = True) -> None:
    """Silence (``enabled=True``) or restore Warp's info lines, JAX's backend-fallback warnings and
    XLB's backend prints. Call it before the first Warp launch: Warp's banner comes at ``wp.init()``."""
    import warp as wp

    wp.config.log_level = wp.LOG_WARNING if enabled else wp.LOG_INFO
    for name in JAX_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if enabled else logging.NOTSET)
    _state["quiet"] = enabled


def is_quiet() -> bool:
    """Whether :func:`quiet` is in effect."""
    return _state["quiet"]


@contextlib.contextmanager
def xlb_prints():
    """Around calls into XLB that ``print`` (``xlb.init`` for a JAX backend): swallowed when quiet."""
    if not _state["quiet"]:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
