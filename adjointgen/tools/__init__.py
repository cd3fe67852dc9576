"""The command line and what it runs: ``cli`` (build, check, verify, lint, bench), ``verify``
(the oracles), ``bench`` (GPU timing), ``lint`` (hazards of Warp's automatic adjoint)."""
