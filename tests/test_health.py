"""Segment health: each component on data built to have a known defect.

Expected figures are worked out by hand from the data each test writes.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from kequn import init_workspace, open_workspace
from kequn.cli import app
from kequn.errors import InputError, WorkspaceError
from kequn.ingest import import_files
from kequn.insight.health import (
    COMPONENTS,
    DEFAULTS,
    customer_perception,
    data_quality,
    health,
    rule_fields,
    strategy_fit,
    timeliness,
)
from kequn.segments import Segment, apply
from kequn.segments.check import COMPUTED
from kequn.store import CUSTOMERS, EXPERIMENT_ASSIGNMENTS, ORDERS

START = datetime(2024, 6, 1)


def _table(schema, columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    arrays = {name: columns.get(name, [None] * n) for name in schema.names}
    return pa.table(arrays, schema=schema.to_pyarrow())


def _customers(ws, n: int = 100, **columns) -> list[str]:
    ids = [f"c{i:03d}" for i in range(n)]
    ws.store.append("customers", _table(CUSTOMERS, {"customer_id": ids, **columns}))
    return ids


def _orders(ws, customers: list[str], when: list[datetime], amount: float = 100.0) -> None:
    n = len(customers)
    ws.store.append(
        "orders",
        _table(
            ORDERS,
            {
                "order_id": [f"o{uuid.uuid4().hex[:12]}" for _ in customers],
                "customer_id": customers,
                "ordered_at": when,
                "amount": [amount] * n,
                "is_return": [False] * n,
            },
        ),
    )


def _reopen(ws, **health_settings):
    """Reopen the workspace with ``[health]`` settings changed in its kequn.toml."""
    path = ws.path
    ws.close()
    config = path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    for key, value in health_settings.items():
        text = re.sub(rf"^{key} = \S+", f"{key} = {value}", text, count=1, flags=re.M)
    config.write_text(text, encoding="utf-8")
    return open_workspace(path)


# --- which fields a rule reads ------------------------------------------------------------------


def test_rule_fields(ws) -> None:
    apply(ws, [Segment(name="base", rule="gender = 'F'")], as_of="2024-06-01")
    rule = (
        "city in ('北京') and attributes.会员等级 = '金卡' and days_since_last_order < 30 "
        "and count(events where properties.category = '美妆', last 30 days) > 0 "
        "and clv > 100 and in segment 'base'"
    )
    assert rule_fields(ws, rule) == {
        ("customers", "city"),
        ("customers", "attributes.会员等级"),
        ("orders", "ordered_at"),
        ("orders", "amount"),
        ("events", "occurred_at"),
        ("events", "properties.category"),
        ("customers", "gender"),
    }
    assert rule_fields(ws, "sum(returns.amount where channel = 'app', ever) < 0") == {
        ("orders", "ordered_at"),
        ("orders", "amount"),
        ("orders", "channel"),
    }


def test_every_computed_field_has_its_inputs(ws) -> None:
    for name in COMPUTED:
        assert rule_fields(ws, f"{name} > 1") <= {("orders", "ordered_at")}
        assert rule_fields(ws, f"{name} > 1")


# --- data quality ---------------------------------------------------------------------------------


def test_data_quality_missing_values(ws) -> None:
    # 20 of 100 customers have no city; a quarter of the 北京 ones lack the attributes key
    city = ["北京"] * 60 + ["上海"] * 20 + [None] * 20
    tier = [json.dumps({"会员等级": "金卡"}, ensure_ascii=False)] * 45 + ["{}"] * 55
    _customers(ws, city=city, attributes=tier)
    c = data_quality(ws, "city = '北京'")
    assert c.details["rates"] == {"missing": 0.2, "invalid": 0.0, "duplicate": 0.0,
                                  "quarantined": 0.0}  # fmt: skip
    assert c.score == pytest.approx(80.0)
    both = data_quality(ws, "city = '北京' and attributes.会员等级 = '金卡'")
    assert both.details["rates"]["missing"] == pytest.approx(0.55)  # the worst field
    assert both.score == pytest.approx(45.0)


def test_data_quality_duplicates_and_quarantine(ws, write) -> None:
    # 10 data rows: 2 repeat earlier rows exactly, 1 has an amount nobody can read
    lines = [
        "customer_id,order_id,ordered_at,amount",
        "c1,o1,2024-06-01,100",
        "c1,o1,2024-06-01,100",
        "c2,o2,2024-06-02,120",
        "c2,o2,2024-06-02,120",
        "c3,o3,2024-06-03,abc",
        "c4,o4,2024-06-04,80",
        "c5,o5,2024-06-05,90",
        "c6,o6,2024-06-06,60",
        "c7,o7,2024-06-07,70",
        "c8,o8,2024-06-08,50",
    ]
    path = write("orders.csv", "\n".join(lines) + "\n")
    report = import_files(ws, "orders", [path])
    assert (report.rows_read, report.duplicates, report.quarantined) == (
        10,
        2,
        {"unparseable amount": 1},
    )
    c = data_quality(ws, "sum(orders.amount, ever) > 100")
    assert c.details["tables"]["orders"] == {
        "rows_read": 10,
        "duplicate_rate": 0.2,
        "quarantined_rate": 0.1,
    }
    amount = next(f for f in c.details["fields"] if f["field"] == "amount")
    assert amount["invalid_rate"] == pytest.approx(0.1)
    # 100 × (1 − 0) × (1 − 0.1) × (1 − 0.2) × (1 − 0.1)
    assert c.score == pytest.approx(100 * 0.9 * 0.8 * 0.9)
    apply(ws, [Segment(name="big", rule="sum(orders.amount, ever) > 100")], as_of="2024-06-30")
    kinds = {w.kind: w for w in health(ws, "big").segments[0].warnings}
    assert "duplicate" in kinds["data_quality"].message
    assert "--keep-duplicates" in kinds["data_quality"].action


def test_event_property_missing_among_types_that_carry_it(ws) -> None:
    from kequn.store import EVENTS

    props = [json.dumps({"category": "美妆"}, ensure_ascii=False)] * 3 + ["{}"] + ["{}"] * 6
    types = ["product_view"] * 4 + ["page_view"] * 6
    ws.store.append(
        "events",
        _table(
            EVENTS,
            {
                "event_id": [f"e{i}" for i in range(10)],
                "customer_id": ["c1"] * 10,
                "occurred_at": [START] * 10,
                "type": types,
                "properties": props,
            },
        ),
    )
    c = data_quality(ws, "count(events where properties.category = '美妆', ever) > 0")
    category = next(f for f in c.details["fields"] if f["field"] == "properties.category")
    assert category["missing_rate"] == pytest.approx(0.25)  # 1 of the 4 product views


# --- timeliness -----------------------------------------------------------------------------------


def test_timeliness_lag_against_the_newest_row(ws) -> None:
    ids = _customers(ws, 10)
    _orders(ws, ids, [START + timedelta(days=i) for i in range(10)])  # newest: June 10 00:00
    rule = "count(orders, ever) > 0"
    # evaluated at the day June 3 = up to June 4 00:00; the data runs 6 days further
    c = timeliness(ws, rule, datetime(2024, 6, 3), staleness_days=7)
    assert c.details["lag_days"] == pytest.approx(6.0)
    assert c.score == pytest.approx(100 * (1 - 6 / 14))
    assert timeliness(ws, rule, datetime(2024, 6, 10), 7).score == 100.0
    assert timeliness(ws, rule, datetime(2024, 6, 9, 12), 7).details["lag_days"] == 0.5
    assert timeliness(ws, rule, datetime(2024, 5, 1), 7).score == 0.0
    assert timeliness(ws, rule, None, 7).score == 0.0


def test_stale_segment_warns_and_config_changes_the_threshold(ws) -> None:
    ids = _customers(ws, 10)
    _orders(ws, ids, [START + timedelta(days=i) for i in range(10)])
    apply(ws, [Segment(name="buyers", rule="count(orders, ever) > 0")], as_of="2024-06-01")
    seg = health(ws, "buyers").segments[0]
    assert seg.as_dict()["components"]["timeliness"]["details"]["lag_days"] == 8.0
    assert "stale" in [w.kind for w in seg.warnings]
    ws = _reopen(ws, staleness_days=30, min_segment_size=1)
    try:
        seg = health(ws, "buyers").segments[0]
        assert [w.kind for w in seg.warnings] == []
        fresh = next(c for c in seg.components if c.name == "timeliness")
        assert fresh.score == pytest.approx(100 * (1 - 8 / 60))
    finally:
        ws.close()


# --- strategy fit ---------------------------------------------------------------------------------


def _assign(ws, segment: str, variant: str, ids: list[str], at: datetime) -> None:
    n = len(ids)
    ws.store.append(
        "experiment_assignments",
        _table(
            EXPERIMENT_ASSIGNMENTS,
            {
                "experiment": ["spring"] * n,
                "customer_id": ids,
                "variant": [variant] * n,
                "trigger": ["t"] * n,
                "segment": [segment] * n,
                "assigned_at": [at] * n,
            },
        ),
    )


def test_strategy_fit_against_the_control_group(ws) -> None:
    ids = _customers(ws, 200)
    apply(ws, [Segment(name="all", rule="true")], as_of="2024-06-01")
    treated, control = ids[:100], ids[100:]
    _assign(ws, "all", "coupon", treated, START)
    _assign(ws, "all", "holdout", control, START)
    # 40 treated and 20 control customers buy within 7 days; 10 more treated on day 9 (late)
    buyers = treated[:40] + control[:20]
    _orders(ws, buyers, [START + timedelta(days=2)] * len(buyers))
    _orders(ws, treated[40:50], [START + timedelta(days=9)] * 10)
    c = strategy_fit(ws, "all", as_of="2024-06-30")
    assert c.details["treated"] == {"assigned": 100, "converted": 40, "rate": 0.4}
    assert c.details["control"] == {"assigned": 100, "converted": 20, "rate": 0.2}
    pooled = 60 / 200
    z = (0.4 - 0.2) / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert c.details["z"] == pytest.approx(z, abs=1e-3)
    assert c.score == pytest.approx(100 * 0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert c.score > 99
    # follow-up periods not over by as_of are not counted
    assert strategy_fit(ws, "all", as_of="2024-06-05") is None


def test_strategy_fit_not_measured_and_weights_renormalised(ws) -> None:
    _customers(ws, 10, city=["北京"] * 10)
    apply(ws, [Segment(name="bj", rule="city = '北京'")], as_of="2024-06-01")
    seg = health(ws, "bj").segments[0]
    out = seg.as_dict()
    fit = out["components"]["strategy_fit"]
    assert fit["measured"] is False and fit["score"] is None
    assert fit["summary"] == "not measured: no campaigns yet"
    assert out["components"]["perception"]["measured"] is False
    # data quality and timeliness carry the index: 0.3 and 0.2 → 0.6 and 0.4
    assert out["components"]["data_quality"]["used_weight"] == pytest.approx(0.6)
    assert out["components"]["timeliness"]["used_weight"] == pytest.approx(0.4)
    assert fit["used_weight"] == 0 and fit["weight"] == COMPONENTS["strategy_fit"]
    # no orders or events; customers carry no update time: timeliness is full
    assert out["index"] == pytest.approx(100.0)
    _assign(ws, "bj", "coupon", [f"c{i:03d}" for i in range(5)], START)
    seg = health(ws, "bj", as_of="2024-06-30").segments[0]
    assert "control group" in seg.as_dict()["components"]["strategy_fit"]["summary"]


# --- customer perception --------------------------------------------------------------------------


def test_perception_from_nps(ws) -> None:
    # members c000..c009: 5 promoters, 3 passives, 2 detractors → NPS +30 → score 65
    answers = [10, 9, 9, 10, 9, 8, 7, 7, 3, 6] + [0] * 10
    attributes = [json.dumps({"NPS": str(v)}) for v in answers]
    _customers(ws, 20, attributes=attributes, city=["北京"] * 10 + ["上海"] * 10)
    apply(ws, [Segment(name="bj", rule="city = '北京'")], as_of="2024-06-01")
    c = customer_perception(ws, "bj")
    assert c.details["nps"]["field"] == "attributes.NPS"
    assert c.details["nps"]["members"] == {"answers": 10, "nps": 30.0}
    assert c.details["nps"]["everyone"] == {"answers": 20, "nps": -35.0}  # 5 − 12 of 20
    assert c.score == pytest.approx(65.0)
    report = health(ws, "bj")
    assert report.segments[0].as_dict()["components"]["perception"]["score"] == 65.0


def test_perception_from_a_satisfaction_column_with_a_warning(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    try:
        ids = _customers(ws, 8, city=["北京"] * 4 + ["上海"] * 4)
        ws.con.raw_sql('ALTER TABLE customers ADD COLUMN "满意度" DOUBLE')  # as an import adds
        values = [2, 2, 1, 3, 5, 5, 4, 5]  # members (北京) mean 2 on 1–5 → 25
        for cid, v in zip(ids, values, strict=True):
            ws.store.duck.execute(
                'UPDATE customers SET "满意度" = ? WHERE customer_id = ?', [v, cid]
            )
        apply(ws, [Segment(name="bj", rule="city = '北京'")], as_of="2024-06-01")
        seg = health(ws, "bj").segments[0]
        c = next(c for c in seg.components if c.name == "perception")
        assert c.details["satisfaction"]["scale"] == [1, 5]
        assert c.details["satisfaction"]["members"] == {"answers": 4, "mean": 2.0}
        assert c.score == pytest.approx(25.0)
        assert "perception" in [w.kind for w in seg.warnings]
    finally:
        ws.close()


# --- size, overlap and count ----------------------------------------------------------------------


def test_small_near_duplicate_and_too_many(ws) -> None:
    ws = _reopen(ws, min_segment_size=5, jaccard_threshold=0.85, max_segments=2)
    try:
        _customers(ws, 20, city=["北京"] * 10 + ["上海"] * 7 + ["广州"] * 3)
        apply(
            ws,
            [
                Segment(name="bj", rule="city = '北京'"),
                Segment(name="bj2", rule="city = '北京' and customer_id != 'c009'"),  # 9 of 10
                Segment(name="gz", rule="city = '广州'"),  # 3 members
            ],
            as_of="2024-06-01",
        )
        report = health(ws)
        kinds = {(w.kind, w.segments) for w in report.warnings}
        assert ("near_duplicate", ("bj", "bj2")) in kinds  # Jaccard 9/10
        assert ("too_many", ("bj", "bj2", "gz")) in kinds
        small = {s.segment: [w.kind for w in s.warnings] for s in report.segments}
        assert "small" in small["gz"] and "small" not in small["bj"]
        assert all(w.action for s in report.segments for w in s.warnings)
        assert all(w.action for w in report.warnings)
        ws2 = _reopen(ws, jaccard_threshold=0.95)  # 0.9 is below it: no pair
        ws = ws2
        assert [w.kind for w in health(ws).warnings] == ["too_many"]
        only = health(ws, "gz")
        assert only.warnings == ()  # gz is in no near-duplicate pair; the count is global
        data = report.as_dict()
        assert data["index"] == pytest.approx(
            sum(s["index"] for s in data["segments"]) / 3, abs=0.05
        )
        assert data["settings"]["max_segments"] == 2
    finally:
        ws.close()


def test_errors(ws) -> None:
    with pytest.raises(InputError, match="unknown segment 'nope'"):
        health(ws, "nope")
    ws = _reopen(ws, jaccard_threshold=2)
    try:
        with pytest.raises(WorkspaceError, match="jaccard_threshold"):
            health(ws)
    finally:
        ws.close()


def test_empty_workspace_and_default_settings(ws) -> None:
    report = health(ws)
    assert ws.config.raw["health"] == DEFAULTS == report.settings  # the template says them
    assert report.as_dict() == {
        "index": None,
        "segments": [],
        "warnings": [],
        "settings": report.settings,
    }


# --- CLI ------------------------------------------------------------------------------------------


def test_cli(ws) -> None:
    _customers(ws, 10, city=["北京"] * 6 + [None] * 4)
    apply(ws, [Segment(name="bj", rule="city = '北京'")], as_of="2024-06-01")
    runner = CliRunner()
    result = runner.invoke(app, ["health", "--workspace", str(ws.path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    seg = data["segments"][0]
    assert seg["segment"] == "bj" and seg["size"] == 6
    assert seg["components"]["data_quality"]["score"] == pytest.approx(60.0)
    assert list(seg["components"]) == list(COMPONENTS)  # the JSON contract (docs/health.md)
    assert set(data) == {"index", "segments", "warnings", "settings"}
    assert set(seg) == {"segment", "size", "last_evaluated", "index", "components", "warnings"}
    for c in seg["components"].values():
        assert set(c) == {"score", "measured", "weight", "used_weight", "summary", "details"}
    assert set(seg["warnings"][0]) == {"kind", "segments", "message", "action"}
    overview = runner.invoke(app, ["health", "--workspace", str(ws.path)])
    assert overview.exit_code == 0 and "segment health (overall 76/100)" in overview.output
    text = runner.invoke(app, ["health", "bj", "--workspace", str(ws.path)])
    assert text.exit_code == 0, text.output
    assert "data_quality" in text.output and "not measured: no campaigns yet" in text.output
    assert "city" in text.output  # the warning names the field and what to do
    bad = runner.invoke(app, ["health", "nope", "--workspace", str(ws.path)])
    assert bad.exit_code == 2 and "unknown segment 'nope'" in bad.output
