"""Sequences: ``count(A then [no] B within N unit, window)``, members checked by hand.

A small workspace of its own (built once per module) with one customer per edge: exactly
N days later, one second late, the same timestamp, B before A, a follow-up period still
open at as_of, a return instead of an order, no events at all. as_of is 2024-06-30 (a day:
its end counts) unless a test says so.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from test_segments_fixtures import _table

from kequn import init_workspace
from kequn.segments import RuleError, count, evaluate, flags, format_rule, parse_rule
from kequn.store import CUSTOMERS, EVENTS, ORDERS

AS_OF = "2024-06-30"
ALL = [f"s{i:02d}" for i in range(1, 11)]

EVENTS_ROWS = [
    # customer, at, type
    ("s01", "2024-06-20 09:30:00", "product_view"),
    ("s01", "2024-06-20 10:00:00", "add_to_cart"),  # order 8 h later
    ("s02", "2024-06-20 10:00:00", "add_to_cart"),  # order exactly 1 day later
    ("s03", "2024-06-20 08:00:00", "product_view"),  # 2 h before the cart
    ("s03", "2024-06-20 10:00:00", "add_to_cart"),  # order 1 day and 1 second later
    ("s04", "2024-06-25 12:00:00", "add_to_cart"),  # order at the same instant
    ("s04", "2024-06-25 12:00:00", "checkout"),  # another event at the same instant
    ("s05", "2024-06-10 12:00:00", "add_to_cart"),  # the only order came 2 h before
    ("s06", "2024-06-30 20:00:00", "add_to_cart"),  # 1-day follow-up still open at as_of
    ("s08", "2024-06-28 09:00:00", "add_to_cart"),  # followed by a return, not an order
    ("s09", "2024-05-31 23:00:00", "add_to_cart"),  # before the last 30 days
    ("s10", "2024-06-01 08:00:00", "add_to_cart"),  # order 25 h later: not within 1 day
    ("s10", "2024-06-02 08:00:00", "add_to_cart"),  # order 1 h later
    # s07: no events and no orders
]
ORDERS_ROWS = [
    # customer, at, amount, is_return
    ("s01", "2024-06-20 18:00:00", 50.0, False),
    ("s02", "2024-06-21 10:00:00", 200.0, False),
    ("s02", "2024-06-25 10:00:00", 80.0, False),  # a second purchase 4 days later
    ("s03", "2024-06-21 10:00:01", 120.0, False),
    ("s04", "2024-06-25 12:00:00", 150.0, False),
    ("s05", "2024-06-10 10:00:00", 60.0, False),
    ("s08", "2024-06-28 10:00:00", -90.0, True),
    ("s10", "2024-06-02 09:00:00", 300.0, False),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = init_workspace(Path(tmp_path_factory.mktemp("sequences")) / "ws")
    customers = [{"customer_id": cid, "city": "北京"} for cid in ALL]
    orders = [
        {
            "order_id": f"o{i:02d}",
            "customer_id": cid,
            "ordered_at": datetime.fromisoformat(at),
            "amount": amount,
            "is_return": ret,
        }
        for i, (cid, at, amount, ret) in enumerate(ORDERS_ROWS)
    ]
    events = [
        {
            "event_id": f"e{i:02d}",
            "customer_id": cid,
            "occurred_at": datetime.fromisoformat(at),
            "type": kind,
            "properties": json.dumps({}),
        }
        for i, (cid, at, kind) in enumerate(EVENTS_ROWS)
    ]
    workspace.store.append("customers", _table(CUSTOMERS, customers))
    workspace.store.append("orders", _table(ORDERS, orders))
    workspace.store.append("events", _table(EVENTS, events))
    yield workspace
    workspace.close()


CART = "count(events where type = 'add_to_cart'"

CASES = [
    # (rule, as_of, members)
    # followed within 1 day: exactly 1 day (s02) and the same instant (s04) count; s03 is one
    # second late, s05 ordered before the cart, s08 only returned, s06 has no order yet
    (f"{CART} then orders within 1 day, last 30 days) > 0", AS_OF, ["s01", "s02", "s04", "s10"]),
    (f"{CART} then orders within 24 hours) > 0", AS_OF, ["s01", "s02", "s04", "s10"]),
    # abandoned: no order within 1 day; s06's day has not passed yet at as_of, s09's cart is
    # before the window, s10's first cart was abandoned and its second was not
    (f"{CART} then no orders within 1 day, last 30 days) > 0", AS_OF, ["s03", "s05", "s08", "s10"]),
    (f"{CART} then no orders within 1 day) > 0", AS_OF, ["s03", "s05", "s08", "s09", "s10"]),
    (f"{CART} then orders within 2 days) = 2", AS_OF, ["s10"]),
    (f"{CART} then orders within 1 day) = 1", AS_OF, ["s01", "s02", "s04", "s10"]),
    # two days on, s06's follow-up has passed; s10's carts (06-01, 06-02) left the window
    (
        f"{CART} then no orders within 1 day, last 30 days) > 0",
        "2024-07-02",
        ["s03", "s05", "s06", "s08"],
    ),
    # an instant as_of: s02's order at exactly as_of is seen; s03's, one second later, is not,
    # and s03's follow-up period ends exactly at as_of, so its cart counts as abandoned
    (f"{CART} then orders within 1 day) > 0", "2024-06-21T10:00", ["s01", "s02", "s10"]),
    (f"{CART} then no orders within 1 day) > 0", "2024-06-21T10:00", ["s03", "s05", "s09", "s10"]),
    # the second step's filters: returns only; orders over ¥100
    (f"{CART} then returns within 1 day) > 0", AS_OF, ["s08"]),
    (f"{CART} then all_orders within 1 day) > 0", AS_OF, ["s01", "s02", "s04", "s08", "s10"]),
    (f"{CART} then orders where amount >= 100 within 1 day) > 0", AS_OF, ["s02", "s04", "s10"]),
    # both steps in one table: a row never follows itself, another row at the same instant does
    (
        "count(events where type = 'product_view' then events where type = 'add_to_cart' "
        "within 1 hour) > 0",
        AS_OF,
        ["s01"],
    ),
    ("count(events then events within 1 minute) > 0", AS_OF, ["s04"]),
    ("count(orders then orders within 30 days) > 0", AS_OF, ["s02"]),
    (
        "count(orders then no orders within 30 days) > 0",
        "2024-07-31",
        ["s01", "s02", "s03", "s04", "s05", "s10"],
    ),
    # orders then events; weeks
    ("count(orders then events within 1 week) > 0", AS_OF, ["s04", "s05"]),
    # customers without rows: count 0, and the negation includes them
    (f"{CART} then orders within 1 day) = 0", AS_OF, ["s03", "s05", "s06", "s07", "s08", "s09"]),
    (
        f"not {CART} then no orders within 1 day) > 0",
        AS_OF,
        ["s01", "s02", "s04", "s06", "s07"],
    ),
    # combined with other conditions; Chinese keywords
    (
        f"{CART} then no orders within 1 day, last 30 days) > 0 and count(orders) = 0",
        AS_OF,
        ["s08"],
    ),
    (
        "计数(事件 其中 type = 'add_to_cart' 然后 没有 订单 1 天内, 最近 30 天) > 0",
        AS_OF,
        ["s03", "s05", "s08", "s10"],
    ),
    ("计数(事件 其中 type = 'add_to_cart' 然后 订单 在 2 小时 以内) > 0", AS_OF, ["s04", "s10"]),
]


@pytest.mark.parametrize(("rule", "as_of", "expected"), CASES)
def test_sequence_members(ws, rule: str, as_of: str, expected: list[str]) -> None:
    assert evaluate(ws, rule, as_of) == expected


def test_every_customer_is_true_or_false(ws) -> None:
    rule = f"{CART} then no orders within 1 day) > 0"
    yes = {r["customer_id"]: r["member"] for r in flags(ws, rule, AS_OF).to_pyarrow().to_pylist()}
    assert sorted(yes) == ALL
    assert count(ws, rule, AS_OF) + count(ws, f"not ({rule})", AS_OF) == len(ALL)


@pytest.mark.parametrize(
    "rule",
    [
        f"{CART} then orders within 1 day, last 30 days) > 0",
        f"{CART} then no orders where amount >= 100 within 2 hours) >= 2",
        "count(orders where channel = 'app' or amount > 1 then no returns within 3 weeks) = 0",
        "count(events then events within 1 minute) > 0",
    ],
)
def test_format_reads_back(rule: str) -> None:
    node = parse_rule(rule)
    assert parse_rule(format_rule(node)) == node


def test_chinese_spelling_is_the_same_tree() -> None:
    english = f"{CART} then no orders within 1 day, last 30 days) > 0"
    for chinese in (
        "计数(事件 其中 type = 'add_to_cart' 然后 没有 订单 1 天内, 最近 30 天) > 0",
        "计数(事件 其中 type = 'add_to_cart' 然后 无 订单 在 1 天 以内, 最近 30 天) > 0",
        "计数(事件 其中 type = 'add_to_cart' 之后 没有 订单 within 1 日, 过去 30 天) > 0",
    ):
        assert parse_rule(chinese) == parse_rule(english), chinese


# (rule, kind, words the message must contain, "line:col" of the caret)
ERRORS = [
    ("count(events then orders) > 0", "bad_sequence", ["within N days"], "1:25"),
    ("count(events then orders within 1 month) > 0", "bad_sequence", ["days or weeks"], "1:35"),
    ("count(events then orders within 1 dya) > 0", "bad_sequence", ["did you mean"], "1:35"),
    ("count(events then orders within 0 days) > 0", "bad_sequence", ["at least 1"], "1:33"),
    ("count(events then orders within 1.5 days) > 0", "bad_sequence", ["whole number"], "1:33"),
    ("count(events then order within 1 day) > 0", "unknown_source", ["'orders'"], "1:19"),
    ("count(events then within 1 day) > 0", "bad_sequence", ["orders, returns"], "1:19"),
    ("count(events then orders.amount within 1 day) > 0", "bad_sequence", ["not a field"], "1:25"),
    (
        "count(events then orders within 1 day then events within 1 day) > 0",
        "bad_sequence",
        ["two steps"],
        "1:39",
    ),
    (
        "count(events, last 30 days then orders within 1 day) > 0",
        "bad_sequence",
        ["before the window"],
        "1:28",
    ),
    ("count(events) > 0 then orders within 1 day", "bad_sequence", ["inside count"], "1:19"),
    (
        "(count(events) > 0 then orders within 1 day)",
        "bad_sequence",
        ["inside count"],
        "1:20",
    ),
    (
        "sum(events.properties.price then orders within 1 day) > 0",
        "bad_aggregate",
        ["is counted"],
        "1:1",
    ),
    (
        "count(events then orders where typ = 'x' within 1 day) > 0",
        "unknown_field",
        ["'typ'"],
        "1:32",
    ),
    (
        "count(events then orders where count(orders) > 1 within 1 day) > 0",
        "aggregate_in_filter",
        ["inside a 'where'"],
        "1:32",
    ),
]


@pytest.mark.parametrize(("rule", "kind", "words", "where"), ERRORS)
def test_bad_sequences(ws, rule: str, kind: str, words: list[str], where: str) -> None:
    with pytest.raises(RuleError) as info:
        count(ws, rule, AS_OF)
    err = info.value
    assert err.kind == kind, str(err)
    for word in words:
        assert word in str(err), str(err)
    assert f"(at {where})" in str(err), str(err)


def test_apply_evaluates_all_in_one_query_with_the_same_members(ws) -> None:
    """apply compiles every segment into one query (sequences with the same two steps share
    one as-of join); each segment's members are those of evaluating its rule alone."""
    from kequn.segments import apply
    from kequn.segments.definitions import Segment

    cases = [(rule, expected) for rule, as_of, expected in CASES if as_of == AS_OF]
    segs = [Segment(name=f"seq_{i}", rule=rule) for i, (rule, _) in enumerate(cases)]
    report = apply(ws, segs, AS_OF)
    assert [r.size for r in report.runs] == [len(expected) for _, expected in cases]
    m = ws.table("memberships")
    rows = m.filter(m.exited_at.isnull()).to_pyarrow().to_pylist()
    for seg, (_, expected) in zip(segs, cases, strict=True):
        got = sorted(r["customer_id"] for r in rows if r["segment"] == seg.name)
        assert got == expected, seg.rule


