"""One compiled query for every as_of: the parameter mode gives what literals give.

The live service compiles rules once with ``as_of`` as a query parameter (windows computed
in SQL); batch evaluation bakes as_of into literals. Random rules at instants chosen to hit
edges (month ends, midnight, a leap day) must select the same customers both ways.
"""

from __future__ import annotations

from datetime import datetime

import ibis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_segments_fixtures import template
from test_segments_property import rules

from kequn import open_workspace
from kequn.asof import resolve_as_of
from kequn.segments import format_rule
from kequn.segments.compile import compile_rules
from kequn.segments.engine import _Context

INSTANTS = [
    datetime(2024, 6, 30, 15, 30, 0),
    datetime(2024, 3, 31, 23, 59, 59),  # "last 1 month" from the 31st steps back to Feb 29
    datetime(2024, 6, 1, 0, 0, 0),
    datetime(2024, 2, 29, 12, 0, 0, 250000),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = open_workspace(template(tmp_path_factory))
    yield workspace
    workspace.close()


def both_ways(ws, rule, at: datetime) -> tuple[list, list]:
    context = _Context(ws)
    checked = {"m": context.check(format_rule(rule))}
    moment = resolve_as_of(at, ws.config.timezone)
    literal = compile_rules(checked, context.tables, moment, context.catalog)
    param = ibis.param("timestamp")
    symbolic = compile_rules(checked, context.tables, moment, context.catalog, as_of_param=param)
    a = literal.order_by("customer_id").to_pyarrow().to_pylist()
    b = symbolic.order_by("customer_id").to_pyarrow(params={param: at}).to_pylist()
    return a, b


@given(rule=rules, at=st.sampled_from(INSTANTS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_parameter_and_literal_agree(ws, rule, at) -> None:
    a, b = both_ways(ws, rule, at)
    assert a == b, format_rule(rule)


def test_month_window_clamps_like_add_months(ws) -> None:
    from kequn.segments import parse_rule

    rule = parse_rule("count(orders, last 1 months) >= 0 and count(orders, last 2 years) > 0")
    for at in INSTANTS:
        a, b = both_ways(ws, rule, at)
        assert a == b
        assert any(r["m"] for r in a)  # not vacuous


def test_parameter_needs_an_instant(ws) -> None:
    context = _Context(ws)
    checked = {"m": context.check("count(orders, last 7 days) > 0")}
    day = resolve_as_of("2024-06-30", ws.config.timezone)
    with pytest.raises(ValueError, match="instant"):
        compile_rules(
            checked, context.tables, day, context.catalog, as_of_param=ibis.param("timestamp")
        )
