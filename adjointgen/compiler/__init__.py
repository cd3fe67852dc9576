"""The compiler: XLB-style Warp functionals in, a Python module of explicit Warp kernels out.

Stages, in the order :func:`adjointgen.compiler.pipeline.run_pipeline` runs them (each result
kept in :class:`~adjointgen.compiler.pipeline.Intermediates`): ``frontend`` (read the stepper
kernel), ``passes`` (source rewrites of it and every functional it calls), ``lower`` (one
straight-line per-cell program, ``ir``), ``access`` (streaming reads and the race-freedom
proof), ``reverse`` (reverse mode with sympy partials) and ``reciprocals`` (the divisions it
inverts, once each), ``guards`` (boundary ids at which each value matters), ``residuals`` (the
values a recorded step keeps), ``plan`` (one plan per kernel, from ``lines``; ``pressure``
estimates the adjoint's registers for it), ``emit`` (the Jinja templates print the plans).
``naming`` owns every generated name. Nothing here imports Warp's runtime or launches a kernel.
"""
