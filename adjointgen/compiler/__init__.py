"""The compiler: XLB-style Warp functionals in, a Python module of explicit Warp kernels out.

Stages, in the order :func:`adjointgen.compiler.pipeline.generate` runs them: ``frontend``
(read the stepper kernel and every functional it calls), ``passes`` (source rewrites),
``lower`` (one straight-line per-cell program, ``ir``), ``access`` (streaming reads and the
race-freedom proof), ``guards`` (boundary ids at which each value matters), ``reverse``
(reverse mode with sympy partials), ``emit`` (lines for the Jinja templates). Nothing here
imports Warp's runtime or launches a kernel.
"""
