"""The source-to-source passes, in the order the pipeline runs them.

Each pass is a callable object ``pass_(module, ctx) -> module`` over a libcst module holding one
functional. Each lives in its own module and opens with what it guarantees.
"""

from .base import PassContext
from .locate import Locate
from .modernise import Modernise
from .resolve import Resolve
from .unroll import Unroll
from .fold import Fold
from .branchless import Branchless
from .fixed_point import FixedPoint

# unroll, resolve and fold enable each other (folding can turn a trip count into a literal,
# ``nt = _d * (_d + 1) // 2``; unrolling makes table indices literal): repeated until nothing changes
SOURCE_PASSES = (Locate(), Modernise(), Resolve(), FixedPoint(Unroll(), Resolve(), Fold()), Branchless())

__all__ = ["PassContext", "SOURCE_PASSES", "Locate", "Modernise", "Resolve", "Unroll", "Fold", "FixedPoint", "Branchless"]
