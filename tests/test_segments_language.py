"""Every construct of the rule language, with members checked by hand on a small workspace.

The data is in ``test_segments_fixtures.py``; as_of is 2024-06-30 unless a test says so.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from test_segments_fixtures import ALL, AS_OF, copy_workspace, template

from kequn import open_workspace
from kequn.segments import Segment, count, evaluate, format_rule, parse_rule
from kequn.segments.nodes import And, Compare, Field, Literal, Not, Or
from kequn.segments.timing import add_months, resolve_as_of


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = open_workspace(template(tmp_path_factory))
    yield workspace
    workspace.close()


def others(*ids: str) -> list[str]:
    return [c for c in ALL if c not in ids]


CASES = [
    # --- attributes -----------------------------------------------------------------------
    ("city = '北京'", ["c01", "c03", "c07"]),
    ("city == '北京'", ["c01", "c03", "c07"]),
    # != is a comparison: false where city is missing (c05)
    ("city != '北京'", ["c02", "c04", "c06", "c08", "c09", "c10"]),
    ("city <> '北京'", ["c02", "c04", "c06", "c08", "c09", "c10"]),
    # not (...) is the complement, missing city included
    ("not city = '北京'", others("c01", "c03", "c07")),
    ("city in ('上海', '深圳')", ["c02", "c04", "c09"]),
    ("city not in ('北京', '上海')", ["c04", "c06", "c08", "c10"]),
    ("city is null", ["c05"]),
    ("city is not null", others("c05")),
    ("email contains 'example.org'", ["c05"]),
    ("email not contains 'example.com'", ["c05"]),  # c04 has no e-mail: false
    ("name starts with '张'", ["c01"]),
    ("email ends with '.org'", ["c05"]),
    ("name not starts with 'T'", others("c04")),
    # text compares by code point: 上 U+4E0A < 北 U+5317 < 广 U+5E7F < 成 U+6210 < 杭 < 深
    ("city > '北京'", ["c04", "c06", "c08", "c10"]),
    ("created_at >= '2024-06-01'", ["c02", "c09"]),
    ("created_at between '2024-01-01' and '2024-02-29'", ["c04", "c10"]),
    ("created_at > '2024-05-20 12:00'", ["c02", "c09"]),
    ("birth_date < '1991-01-01'", ["c01", "c04"]),
    ("birth_date is null", ["c03", "c05", "c06", "c07", "c08", "c09", "c10"]),
    ("attributes.会员等级 in ('金卡', '银卡')", ["c01", "c03"]),
    ("attributes.score >= 80", ["c01"]),
    ("attributes.会员等级 is null", others("c01", "c03")),
    # --- order aggregates -----------------------------------------------------------------
    # window edge: c08 ordered 2024-05-31 (30 days before: outside), c09 on 2024-06-01 00:00
    ("count(orders, last 30 days) >= 1", ["c01", "c02", "c04", "c09"]),
    ("count(orders, last 31 days) >= 1", ["c01", "c02", "c04", "c08", "c09"]),
    ("count(orders, last 1 months) >= 1", ["c01", "c02", "c04", "c09"]),
    ("count(orders, last 5 weeks) >= 1", ["c01", "c02", "c04", "c08", "c09"]),
    # c01's order of 2024-07-01 is after as_of and never counted; c07 only returned
    ("count(orders) = 0", ["c06", "c07", "c10"]),
    ("count(orders, ever) = 0", ["c06", "c07", "c10"]),
    ("count(returns) > 0", ["c02", "c07"]),
    ("count(all_orders, last 30 days) >= 2", ["c01", "c02"]),
    ("count(all_orders where is_return = true) > 0", ["c02", "c07"]),
    ("count(orders where channel = 'store') > 0", ["c01", "c04"]),
    ("sum(orders.amount, last 12 months) > 1000", ["c01", "c03"]),
    ("sum(orders.amount) >= 3500", ["c03"]),
    # the sum over no rows is 0; returns count with all_orders
    ("sum(all_orders.amount) = 0", ["c02", "c06", "c10"]),
    ("avg(orders.amount) > 400", ["c01", "c03"]),
    ("avg(orders.amount) is null", ["c06", "c07", "c10"]),
    ("max(orders.amount, last 30 days) >= 150", ["c01", "c04"]),
    ("min(orders.amount) < 70", ["c05"]),
    ("max(orders.ordered_at) >= '2024-06-25'", ["c01", "c04"]),
    ("count(orders, between '2023-12-31' and '2024-01-10') >= 1", ["c01", "c03"]),
    ("count(orders, last 2 years) >= 2", ["c01", "c03"]),
    # --- event aggregates and JSON properties ---------------------------------------------
    (
        "count(events where type = 'product_view' and properties.category = '美妆', "
        "last 30 days) > 0",
        ["c01", "c10"],
    ),
    ("count(events where type = 'product_view', last 30 days) >= 3", ["c10"]),
    (
        "count_distinct(events.properties.sku where type = 'product_view', last 30 days) >= 2",
        ["c01", "c10"],
    ),
    ("count_distinct(events.type) >= 2", ["c01"]),
    # nested JSON; the event at 23:59:59 on the as_of day counts
    ("count(events where properties.detail.color = '红') > 0", ["c05"]),
    ("count(events where properties.category is null and type = 'product_view') > 0", ["c03"]),
    ("sum(events.properties.price) > 250", ["c01"]),
    ("max(events.properties.price) between 100 and 200", ["c01"]),
    ("count(events where properties.sku in ('A1', 'C1'), last 30 days) > 0", ["c01", "c05", "c10"]),
    ("count(events) = 0", ["c04", "c06", "c07", "c08"]),
    # --- computed fields ------------------------------------------------------------------
    ("days_since_last_order < 30", ["c01", "c02", "c04", "c09"]),
    ("days_since_last_order = 30", ["c08"]),
    ("days_since_first_order >= 365", ["c03"]),
    ("days_since_last_order is null", ["c06", "c07", "c10"]),
    # --- has done X but not Y ---------------------------------------------------------------
    (
        "count(events where type = 'add_to_cart', last 7 days) > 0 "
        "and count(orders, last 7 days) = 0",
        ["c05"],
    ),
    (
        "count(events where type = 'product_view', last 30 days) > 0 and not "
        "count(orders, last 30 days) > 0",
        ["c03", "c10"],
    ),
    # --- logic ------------------------------------------------------------------------------
    ("true", ALL),
    ("false", []),
    ("city = '北京' or city = '上海' and gender = '男'", ["c01", "c03", "c07"]),
    ("(city = '北京' or city = '上海') and gender = '女'", ["c02", "c03", "c09"]),
    ("not not city = '北京'", ["c01", "c03", "c07"]),
    ("not (city = '北京' or city is null)", ["c02", "c04", "c06", "c08", "c09", "c10"]),
    ("# a comment\ncity = '北京'\n  and channel = 'app'  # app users", ["c01", "c03"]),
    # --- Chinese keywords, quotes and punctuation --------------------------------------------
    ("city = ‘北京’ 且 channel = “app”", ["c01", "c03"]),
    ("city = '北京' 或 city 为空", ["c01", "c03", "c05", "c07"]),
    ("非 city = '北京'", others("c01", "c03", "c07")),
    ("city 属于 （'上海'，'深圳'）", ["c02", "c04", "c09"]),
    ("city 不属于 ('北京', '上海')", ["c04", "c06", "c08", "c10"]),
    ("email 包含 'example.org'", ["c05"]),
    ("name 开头是 '张'", ["c01"]),
    ("city 不为空 且 city 介于 '上海' 和 '北京'", ["c01", "c02", "c03", "c07", "c09"]),
    ("计数(订单, 最近 30 天) >= 1", ["c01", "c02", "c04", "c09"]),
    ("总和(订单.amount, 最近 12 个月) > 1000", ["c01", "c03"]),
    ("去重计数(事件.properties.sku 其中 type = 'product_view', 最近 4 周) >= 2", ["c01", "c10"]),
    ("COUNT(Orders, LAST 30 DAYS) >= 1 AND City = '北京'", []),  # field names are exact
]


@pytest.mark.parametrize(("rule", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_construct(ws, rule: str, expected: list[str]) -> None:
    if rule.startswith("COUNT(Orders"):
        with pytest.raises(ValueError, match="unknown field 'City'"):
            evaluate(ws, rule, AS_OF)
        return
    assert evaluate(ws, rule, AS_OF) == sorted(expected)


def test_instant_as_of_moves_the_window(ws) -> None:
    rule = "count(events where type = 'add_to_cart', last 1 days) > 0"
    # a day: 2024-06-30 00:00 … 23:59:59 — c05's add to cart at 23:59:59 counts
    assert evaluate(ws, rule, "2024-06-30") == ["c05"]
    # an instant: the 24 hours up to 12:00; c01's (06-29 09:00) and c05's are outside
    assert evaluate(ws, rule, "2024-06-30T12:00") == []
    assert evaluate(ws, rule, datetime(2024, 6, 29, 10, 0)) == ["c01"]


def test_aware_as_of_is_converted_to_the_workspace_zone(ws) -> None:
    # 16:00 UTC is 2024-07-01 00:00 in Asia/Shanghai: e07 (c05, 07-01 00:00:00) is included
    rule = "count(events where type = 'product_view', last 1 days) > 0"
    assert evaluate(ws, rule, "2024-06-30T16:00:00+00:00") == ["c05"]
    assert evaluate(ws, rule, "2024-06-30T15:59:59+00:00") == []


def test_later_as_of_sees_later_orders(ws) -> None:
    assert evaluate(ws, "sum(orders.amount, last 7 days) > 5000", "2024-07-01") == ["c01"]
    assert evaluate(ws, "sum(orders.amount, last 7 days) > 5000", AS_OF) == []


def test_date_objects_and_count(ws) -> None:
    assert count(ws, "city = '北京'", date(2024, 6, 30)) == 3
    assert count(ws, "true", AS_OF) == len(ALL)


def test_in_segment_reuses_other_definitions(ws) -> None:
    segs = [
        Segment(name="北京客户", rule="city = '北京'"),
        Segment(name="recent", rule="count(orders, last 30 days) > 0"),
        Segment(name="bj_recent", rule="in segment '北京客户' and in segment recent"),
    ]
    assert evaluate(ws, "bj_recent", AS_OF, segments=segs) == ["c01"]
    assert evaluate(ws, "属于分群 '北京客户' 且 不属于分群 'recent'", AS_OF, segments=segs) == [
        "c03",
        "c07",
    ]
    assert evaluate(ws, segs[2], AS_OF, segments=segs) == ["c01"]


def test_parsed_nodes_evaluate_too(ws) -> None:
    node = And(
        (
            Compare(Field(("city",)), "=", Literal("北京")),
            Not(Compare(Field(("channel",)), "=", Literal("web"))),
        )
    )
    assert evaluate(ws, node, AS_OF) == ["c01", "c03"]


def test_rfm_fields_use_the_latest_run_at_or_before_as_of(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from kequn.features.rfm import save_rfm

    ws = copy_workspace(tmp_path_factory, tmp_path)
    save_rfm(ws, as_of=AS_OF)
    scores = ws.table("rfm_scores").to_pyarrow().to_pylist()
    high_r = sorted(r["customer_id"] for r in scores if r["r_score"] >= 4)
    assert evaluate(ws, "r_score >= 4", AS_OF) == high_r
    champions = sorted(r["customer_id"] for r in scores if r["rfm_segment"] == "champions")
    assert evaluate(ws, "rfm_segment = 'champions'", AS_OF) == champions
    # a day before the only run: no scores yet, so no customer has an r_score
    assert evaluate(ws, "r_score >= 1", "2024-06-29") == []
    assert evaluate(ws, "r_score is null", "2024-06-29") == ALL
    ws.close()


def test_equal_aggregates_share_one_column() -> None:
    a = parse_rule("count(orders, last 30 days) > 1 or count(orders, last 30 days) = 0")
    assert isinstance(a, Or)
    assert a.items[0].left == a.items[1].left  # spans differ, meaning is the same


@pytest.mark.parametrize(
    "rule",
    [
        "city = '北京' and (channel = 'app' or not gender = '男')",
        "count(events where type = 'v' and properties.a.b = 'x''y', last 2 weeks) >= 1",
        "sum(orders.amount, between '2024-01-01' and '2024-03-31') between 1.5 and 200",
        "attributes.等级 not in ('金卡', '银卡') or in segment 'vip'",
        "email is not null and name not contains '测试' and days_since_last_order > -1",
    ],
)
def test_format_reads_back(rule: str) -> None:
    node = parse_rule(rule)
    assert parse_rule(format_rule(node)) == node


def test_add_months_clamps_to_the_month_end() -> None:
    assert add_months(datetime(2024, 3, 31), -1) == datetime(2024, 2, 29)
    assert add_months(datetime(2024, 1, 15), -13) == datetime(2022, 12, 15)


def test_as_of_forms() -> None:
    day = resolve_as_of("2024-06-30", "Asia/Shanghai")
    assert (day.day, day.end, day.inclusive) == (date(2024, 6, 30), datetime(2024, 7, 1), False)
    moment = resolve_as_of("2024-06-30T08:00:00Z", "Asia/Shanghai")
    assert (moment.end, moment.inclusive) == (datetime(2024, 6, 30, 16, 0), True)
    with pytest.raises(ValueError, match="not a date"):
        resolve_as_of("yesterday", "Asia/Shanghai")
