import os

# Keep Warp quiet and every kernel build in the shared cache between runs.
os.environ.setdefault("WARP_QUIET", "1")


def pytest_configure(config):
    import warp as wp

    wp.config.quiet = True
