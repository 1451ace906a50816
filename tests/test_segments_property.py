"""Property tests: random valid rules read back unchanged, never crash, and split customers.

Rules are generated as syntax trees from the fields of the fixture workspace, printed with
``format_rule`` and parsed again, so the parser, the checker and the compiler all see them.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_segments_fixtures import ALL, AS_OF, template

from kequn import open_workspace
from kequn.segments import flags, format_rule, parse_rule
from kequn.segments.nodes import (
    Aggregate,
    And,
    Between,
    Compare,
    Const,
    Ever,
    Field,
    InList,
    IsNull,
    Last,
    Literal,
    Not,
    Or,
    TextMatch,
    Then,
    WindowBetween,
)

TEXT_VALUES = ["北京", "上海", "app", "web", "男", "女", "o'k", "", "美妆", "A1"]
OPS = ["=", "!=", "<", "<=", ">", ">="]

text = st.sampled_from(TEXT_VALUES).map(Literal)
number = st.one_of(st.integers(-5, 400), st.floats(-10, 3000, allow_nan=False)).map(Literal)
day = st.dates(date(2022, 1, 1), date(2024, 12, 31))
day_text = day.map(lambda d: Literal(d.isoformat()))


def field(*path: str) -> Field:
    return Field(tuple(path))


text_fields = st.sampled_from(
    [
        field("city"),
        field("channel"),
        field("gender"),
        field("name"),
        field("attributes", "会员等级"),
    ]
)
number_fields = st.sampled_from(
    [field("days_since_last_order"), field("days_since_first_order"), field("attributes", "score")]
)
date_fields = st.sampled_from([field("created_at"), field("birth_date")])


@st.composite
def between(draw, values):
    low, high = sorted([draw(values).value, draw(values).value])
    return Literal(low), Literal(high)


def conditions(text_f, number_f, date_f):
    """Conditions over the given fields (customer level or row level)."""
    options = [
        st.builds(Compare, text_f, st.sampled_from(OPS), text),
        st.builds(InList, text_f, st.lists(text, min_size=1, max_size=3).map(tuple), st.booleans()),
        st.builds(
            TextMatch,
            text_f,
            st.sampled_from(["contains", "starts_with", "ends_with"]),
            text,
            st.booleans(),
        ),
        st.builds(IsNull, st.one_of(text_f, number_f, date_f), st.booleans()),
        st.builds(Compare, number_f, st.sampled_from(OPS), number),
        st.builds(
            lambda f, b, neg: Between(f, b[0], b[1], neg), number_f, between(number), st.booleans()
        ),
    ]
    if date_f is not None:
        options.append(st.builds(Compare, date_f, st.sampled_from(OPS), day_text))
    return st.one_of(*options)


order_row = conditions(
    st.sampled_from([field("channel"), field("status")]),
    st.sampled_from([field("amount"), field("quantity")]),
    st.sampled_from([field("ordered_at")]),
)
event_row = conditions(
    st.sampled_from([field("type"), field("properties", "category"), field("properties", "sku")]),
    st.sampled_from([field("properties", "price")]),
    st.sampled_from([field("occurred_at")]),
)


@st.composite
def windows(draw):
    kind = draw(st.sampled_from(["last", "between", "ever"]))
    if kind == "last":
        return Last(
            draw(st.integers(1, 400)), draw(st.sampled_from(["day", "week", "month", "year"]))
        )
    if kind == "between":
        start = draw(day)
        return WindowBetween(start, start + timedelta(days=draw(st.integers(0, 400))))
    return Ever()


@st.composite
def aggregates(draw):
    source = draw(st.sampled_from(["orders", "returns", "all_orders", "events"]))
    rows = event_row if source == "events" else order_row
    where = draw(st.none() | rows)
    func = draw(st.sampled_from(["count", "sum", "avg", "min", "max", "count_distinct"]))
    if func == "count":
        fld = None
    elif func == "count_distinct":
        fld = field("properties", "sku") if source == "events" else field("channel")
    else:
        fld = field("properties", "price") if source == "events" else field("amount")
    then = None
    if func == "count" and draw(st.booleans()):
        then = draw(thens())
    return Aggregate(func, source, fld, where, draw(windows()), then)


@st.composite
def thens(draw):
    source = draw(st.sampled_from(["orders", "returns", "all_orders", "events"]))
    rows = event_row if source == "events" else order_row
    unit = draw(st.sampled_from(["minute", "hour", "day", "week"]))
    return Then(source, draw(st.none() | rows), draw(st.integers(1, 60)), unit, draw(st.booleans()))


aggregate_conditions = st.one_of(
    st.builds(Compare, aggregates(), st.sampled_from(OPS), number),
    st.builds(lambda a, b: Between(a, b[0], b[1]), aggregates(), between(number)),
    st.builds(IsNull, aggregates(), st.booleans()),
)

leaves = st.one_of(
    conditions(text_fields, number_fields, date_fields),
    aggregate_conditions,
    st.booleans().map(Const),
)
rules = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        inner.map(Not),
    ),
    max_leaves=6,
)


@given(rules)
@settings(max_examples=100, deadline=None)
def test_format_then_parse_is_identity(rule) -> None:
    assert parse_rule(format_rule(rule)) == rule


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = open_workspace(template(tmp_path_factory))
    yield workspace
    workspace.close()


@given(rule=rules)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_rule_and_its_negation_partition_the_customers(ws, rule) -> None:
    text = format_rule(rule)
    yes = flags(ws, text, AS_OF).to_pyarrow().to_pylist()
    no = flags(ws, f"not ({text})", AS_OF).to_pyarrow().to_pylist()
    member = {r["customer_id"]: r["member"] for r in yes}
    non_member = {r["customer_id"]: r["member"] for r in no}
    assert sorted(member) == ALL  # one row per customer, none lost or repeated
    assert len(yes) == len(ALL)
    for cid in ALL:
        assert member[cid] in (True, False), (text, cid)
        assert member[cid] != non_member[cid], (text, cid)
