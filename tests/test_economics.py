"""Campaign economics on a small hand-checked example: costs, CAC, LTV/CAC, funnel, ROI."""

from __future__ import annotations

import json
from datetime import date, datetime

import pyarrow as pa
import pytest

from kequn import InputError
from kequn.economics import economics, import_costs, list_costs
from kequn.store import TABLES

COSTS = """活动,渠道,开始日期,结束日期,人力成本,技术成本,物料成本
welcome,ads,2024-06-01,2024-06-30,600,200,200
winback,social,2024-06-01,2024-06-15,"300",0,
spring,ads,2024/05/01,2024/06/30,610,0,0
"""


def append(ws, table: str, rows: list[dict]) -> None:
    names = TABLES[table].names
    data = {n: [r.get(n) for r in rows] for n in names}
    ws.store.append(table, pa.table(data).cast(TABLES[table].to_pyarrow(), safe=False))


def order(oid: str, cid: str, at: str, amount: float) -> dict:
    return {
        "order_id": oid,
        "customer_id": cid,
        "ordered_at": datetime.fromisoformat(at),
        "amount": amount,
        "is_return": amount < 0,
    }


def delivery(did: str, cid: str, status: str, variant: str, at: str) -> dict:
    moment = datetime.fromisoformat(at)
    return {
        "delivery_id": did,
        "idempotency_key": f"key-{did}",
        "trigger": "welcome",
        "segment": "new_buyers",
        "customer_id": cid,
        "kind": "enter",
        "channel": "webhook",
        "variant": variant,
        "status": status,
        "created_at": moment,
        "sent_at": moment if status == "sent" else None,
    }


def event(eid: str, cid: str, kind: str, ref: str, at: str) -> dict:
    return {
        "event_id": eid,
        "customer_id": cid,
        "occurred_at": datetime.fromisoformat(at),
        "type": kind,
        "properties": json.dumps({"delivery_id": ref}),
    }


@pytest.fixture
def shop(ws, write):
    append(
        ws,
        "customers",
        [
            {"customer_id": "a", "channel": "ads"},
            {"customer_id": "b", "channel": "ads"},
            {"customer_id": "c", "channel": "ads"},
            {"customer_id": "d", "channel": "social"},
            {"customer_id": "e", "channel": "social"},
        ],
    )
    append(
        ws,
        "orders",
        [
            order("o1", "a", "2024-06-05 12:00", 200.0),
            order("o2", "a", "2024-06-10 12:00", 300.0),
            order("o3", "b", "2024-06-20 12:00", 400.0),
            order("o4", "c", "2024-05-10 12:00", 100.0),  # c was acquired in May
            order("o5", "c", "2024-06-20 12:00", 150.0),  # 12 days after c's message
            order("o6", "d", "2024-06-03 12:00", 100.0),
            order("o7", "d", "2024-06-25 12:00", 200.0),
            order("o8", "a", "2024-06-06 12:00", -50.0),  # a return is not revenue
        ],
    )
    append(
        ws,
        "clv_scores",
        [
            {"customer_id": c, "as_of": datetime(2024, 6, 30), "clv": v, "model": "bgnbd"}
            for c, v in (("a", 1500.0), ("b", 1100.0), ("d", 900.0))
        ],
    )
    append(
        ws,
        "triggers",
        [
            {
                "name": "welcome",
                "segment": "new_buyers",
                "on": "enter",
                "channel": "webhook",
                "config": "{}",
            }
        ],
    )
    append(
        ws,
        "deliveries",
        [
            delivery("d1", "a", "sent", "A", "2024-06-04 10:00"),
            delivery("d2", "b", "sent", "B", "2024-06-18 10:00"),
            delivery("d3", "c", "sent", "A", "2024-06-08 10:00"),
            delivery("d4", "e", "holdout", "holdout", "2024-06-08 10:00"),
            delivery("d5", "c", "dead", "A", "2024-06-09 10:00"),
        ],
    )
    append(
        ws,
        "events",
        [
            event("e1", "a", "message_open", "d1", "2024-06-04 11:00"),
            event("e2", "a", "message_open", "d1", "2024-06-04 12:00"),  # opened twice: once
            event("e3", "a", "message_click", "d1", "2024-06-04 12:01"),
            event("e4", "b", "email_open", "key-d2", "2024-06-18 11:00"),  # by idempotency key
            event("e5", "c", "message_open", "nope", "2024-06-08 11:00"),  # names no delivery
        ],
    )
    append(
        ws,
        "memberships",
        [
            {"segment": "new_buyers", "customer_id": c, "entered_at": datetime(2024, 6, 1)}
            for c in ("a", "b")
        ]
        + [
            {
                "segment": "new_buyers",
                "customer_id": "c",
                "entered_at": datetime(2024, 6, 1),
                "exited_at": datetime(2024, 6, 15),
            }
        ],
    )
    report = import_costs(ws, write("costs.csv", COSTS), now=datetime(2024, 7, 1))
    assert report["rows"] == 3
    assert (report["labour"], report["technology"], report["material"]) == (1510, 200, 200)
    return ws


AS_OF = "2024-06-30"


def _rows(ws, by: str) -> dict[str, dict]:
    report = economics(ws, by, start="2024-06-01", end="2024-06-30", as_of=AS_OF)
    return {r["key"]: r for r in report.rows}