def test_compile_rules_names_each_rule(ws) -> None:
    from kequn.segments.compile import compile_rules
    from kequn.segments.engine import _Context
    from kequn.segments.timing import resolve_as_of

    ctx = _Context(ws)
    rules = {
        "a": ctx.check(f"{CART} then orders within 1 day) > 0"),
        "b": ctx.check(f"{CART} then no orders within 1 day) > 0"),
        "c": ctx.check("count(events then events within 1 minute) > 0"),
    }
    moment = resolve_as_of(AS_OF, ws.config.timezone)
    table = compile_rules(rules, ctx.tables, moment, ctx.catalog)
    assert table.columns == ("customer_id", "a", "b", "c")
    rows = table.order_by("customer_id").to_pyarrow().to_pylist()
    assert [r["customer_id"] for r in rows if r["a"]] == ["s01", "s02", "s04", "s10"]
    assert [r["customer_id"] for r in rows if r["b"]] == ["s03", "s05", "s08", "s09", "s10"]
    assert [r["customer_id"] for r in rows if r["c"]] == ["s04"]
    with pytest.raises(ValueError, match="customer_id"):
        compile_rules({"customer_id": rules["a"]}, ctx.tables, moment, ctx.catalog)


@pytest.mark.parametrize(("rule", "as_of", "expected"), CASES)
def test_the_range_join_gives_the_same_members(ws, rule, as_of, expected) -> None:
    """Backends without an as-of join use the range join for every sequence."""
    from kequn.segments.compile import compile_rule
    from kequn.segments.engine import _Context
    from kequn.segments.timing import resolve_as_of

    ctx = _Context(ws)
    moment = resolve_as_of(as_of, ws.config.timezone)
    f = compile_rule(ctx.check(rule), ctx.tables, moment, ctx.catalog, asof_join=False)
    got = f.filter(f.member).order_by("customer_id").customer_id.to_pyarrow().to_pylist()
    assert got == expected
