import os

# Keep Warp quiet and every kernel build in the shared cache between runs.
os.environ.setdefault("WARP_QUIET", "1")


def pytest_configure(config):
    import adjointgen

    adjointgen.quiet()  # Warp >= 1.19 has no wp.config.quiet: its log level
