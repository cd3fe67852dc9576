"""The runtime: generated modules loaded and checked, and the faces users call.

``manifest`` (what a generated module declares, checked when it is loaded), ``step`` (the
XLB-signature differentiable step, tape recording), ``rollout`` (checkpointed rollouts),
``jax_face`` and ``sharding`` (JAX). The runtime generates a missing module through the
compiler, but never reaches into its stages.
"""
