"""Kernel plans (adjointgen/compiler/plan.py): comments per run of one source line, parameter
adjoints gathered into one variant block only where the order does not matter, provenance on
the forward lines."""

from pathlib import Path

import sympy

from adjointgen.compiler.ir import Origin
from adjointgen.compiler.plan import describe_origins, parameters_last
from adjointgen.compiler.reverse import Update

ROOT = Path(__file__).resolve().parents[1]
SITE = "zero_moment.py:26  rho += f[l]"


def test_a_run_of_one_source_line_is_described_once():
    assert describe_origins([Origin(SITE, (f"l={l}",)) for l in range(18, 0, -1)]) == f"{SITE}  [l=18..1]"
    assert describe_origins([Origin(SITE, ("l=3",)), Origin(SITE, ("l=1",)), Origin(SITE, ("l=2",))]) == f"{SITE}  [l=3, 1, 2]"
    assert describe_origins([Origin(SITE, ("d=1", "l=8")), Origin(SITE, ("d=0", "l=8"))]) == f"{SITE}  [d=1, l=8; d=0, l=8]"
    assert describe_origins([Origin("bgk.py:33  fout = f - omega * fneq")]) == "bgk.py:33  fout = f - omega * fneq"


def _update(target, expr, first=True):
    return Update(target, sympy.sympify(expr), first)


def test_parameter_adjoints_move_after_the_run_when_nothing_they_read_changes():
    updates = [_update("adj_a", "adj_t * w"), _update("adj_omega", "-adj_t * n"),
               _update("adj_b", "adj_s * w"), _update("adj_omega", "-adj_s * m", first=False)]
    ordered = parameters_last(updates, {"adj_omega"})
    assert [u.target for u in ordered] == ["adj_a", "adj_b", "adj_omega", "adj_omega"]
    assert [str(u.expr) for u in ordered[2:]] == ["-adj_t*n", "-adj_s*m"]  # their own order kept


def test_parameter_adjoints_stay_where_a_later_update_changes_what_they_read():
    updates = [_update("adj_omega", "-adj_t * n"), _update("adj_t", "adj_s", first=False)]
    assert parameters_last(updates, {"adj_omega"}) == updates
    reads_the_parameter = [_update("adj_omega", "-adj_t * n"), _update("adj_b", "adj_omega")]
    assert parameters_last(reads_the_parameter, {"adj_omega"}) == reads_the_parameter


def test_the_shipped_module_has_one_comment_per_run_and_sources_on_forward_lines():
    text = (ROOT / "generated" / "d2q9_bgk_fp32fp32.py").read_text()
    assert text.count("# adj of: zero_moment.py:26") == 1 and "rho += f[l]  [l=8..1]" in text
    assert text.count("# adj of: stream.py:80") == 1  # the up-front reads of the nine populations
    sweep = text[text.index("# reverse sweep"):text.index("# writes")]
    assert sweep.count("if wp.static(not state_only):") == 1  # BGK's nine d/d omega terms, one block
    assert text.count("rho = f_0_0 + f_0_1  # zero_moment.py:26") == 2  # forward and replay


def test_the_forward_and_adjoint_take_omega_as_a_number_or_from_the_device():
    """One body; the factory's device_omega flag chooses omega's annotation (a number, or a
    one-element array read at the top of the body), and the module compiles that variant of the
    forward and of the accumulating and fresh adjoints (with omega's adjoints) only."""
    text = (ROOT / "generated" / "d2q9_bgk_fp32fp32.py").read_text()
    assert text.count("omega_type = wp.array(dtype=wp.float32) if device_omega else wp.float32") == 2
    assert text.count("omega_in: omega_type,") == 2 and "omega: wp.float32" not in text
    assert text.count("        if wp.static(device_omega):\n            omega = omega_in[0]") == 2
    assert 'forward_device_omega = _forward_variant("forward_device_omega", save=False, device_omega=True)' in text
    assert ('adjoint_device_omega = _adjoint_variant("adjoint_device_omega", fresh=False, state_only=False, '
            'device_omega=True)') in text
    assert ('adjoint_fresh_device_omega = _adjoint_variant("adjoint_fresh_device_omega", fresh=True, state_only=False, '
            'device_omega=True)') in text
    assert text.count("device_omega=True)") == 3


def test_the_per_cell_parameter_adjoint_is_stored_right_after_its_last_update():
    """omega's per-cell adjoint is written where the sweep completes it, inside the same
    ``not state_only`` block, not at the end of the body (kept live to the end, the obstacle
    channel's adjoints with omega spilled 40-104 bytes: NOTES v50). Its value is the same: the
    store follows the last update of ``adj_omega``, and nothing after it changes that variable."""
    text = (ROOT / "generated" / "d2q9_bgk_fp32fp32.py").read_text()
    body = text[text.index("def _adjoint_variant"):text.index("adjoint.__name__")]
    sweep = body[body.index("# reverse sweep"):]
    store = "adj_omega_cells[i, j, k] = adj_omega"
    assert body.count(store) == 1 and store in sweep  # plus the kept cells' zero, before the sweep
    block = sweep[sweep.index("if wp.static(not state_only):"):].split("\n        # adj of:")[0]
    assert block.rstrip().endswith(store) and block.count("adj_omega = adj_omega - ") == 8
    assert "adj_omega = " not in sweep[sweep.index(store):] and "# per-cell adjoints of scalar parameters" not in body