def test_the_default_period_is_the_span_of_the_cost_lines(shop):
    report = economics(shop, "channel", as_of=AS_OF)
    assert (report.start, report.end) == (date(2024, 5, 1), date(2024, 6, 30))
    rows = {r["key"]: r for r in report.rows}
    assert rows["ads"]["cost"] == pytest.approx(1610.0)  # spring wholly inside
    assert rows["ads"]["acquired"] == 3  # c's first purchase (May 10) is inside too


def test_cac_and_ltv_per_channel(shop):
    rows = _rows(shop, "channel")
    ads, social = rows["ads"], rows["social"]
    # ads: welcome 1000 + spring prorated to June (30 of its 61 days × 610 = 300)
    assert ads["cost"] == pytest.approx(1300.0)
    assert ads["labour"] == pytest.approx(900.0)
    assert ads["acquired"] == 2  # a and b; c's first purchase was in May
    assert ads["cac"] == pytest.approx(650.0)
    assert ads["ltv"] == pytest.approx(1300.0)  # (1500 + 1100) / 2
    assert ads["ltv_cac"] == pytest.approx(2.0)
    assert ads["revenue"] == pytest.approx(900.0)  # a 500 + b 400 in June
    assert ads["roi"] == pytest.approx((900 - 1300) / 1300)
    assert social["cost"] == pytest.approx(300.0)
    assert social["acquired"] == 1
    assert social["cac"] == pytest.approx(300.0)
    assert social["ltv_cac"] == pytest.approx(3.0)
    assert social["roi"] == pytest.approx(0.0)


def test_campaign_funnel_revenue_and_roi(shop):
    rows = _rows(shop, "campaign")
    w = rows["welcome"]
    assert w["strategy"] == "new_buyers (enter) → webhook"
    assert (w["delivered"], w["opened"], w["clicked"], w["converted"]) == (3, 2, 1, 2)
    # a bought twice within 7 days of d1 (200 + 300), b once after d2 (400); c's order came
    # 12 days after d3: outside the attribution window
    assert w["revenue"] == pytest.approx(900.0)
    assert w["cost"] == pytest.approx(1000.0)
    assert w["roi"] == pytest.approx(-0.1)
    assert w["conversion_rate"] == pytest.approx(2 / 3)
    # cost lines without deliveries still show their cost; no trigger of that name
    assert rows["winback"]["cost"] == pytest.approx(300.0)
    assert rows["winback"]["strategy"] == "no trigger of this name"
    assert rows["spring"]["cost"] == pytest.approx(300.0)


def test_variants_share_the_cost_by_messages_sent(shop):
    rows = _rows(shop, "variant")
    a, b, h = rows["welcome / A"], rows["welcome / B"], rows["welcome / holdout"]
    assert (a["delivered"], a["converted"], a["revenue"]) == (2, 1, 500.0)
    assert a["cost"] == pytest.approx(1000 * 2 / 3)
    assert a["roi"] == pytest.approx((500 - 2000 / 3) / (2000 / 3))
    assert (b["delivered"], b["converted"], b["revenue"]) == (1, 1, 400.0)
    assert b["roi"] == pytest.approx(0.2)
    assert (h["delivered"], h["held_out"], h["converted_holdout"], h["cost"]) == (0, 1, 0, 0.0)
    assert h["conversion_rate"] == 0.0


def test_cac_per_segment(shop):
    rows = _rows(shop, "segment")
    s = rows["new_buyers"]
    assert s["strategy"] == "campaigns: welcome"
    assert s["acquired"] == 2  # a and b are members at as_of (c left) and first bought in June
    assert s["cost"] == pytest.approx(1000.0)
    assert s["cac"] == pytest.approx(500.0)
    assert s["ltv_cac"] == pytest.approx(1300 / 500)
    assert s["revenue"] == pytest.approx(900.0)
    assert s["roi"] == pytest.approx(-0.1)


def test_a_period_prorates_costs(shop):
    report = economics(shop, "channel", start="2024-06-01", end="2024-06-15", as_of=AS_OF)
    rows = {r["key"]: r for r in report.rows}
    # welcome 15/30 × 1000, spring 15/61 × 610 = 150; winback wholly inside
    assert rows["ads"]["cost"] == pytest.approx(500 + 150)
    assert rows["ads"]["acquired"] == 1  # a (June 5); b came on June 20
    assert rows["social"]["cost"] == pytest.approx(300.0)


def test_reimporting_a_file_replaces_its_rows(shop, write):
    import_costs(shop, write("costs.csv", COSTS), now=datetime(2024, 7, 2))
    assert len(list_costs(shop)) == 3
    assert list_costs(shop)[0]["period_start"] == date(2024, 5, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("campaign,period_start,period_end,labour\nx,2024-06-01,2024-05-01,1\n", "before"),
        ("campaign,period_start,period_end,labour\nx,2024-06-01,2024-06-31,1\n", "real date"),
        ("campaign,period_start,period_end,labour\nx,2024-06-01,2024-06-30,abc\n", "'abc'"),
        ("campaign,period_start,period_end,labour\nx,2024-06-01,2024-06-30,-5\n", "negative"),
        ("campaign,period_end,labour\nx,2024-06-30,1\n", "'period_start'"),
        ("campaign,period_start,period_end\nx,2024-06-01,2024-06-30\n", "no cost column"),
    ],
)
def test_bad_cost_files(ws, write, text, message):
    with pytest.raises(InputError, match=message):
        import_costs(ws, write("bad.csv", text))


def test_unknown_grouping(ws):
    with pytest.raises(InputError, match="did you mean 'channel'"):
        economics(ws, "chanel")
