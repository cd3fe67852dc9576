"""The ``adjointgen`` command: build, check, verify.

    adjointgen build  [--config D3Q19/BGK/FP32FP32 ...] [--out DIR] [--explain] [--jobs N]
    adjointgen check  [--config ...] [--dir DIR] [--jobs N]
    adjointgen verify [--config ...] [--shape 8x8] [--jobs N]   # one configuration per process
    adjointgen lint   PATH_OR_MODULE... [--velocity-set D3Q19] [--format json]
    adjointgen bench  [--config ...] [--size 192] [--out DIR]   # on a GPU: times every way to step
    adjointgen bench --rollout [--steps 1000] [--memory 20GB]  # a rollout's gradient, its plan and floor

Without ``--config`` the configurations come from ``[tool.adjointgen]`` in ./pyproject.toml if it
has one, else from the packaged ``adjointgen/configurations.toml``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import sys
from pathlib import Path

from adjointgen import __version__
from adjointgen.config import VELOCITY_SETS, Configuration, default_configurations, load_configuration_file
from adjointgen.errors import AdjointgenError

GENERATED_SHAPE = {2: (4, 4), 3: (4, 4, 4)}
CPU_BENCH_MAX_SIZE = 32  # larger grids are refused on a machine without a CUDA device  # the grid size does not change the generated code


def generated_dir() -> Path:
    from adjointgen.locations import generated_dir as located

    return located()


def _configurations(args) -> list[Configuration]:
    if getattr(args, "source", None):
        from adjointgen.xlb.user import load_source

        for path in args.source:
            load_source(path)
    if getattr(args, "config_file", None):
        return load_configuration_file(Path(args.config_file))
    if args.config:
        return [Configuration.parse(text) for text in args.config]
    return default_configurations(Path.cwd())


def render(config: Configuration, explain: bool = False) -> str:
    from adjointgen.compiler.pipeline import run_pipeline
    from adjointgen.runtime.identities import CachedRuns, remember
    from adjointgen.xlb.support import make_stepper

    stepper = make_stepper(config, "warp", GENERATED_SHAPE[config.dim])
    record = run_pipeline(stepper, config, store=CachedRuns())
    remember(record.kernel, record.passes.record)  # a later load of this stepper need not run the passes
    if explain:
        print("\n".join(record.explain()))
    return record.text


def _map(function, configs: list, args) -> list:
    """``function`` over the configurations, on ``--jobs`` worker processes (tools/parallel.py)."""
    from adjointgen.tools.parallel import default_jobs, map_configurations
    from adjointgen.verbosity import is_quiet

    jobs = args.jobs if args.jobs is not None else default_jobs(len(configs))
    return map_configurations(function, configs, jobs, tuple(args.source or ()), is_quiet())


def cmd_build(args) -> int:
    out = Path(args.out) if args.out else generated_dir()
    out.mkdir(parents=True, exist_ok=True)
    configs = _configurations(args)
    texts = [render(config, True) for config in configs] if args.explain else _map(render, configs, args)
    for config, text in zip(configs, texts):
        path = out / f"{config.name}.py"
        status = "unchanged" if path.exists() and path.read_text() == text else "written"
        if status == "written":
            path.write_text(text)
        print(f"{status:>9}  {path}  ({config.label})")
    return 0


def cmd_check(args) -> int:
    directory = Path(args.dir) if args.dir else generated_dir()
    configs = _configurations(args)
    problems = 0
    expected_names = {f"{c.name}.py" for c in configs}
    present = [c for c in configs if (directory / f"{c.name}.py").exists()]  # a missing one needs no generating
    rendered = dict(zip(present, _map(render, present, args)))
    for config in configs:
        path = directory / f"{config.name}.py"
        if config not in rendered:
            print(f"MISSING  {path} ({config.label})")
            problems += 1
        elif (current := path.read_text()) == rendered[config]:
            print(f"ok       {path}")
        else:
            _report_difference(path, current, rendered[config], args.max_diff_lines)
            problems += 1
    listed = sorted(p.name for p in directory.glob("*.py")) if not (args.config or args.config_file) else []
    for extra in (name for name in listed if name != "__init__.py" and name not in expected_names):
        print(f"UNKNOWN  {directory / extra} (not in the configuration list; delete it or add its configuration)")
        problems += 1
    if problems:
        out = f" --out {directory}" if args.dir else ""
        print(f"\n{problems} generated module(s) out of date. Fix: adjointgen build{out}")
        return 1
    return 0


def _report_difference(path: Path, current: str, text: str, max_lines: int) -> None:
    """EDITED (the body no longer matches its hash) or STALE (generated from other sources), with
    the start of the diff."""
    from adjointgen.manifest import body_sha256, split_generated

    recorded, body = split_generated(current)
    edited = recorded is None or body_sha256(body) != recorded
    print(f"{'EDITED' if edited else 'STALE':<8} {path} ({'changed by hand' if edited else 'generated from other sources or templates'})")
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(), f"{path} (on disk)", f"{path} (regenerated)", lineterm="", n=1)
    for number, line in enumerate(diff):
        if number >= max_lines:
            print("  ... (diff cut; run the fix below)")
            break
        print(f"  {line}")


def cmd_verify(args) -> int:
    from adjointgen.tools.verify import format_table, verify_with_shape

    configs = _configurations(args)
    if not (args.config or args.config_file):
        configs += default_configurations(Path.cwd(), "verify_also")
        if args.extended:
            configs += default_configurations(Path.cwd(), "verify_extended")
        if args.fields or args.extended:
            configs += default_configurations(Path.cwd(), "verify_fields")
    shape = tuple(int(n) for n in args.shape.split("x")) if args.shape else None
    rows = _map(functools.partial(verify_with_shape, shape=shape), configs, args)
    print(format_table(rows))
    failed = [row.config.label for row in rows if not row.passed]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    print(f"\nall {len(rows)} configurations passed")
    return 0


def cmd_lint(args) -> int:
    from adjointgen.config import Configuration
    from adjointgen.tools.lint import lint
    from adjointgen.tools.lint.report import as_json, rules_text, text

    if args.list_rules:
        print(rules_text())
        return 0
    if not args.paths:
        print("adjointgen lint: give at least one file, directory or module name", file=sys.stderr)
        return 2
    velocity_set = args.velocity_set
    if args.config:
        velocity_set = Configuration.parse(args.config).velocity_set
    select = [r.strip() for r in args.select.split(",")] if args.select else None
    result = lint(args.paths, velocity_set=velocity_set, max_unroll=args.max_unroll, select=select)
    print(as_json(result) if args.format == "json" else text(result, explain=not args.brief))
    return result.exit_code


def cmd_bench(args) -> int:
    from adjointgen.tools.bench import DEFAULT_CASES, markdown, run, write_results

    if args.config_file or getattr(args, "source", None):
        cases = [c.label for c in _configurations(args)]
    else:
        cases = args.config or list(DEFAULT_CASES)
    skip = {part.strip() for part in (args.skip or "").split(",") if part.strip()}
    unknown = skip - {"tape", "jax"}
    if unknown:
        print(f"adjointgen bench: --skip takes tape and/or jax, not {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    import warp as wp

    if not wp.get_device().is_cuda and args.size > CPU_BENCH_MAX_SIZE:
        print(f"adjointgen bench: no CUDA device here, and the bench is meant for one (its {args.size}^3 grids take "
              f"many minutes and gigabytes on a CPU, and CPU times say nothing about GPU kernels). Run it on a GPU, "
              f"or pass --size {CPU_BENCH_MAX_SIZE} or less for a quick CPU smoke run.", file=sys.stderr)
        return 2
    if args.rollout:  # the T-step rollout's gradient (tools/bench_rollout.py); by default the first case only
        from adjointgen.tools import bench_rollout

        return bench_rollout.cmd(args, cases if args.config or args.config_file else cases[:1])
    results = run(cases, args.size, args.repeats, args.inner, skip)
    write_results(args.out, "bench", results, markdown(results))
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="adjointgen", description="Explicit adjoint Warp kernels for XLB steppers.",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    main.add_argument("-v", "--verbose", action="store_true",
                      help="also show Warp's module-load lines and banner, JAX's and XLB's backend messages, and "
                           "adjointgen's info log (what is generated and loaded)")
    main.add_argument("--version", action="version", version=f"adjointgen {__version__}")
    commands = main.add_subparsers(dest="command", required=True)

    def with_configs(sub):
        sub.add_argument("--config", action="append", metavar="VS/COLLISION/PRECISION",
                         help="a configuration, e.g. D3Q19/BGK/FP32FP32 (repeatable; default: the configured list)")
        sub.add_argument("--config-file", metavar="TOML", help="a TOML file with a `configurations` list")
        sub.add_argument("--source", action="append", metavar="FILE.py",
                         help="a file of your own XLB-style operators (classes decorated with @adjointgen.register); repeatable")
        return sub

    def command(name: str, help: str):
        return commands.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)

    build = with_configs(command("build", help="generate modules into generated/"))
    build.add_argument("--out", help="output directory (default: adjointgen's generated/ folder)")
    build.add_argument("--explain", action="store_true", help="print the intermediate result of every stage (one process)")
    build.add_argument("--jobs", "-j", type=int, help="worker processes, one configuration each (default: one per core)")
    build.set_defaults(run=cmd_build)

    check = with_configs(command("check", help="fail if generated/ is stale or edited"))
    check.add_argument("--dir", help="directory to check (default: adjointgen's generated/ folder)")
    check.add_argument("--max-diff-lines", type=int, default=60)
    check.add_argument("--jobs", "-j", type=int, help="worker processes, one configuration each (default: one per core)")
    check.set_defaults(run=cmd_check)

    verify = with_configs(command("verify", help="check generated kernels against XLB-JAX and finite differences"))
    verify.add_argument("--shape", help="grid size, e.g. 8x8 or 6x6x6 (default: small grids)")
    verify.add_argument("--extended", action="store_true",
                        help="also the larger set of boundary mixes and collision models (verify_extended), and verify_fields")
    verify.add_argument("--fields", action="store_true",
                        help="also the design-field configurations (verify_fields: PorousBGK, d/d porosity per cell; "
                             "the bouzidi mix, d/d wall distance per link)")
    verify.add_argument("--jobs", "-j", type=int, help="worker processes, one configuration each (default: one per core)")
    verify.set_defaults(run=cmd_verify)

    lint = command("lint", help="report where Warp's automatic adjoint is silently wrong")
    lint.add_argument("paths", nargs="*", metavar="PATH_OR_MODULE", help="files, directories or importable module names")
    lint.add_argument("--velocity-set", metavar="DdQq", choices=VELOCITY_SETS, help="resolve velocity_set.q/.d loops for this set, e.g. D3Q19")
    lint.add_argument("--config", metavar="VS/COLLISION/PRECISION", help="take the velocity set from a configuration")
    lint.add_argument("--max-unroll", type=int, help="Warp's max_unroll to assume (default: 16, Warp's default, "
                      "or the file's own set_module_options)")
    lint.add_argument("--select", metavar="RULE,...", help="only these rules")
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument("--brief", action="store_true", help="one line per finding, without the explanation")
    lint.add_argument("--list-rules", action="store_true", help="print the rules and exit")
    lint.set_defaults(run=cmd_lint)

    bench = with_configs(command("bench", help="time XLB's step, ours, its adjoint, Warp's tape and jax.grad"))
    bench.add_argument("--size", type=int, default=192, help="cells per axis (default 192)")
    bench.add_argument("--repeats", type=int, default=7)
    bench.add_argument("--inner", type=int, default=10, help="calls per timed batch")
    bench.add_argument("--skip", metavar="tape,jax", help="leave out Warp's tape and/or XLB-JAX rows")
    bench.add_argument("--out", default="bench-results", help="directory for bench.json and bench.md")
    bench.add_argument("--rollout", action="store_true", help="time a T-step rollout's gradient instead (rollout.json, rollout.md)")
    bench.add_argument("--steps", type=int, default=1000, help="--rollout: steps T")
    bench.add_argument("--memory", default="20GB", help="--rollout: the plan's memory budget (bytes, 20GB, auto)")
    bench.add_argument("--snapshots", type=int, help="--rollout: stored states (instead of --memory)")
    bench.set_defaults(run=cmd_bench)
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from adjointgen.verbosity import quiet

    quiet(not args.verbose)
    try:
        return args.run(args)
    except AdjointgenError as exc:
        print(f"adjointgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
