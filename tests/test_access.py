import pytest
import sympy

from adjointgen.compiler.access import _shift, analyse
from adjointgen.errors import UnsupportedConstruct
from adjointgen.compiler.ir import Param, Select
from tests.helpers import lower_source

x = sympy.Symbol("i", integer=True, nonnegative=True)
n = sympy.Symbol("n", integer=True, positive=True)

PARAMS = [Param("a", "array", "float32", 4), Param("b", "array", "float32", 4)]
HEAD = "def k(a: wp.array4d(dtype=float), b: wp.array4d(dtype=float)):\n    i, j, k = wp.tid()\n"
PULL = (
    "    p = i - {c}\n"
    "    if p < 0:\n        p = a.shape[1] - 1\n"
    "    elif p >= a.shape[1]:\n        p = 0\n"
)


@pytest.mark.parametrize("c", [-1, 0, 1])
def test_xlb_style_periodic_pull_is_recognised(c):
    wrapped = Select(x - c < 0, n - 1, Select(x - c >= n, 0, x - c))
    assert _shift(wrapped, x, False) == c


def test_clamped_index_is_not_a_bijection():
    clamped = Select(x - 1 < 0, 0, x - 1)
    with pytest.raises(ValueError):
        _shift(clamped, x, False)


def test_one_read_per_population_gives_a_proof():
    program = lower_source(HEAD + PULL.format(c=1) + "    b[0, i, j, k] = a[0, p, j, k]\n", PARAMS)
    accesses = analyse(program)
    assert accesses.proof == ["a[0] read at x - (1, 0, 0) (mod n): a bijection, scattered directly"]


def test_a_second_offset_of_one_population_goes_to_a_slot():
    program = lower_source(HEAD + PULL.format(c=1) + "    b[0, i, j, k] = a[0, p, j, k] + a[0, i, j, k]\n", PARAMS)
    accesses = analyse(program)
    assert accesses.primary == {("a", 0): (1, 0, 0)}
    assert [(s.array, s.population, s.shifts) for s in accesses.slots] == [("a", 0, (0, 0, 0))]
    assert "slot 0" in accesses.proof[1]


def test_an_array_written_and_read_at_a_neighbour_is_updated_in_place():
    program = lower_source(HEAD + PULL.format(c=1) + "    b[0, i, j, k] = b[1, p, j, k] * a[0, i, j, k]\n", PARAMS)
    accesses = analyse(program)
    assert accesses.in_place == ["b"]
    assert any("b is updated in place" in line for line in accesses.proof)


def test_an_array_written_unconditionally_and_read_at_its_own_cell_is_an_output():
    program = lower_source(HEAD + "    b[0, i, j, k] = b[0, i, j, k] * a[0, i, j, k]\n", PARAMS)
    assert analyse(program).in_place == []


def test_writes_to_a_neighbour_are_refused():
    program = lower_source(HEAD + PULL.format(c=1) + "    b[0, p, j, k] = a[0, i, j, k]\n", PARAMS)
    with pytest.raises(UnsupportedConstruct, match="another cell"):
        analyse(program)


def test_a_shift_read_at_every_cell_is_preferred_as_the_primary():
    """Two neighbours' values of one population: the pull at x - 1 (every cell) and, under a
    boundary condition, x + 1 (a lower shift). Told which loads are guarded (the guard stage's
    needs), the analysis scatters the every-cell read directly and sends the guarded one to a
    slot; without that, the lowest shift would be the primary, and every cell would write a slot."""
    other = "    q = i + 1\n    if q >= a.shape[1]:\n        q = 0\n"
    program = lower_source(HEAD + PULL.format(c=1) + other + "    b[0, i, j, k] = a[0, p, j, k] + a[0, q, j, k]\n", PARAMS)
    plain = analyse(program)
    assert plain.primary == {("a", 0): (-1, 0, 0)}  # the lowest shift: here the guarded read
    guarded = frozenset(name for name, found in plain.loads.items() if found.shifts == (-1, 0, 0))
    preferred = analyse(program, guarded=guarded)
    assert len(guarded) == 1 and preferred.primary == {("a", 0): (1, 0, 0)}  # the every-cell pull
    assert [s.shifts for s in preferred.slots] == [(-1, 0, 0)]
