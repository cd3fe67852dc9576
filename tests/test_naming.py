"""The namer: one name per thing, numbered names in request order, collisions refused."""

import pytest

from adjointgen.compiler.naming import NameCollision, Namer


def test_the_same_request_gets_the_same_name():
    names = Namer()
    assert names.adjoint("rho_0") == names.adjoint("rho_0") == "adj_rho_0"
    assert names.gradient("f_0") == "adj_f_0"
    assert names.seed("f_0") == "seed_f_0"
    assert names.parameter_cells("omega") == "adj_omega_cells"
    assert (names.neighbour("i", 1), names.neighbour("i", -2), names.neighbour("i", 0)) == ("i_m1", "i_p2", "i")


def test_numbered_names_count_per_kind_in_request_order():
    names = Namer()
    assert [names.old("adj_f_0[1, i, j, k]"), names.old("adj_f_0[2, i, j, k]"), names.moved("f_0[1, i, j, k]")] == [
        "old_0", "old_1", "moved_0"]
    assert names.old("adj_f_0[1, i, j, k]") == "old_0"
    assert [names.reader_id("bc_mask_0", "i_p1, j"), names.reader_id("bc_mask_0", "i, j_m1")] == [
        "bc_mask_0_reader_0", "bc_mask_0_reader_1"]


def test_a_name_for_two_things_is_refused():
    names = Namer()
    names.adjoint("omega_cells")
    with pytest.raises(NameCollision, match="adj_omega_cells"):
        names.parameter_cells("omega")


def test_a_program_variable_is_never_reused():
    names = Namer(["rho_0", "adj_u_0"])
    with pytest.raises(NameCollision, match="program variable 'adj_u_0'"):
        names.adjoint("u_0")
