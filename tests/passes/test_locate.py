import libcst as cst

from adjointgen.compiler.passes.base import tag_line
from adjointgen.compiler.passes.locate import Locate
from tests.helpers import assert_idempotent, run

SOURCE = """\
def f(a):
    x = a + 1
    if x > 0:
        x = 2
    return x
"""


def test_tags_every_statement_with_its_line():
    code, _ = run(Locate(), SOURCE)
    assert code.splitlines() == [
        "def f(a):  # @src:1",
        "    x = a + 1  # @src:2",
        "    if x > 0:  # @src:3",
        "        x = 2  # @src:4",
        "    return x  # @src:5",
    ]
    module = cst.parse_module(code)
    assert tag_line(module.body[0].body.body[0]) == 2


def test_no_code_change_and_idempotent():
    code, _ = run(Locate(), SOURCE)
    assert cst.parse_module(code).code.replace("  # @src:", "#").count("#") == 5
    assert_idempotent(Locate(), SOURCE)
