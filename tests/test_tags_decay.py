"""Decayed interest tags: exact weights on a hand-made history, threshold, top-k, real time."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pytest

from kequn.asof import resolve_as_of
from kequn.store import TABLES
from kequn.tags import (
    InterestSpec,
    apply_tags,
    interest_weights,
    latest_values,
    parse_tags,
    refresh_tags,
    update_interests,
)


def append(ws, table: str, rows: list[dict]) -> None:
    names = TABLES[table].names
    data = {n: [r.get(n) for r in rows] for n in names}
    ws.store.append(table, pa.table(data).cast(TABLES[table].to_pyarrow(), safe=False))


def event(cid: str, at: str, kind: str, category: str | None = None) -> dict:
    props = {} if category is None else {"category": category}
    return {
        "event_id": f"{cid}-{at}-{kind}-{category}",
        "customer_id": cid,
        "occurred_at": datetime.fromisoformat(at),
        "type": kind,
        "properties": json.dumps(props, ensure_ascii=False),
    }


SPEC = InterestSpec.parse(
    {
        "events": {"product_view": 1, "add_to_cart": 3},
        "orders": 5,
        "alpha": 0.85,
        "period_days": 7,
        "threshold": 7,
        "top_k": 2,
    },
    "test",
)


@pytest.fixture
def history(ws):
    append(ws, "customers", [{"customer_id": c} for c in ("c1", "c2", "c3", "c4")])
    append(
        ws,
        "events",
        [
            # c1, as of 2024-06-30 with weekly periods counted back from that day:
            event("c1", "2024-06-30 20:00", "product_view", "美妆"),  # age 0 → period 0
            event("c1", "2024-06-24 09:00", "add_to_cart", "美妆"),  # age 6 → period 0
            event("c1", "2024-06-23 23:00", "product_view", "美妆"),  # age 7 → period 1
            event("c1", "2024-06-10 10:00", "add_to_cart", "美妆"),  # age 20 → period 2
            event("c1", "2024-06-29 10:00", "product_view", "母婴"),
            event("c1", "2024-06-29 11:00", "product_view", "母婴"),
            event("c1", "2024-07-01 08:00", "add_to_cart", "母婴"),  # after as_of: unseen
            event("c1", "2024-06-30 08:00", "login", "美妆"),  # not a weighted type
            event("c1", "2024-06-30 09:00", "product_view"),  # no category
            # c2: exactly the threshold in the current period
            event("c2", "2024-06-28 10:00", "add_to_cart", "美妆"),
            event("c2", "2024-06-28 11:00", "add_to_cart", "美妆"),
            event("c2", "2024-06-29 10:00", "product_view", "美妆"),
            # c3: three active interests, two kept (a tie is broken by the category name)
            *[event("c3", f"2024-06-2{d} 10:00", "add_to_cart", "母婴") for d in (5, 6, 7)],
            *[event("c3", f"2024-06-2{d} 11:00", "add_to_cart", "美妆") for d in (5, 6, 7)],
            *[event("c3", f"2024-06-2{d} 12:00", "product_view", "数码") for d in range(8)],
        ],
    )
    # c1 bought a 美妆 line 29 days before: period 4
    append(
        ws,
        "orders",
        [
            {
                "order_id": "o1",
                "customer_id": "c1",
                "ordered_at": datetime(2024, 6, 1, 12),
                "amount": 80.0,
                "is_return": False,
            },
            {  # a return adds nothing
                "order_id": "o2",
                "customer_id": "c1",
                "ordered_at": datetime(2024, 6, 2, 12),
                "amount": -80.0,
                "is_return": True,
            },
        ],
    )
    append(
        ws,
        "order_lines",
        [
            {"order_id": "o1", "line_no": 1, "category": "美妆", "amount": 80.0},
            {"order_id": "o2", "line_no": 1, "category": "美妆", "amount": -80.0},
        ],
    )
    return ws


def _weights(ws, as_of: str, spec: InterestSpec = SPEC) -> dict[tuple[str, str], dict]:
    at = resolve_as_of(as_of, ws.config.timezone)
    rows = interest_weights(ws, spec, at).to_pyarrow().to_pylist()
    return {(r["customer_id"], r["category"]): r for r in rows}


def _recursion(new_per_period: list[float], alpha: float) -> float:
    """w_t = α·w_{t−1} + new_t, oldest period first."""
    w = 0.0
    for new in new_per_period:
        w = alpha * w + new
    return w


def test_weights_equal_the_recursion_after_several_periods(history):
    w = _weights(history, "2024-06-30")
    # c1 美妆 per period, oldest first: period 4 (order line, 5), 3 (none), 2 (cart, 3),
    # 1 (view, 1), 0 (cart 3 + view 1)
    expected = _recursion([5, 0, 3, 1, 4], 0.85)
    assert expected == pytest.approx(9.62753125, abs=1e-12)  # worked by hand
    assert w[("c1", "美妆")]["weight"] == pytest.approx(expected, rel=1e-12)
    assert w[("c1", "母婴")]["weight"] == 2.0
    assert w[("c2", "美妆")]["weight"] == 7.0
    assert ("c4", "美妆") not in w  # no events, no weights
    # a week later nothing new happened: every weight decays by α once
    later = _weights(history, "2024-07-07")
    assert later[("c1", "美妆")]["weight"] == pytest.approx(expected * 0.85, rel=1e-12)
    # the 母婴 cart add of July 1 is seen now: period 0, weight 3, plus the views decayed
    assert later[("c1", "母婴")]["weight"] == pytest.approx(3 + 2 * 0.85, rel=1e-12)
    two = _weights(history, "2024-07-14")
    assert two[("c1", "美妆")]["weight"] == pytest.approx(expected * 0.85**2, rel=1e-12)


def test_exact_weights_with_a_binary_alpha(history):
    spec = InterestSpec.parse({**SPEC.as_dict(), "alpha": 0.5}, "test")
    w = _weights(history, "2024-06-30", spec)
    assert w[("c1", "美妆")]["weight"] == 4 + 1 / 2 + 3 / 4 + 5 / 16  # == 5.5625 exactly


def test_threshold_switches_the_interest_on(history):
    w = _weights(history, "2024-06-30")
    assert w[("c1", "美妆")]["active"] is True
    assert w[("c1", "母婴")]["active"] is False
    assert w[("c2", "美妆")]["active"] is True  # reaching N counts
    # two weeks on, c1's 美妆 interest has faded below 7 (9.6275 × 0.85² = 6.9559)
    assert _weights(history, "2024-07-14")[("c1", "美妆")]["active"] is False


def _tag(ws, top_k: int = 2) -> None:
    (tag,) = parse_tags(
        {
            "tags": [
                {
                    "name": "interests",
                    "source": "interest",
                    "interest": {**SPEC.as_dict(), "top_k": top_k},
                }
            ]
        },
        "test",
    )
    apply_tags(ws, [tag], now=datetime(2024, 6, 30))


def _values(ws, as_of: str) -> dict[str, tuple]:
    at = resolve_as_of(as_of, ws.config.timezone)
    rows = latest_values(ws, ["interests"], at).to_pyarrow().to_pylist()
    return {r["customer_id"]: (r["value"], r["number"]) for r in rows}


def test_top_k_tag_and_rules(history):
    from kequn.segments import evaluate

    _tag(history)
    runs = refresh_tags(history, now=datetime(2024, 7, 1, 2), as_of="2024-06-30")
    assert runs["interests"]["valued"] == 3
    values = _values(history, "2024-06-30")
    assert values["c1"] == ("美妆", pytest.approx(9.62753125, abs=1e-9))
    assert values["c2"] == ("美妆", 7.0)
    # 母婴 and 美妆 tie at 9 (the name breaks the tie), 数码 (8) is third: top 2 kept
    assert values["c3"] == ("母婴,美妆", 9.0)
    assert "c4" not in values
    assert evaluate(history, "tag.interests contains '美妆'", "2024-06-30") == ["c1", "c2", "c3"]
    assert evaluate(history, "tag.interests starts with '母婴'", "2024-06-30") == ["c3"]
    assert evaluate(history, "标签.interests is null", "2024-06-30") == ["c4"]
    # a week later every weight decayed (rows written for c1, c2, c3), but only c2's interests
    # changed: 7 × 0.85 is below the threshold; c1 and c3 keep their categories
    week = refresh_tags(history, now=datetime(2024, 7, 8, 2), as_of="2024-07-07")["interests"]
    assert (week["compared"], week["changed"], week["written"]) == (3, 1, 3)
    assert evaluate(history, "tag.interests is null", "2024-07-07") == ["c2", "c4"]
    assert evaluate(history, "tag.interests = '美妆'", "2024-06-30") == ["c1", "c2"]


def test_incremental_update_writes_only_the_customers_given(history):
    _tag(history)
    refresh_tags(history, now=datetime(2024, 7, 1, 2), as_of="2024-06-30")
    cart = [event("c4", f"2024-07-01 0{h}:00", "add_to_cart", "数码") for h in (1, 2, 3)]
    append(history, "events", cart)
    written = update_interests(
        history, "interests", ["c4", "c1"], as_of="2024-07-01T05:00", now=datetime(2024, 7, 1, 5)
    )
    # c4 gained 数码 (9); for c1 the day moved on, so the June 24 cart add is a period older
    assert written == 2
    values = _values(history, "2024-07-01T05:00")
    assert values["c4"] == ("数码", 9.0)
    assert values["c1"][1] == pytest.approx(_recursion([5, 3, 0, 4, 1], 0.85), rel=1e-12)
    assert values["c3"] == ("母婴,美妆", 9.0)  # untouched, still the full refresh's value
    # a full refresh at the same instant agrees with the incremental one for c4
    full = refresh_tags(history, now=datetime(2024, 7, 1, 6), as_of="2024-07-01T05:00")
    assert full["interests"]["written"] == 0
