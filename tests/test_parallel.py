"""build and verify on worker processes (adjointgen/tools/parallel.py): a worker knows what the
parent's configurations name (design operators, users' --source files), and an adjointgen error
in a worker reaches the caller whole."""

from pathlib import Path

import pytest

from adjointgen.config import Configuration
from adjointgen.errors import UnsupportedConstruct
from adjointgen.tools.parallel import map_configurations
from adjointgen.xlb.user import load_source

EXAMPLE_OPERATORS = Path(__file__).resolve().parents[1] / "examples" / "user_operators.py"


def collision_of(config: Configuration) -> str:
    """The class a worker builds this configuration's collision from (module-level: picklable)."""
    from adjointgen.xlb import user

    return f"{config.label} {user.COLLISIONS[config.collision].__name__}"


def refuse(config: Configuration) -> str:
    raise UnsupportedConstruct(f"{config.label}:1", "a construct", "do something else")


def test_workers_know_design_operators_and_the_users_sources():
    load_source(str(EXAMPLE_OPERATORS))  # the parent reads the user's file to parse its configurations
    configs = [Configuration.parse("D2Q9/PorousBGK/FP32FP32"), Configuration.parse("D2Q9/TRT/FP64FP64")]
    found = map_configurations(collision_of, configs, jobs=2, sources=(str(EXAMPLE_OPERATORS),))
    assert found == ["D2Q9/PorousBGK/FP32FP32 PorousBGK", "D2Q9/TRT/FP64FP64 TRT"]  # in the order asked


def test_an_error_in_a_worker_reaches_the_caller_whole():
    with pytest.raises(UnsupportedConstruct) as raised:
        map_configurations(refuse, [Configuration.parse("D2Q9/BGK/FP32FP32")] * 2, jobs=2)
    assert (raised.value.where, raised.value.construct, raised.value.advice) == ("D2Q9/BGK/FP32FP32:1", "a construct",
                                                                                 "do something else")
