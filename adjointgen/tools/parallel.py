"""One configuration per process: ``build`` and ``verify`` over several configurations.

Each configuration is independent work for one CPU core (the libcst passes, Warp's LLVM compile
of the kernels, XLA's compile of the JAX oracle), so ``--jobs N`` hands them to N worker
processes, in order of the list; the results come back in that order. The workers are spawned,
not forked (the parent may already hold Warp's and JAX's threads), and they repeat what the
parent did before the work: the ``--source`` files of the user's operators and the verbosity.
Kernel and module caches are shared: Warp and adjointgen write their cache entries under a
temporary name and rename them into place, so two workers that compile the same module cannot
leave a torn entry.

The standard library's process pool does the work (``concurrent.futures``); nothing here
schedules by hand.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def default_jobs(count: int) -> int:
    """One worker per core the process may use, no more than there are configurations."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, count))


def _prepare(sources: tuple, quiet: bool) -> None:
    from adjointgen.verbosity import quiet as set_quiet
    from adjointgen.xlb.user import load_source

    set_quiet(quiet)
    for path in sources:
        load_source(path)


def map_configurations(function, configs: list, jobs: int, sources: tuple = (), quiet: bool = True) -> list:
    """``[function(c) for c in configs]``, on ``jobs`` processes when that is more than one.
    ``function`` must be importable by name (a module-level function, or a ``functools.partial``
    of one)."""
    if jobs <= 1 or len(configs) <= 1:
        return [function(config) for config in configs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_prepare, initargs=(tuple(sources), quiet)) as pool:
        return list(pool.map(function, configs))
