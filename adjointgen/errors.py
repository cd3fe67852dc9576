"""Errors adjointgen raises for input it will not turn into a kernel.

Every error names where the problem is (``file:line`` when it comes from source), which construct
it is, and what the user can do. Nothing is emitted for code that raised one of these.
"""

from __future__ import annotations


class AdjointgenError(Exception):
    """Base class of all adjointgen errors."""


class ConfigurationError(AdjointgenError):
    """A configuration name, file or stepper that adjointgen cannot handle."""


class UnsupportedConstruct(AdjointgenError):
    """Source code that the generator refuses (the fence)."""

    def __init__(self, where: str, construct: str, advice: str):
        self.where = where
        self.construct = construct
        self.advice = advice
        super().__init__(f"{where}: unsupported construct: {construct}. {advice}")

    def __reduce__(self):
        # rebuilt from its three parts when it crosses processes (adjointgen.tools.parallel)
        return type(self), (self.where, self.construct, self.advice)


class UnresolvedName(UnsupportedConstruct):
    """A name in a functional whose value cannot be found in its closure or globals."""


class RuntimeArgumentError(AdjointgenError, ValueError):
    """Arrays passed to a differentiable step with the wrong shape, dtype or device."""


class DamagedModule(AdjointgenError):
    """A generated module whose body no longer matches the hash in its header, or whose manifest
    is missing or malformed: it was edited, cut short or written by another generator."""
