"""Emission: render a :class:`~adjointgen.compiler.plan.ModulePlan` with the Jinja templates.

``templates/module_body.py.j2`` prints the kernels from the plans' prepared lists and
``templates/module_header.py.j2`` the provenance header over the body's SHA-256; both only loop
over lists. Every decision about the generated code is made in :mod:`~adjointgen.compiler.plan`.
"""

from __future__ import annotations

import jinja2

from adjointgen import __version__
from adjointgen.compiler import naming
from adjointgen.compiler.plan import ModulePlan
from adjointgen.locations import templates_dir
from adjointgen.manifest import body_sha256


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def _context(plan: ModulePlan) -> dict:
    """The templates' variables, all taken from the plan."""
    from adjointgen.xlb.support import xlb_version

    sources = [{"symbol": f.symbol, "path": f"{naming.relative_source_path(f.filename)}:{f.first_line}", "sha": f.sha256}
               for f in plan.sources]
    return {
        "version": __version__, "xlb_version": xlb_version(), "config": plan.config, "sources": sources,
        "identity": plan.identity, "proof": plan.proof, "statement_count": plan.statement_count,
        "adjoint_update_count": plan.adjoint_update_count, "manifest": plan.manifest.to_source(),
        "prologue": plan.cell.prologue, "exit_condition": plan.cell.exit_condition,
        "forward": plan.forward,
        "adjoint": plan.adjoint, "seeds": plan.adjoint.seeds, "in_place_seeds": plan.adjoint.in_place_seeds,
        "replay": plan.adjoint.replay,
        "prepare_params": plan.prepare.params, "prepare_body": plan.prepare.body,
        "gather_params": plan.gather.params, "gather_body": plan.gather.body, "gather_variants": plan.gather.variants,
        "kept_params": plan.kept.params, "kept_body": plan.kept.body,
    }


def render_module(plan: ModulePlan) -> str:
    """The module's text: the header, then the body the templates print from ``plan``.

    Guarantees: the text depends on nothing but the plan, adjointgen's version, the installed
    XLB's version and the templates; the header's ``body-sha256`` is the SHA-256 of the body as
    returned (:func:`adjointgen.manifest.body_sha256`), so a hand edit is detected; the body
    defines exactly the kernels ``plan.manifest.kernels`` lists."""
    context = _context(plan)
    environment = _environment()
    body = environment.get_template("module_body.py.j2").render(context)
    header = environment.get_template("module_header.py.j2").render(context, body_sha256=body_sha256(body))
    return header + body
