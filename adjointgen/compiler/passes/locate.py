"""Locate: tag every statement with the line it has in the original source file.

Guarantees: afterwards every simple statement line and every compound statement (``if``,
``for``, ``def``) carries a ``# @src:<line>`` comment; existing tags are kept (idempotent); no
code changes.
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .base import PassContext, tag_of, with_tag


class _Tagger(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, offset: int):
        super().__init__()
        self.offset = offset

    def _tag(self, original, updated):
        if tag_of(updated) is not None:
            return updated
        line = self.get_metadata(PositionProvider, original).start.line + self.offset
        return with_tag(updated, str(line))

    def leave_SimpleStatementLine(self, original, updated):
        return self._tag(original, updated)

    def leave_If(self, original, updated):
        return self._tag(original, updated)

    def leave_For(self, original, updated):
        return self._tag(original, updated)

    def leave_While(self, original, updated):
        return self._tag(original, updated)

    def leave_FunctionDef(self, original, updated):
        return self._tag(original, updated)


class Locate:
    """Tag statements with their original source line."""

    name = "locate"

    def __call__(self, module: cst.Module, ctx: PassContext) -> cst.Module:
        # `source` starts at the first decorator line of the function in its file
        return MetadataWrapper(module).visit(_Tagger(ctx.functional.first_line - 1))
