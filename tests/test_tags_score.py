"""The behaviour score: weights, recency half-life, normalisation, levels, contributions."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pytest

from kequn import InputError
from kequn.asof import resolve_as_of
from kequn.segments import evaluate
from kequn.store import TABLES
from kequn.tags import (
    ScoreSpec,
    apply_tags,
    behaviour_scores,
    parse_tags,
    refresh_tags,
    score_summary,
)


def append(ws, table: str, rows: list[dict]) -> None:
    names = TABLES[table].names
    data = {n: [r.get(n) for r in rows] for n in names}
    ws.store.append(table, pa.table(data).cast(TABLES[table].to_pyarrow(), safe=False))


WEIGHTS = {"orders": 5, "add_to_cart": 2, "product_view": 1}


@pytest.fixture
def active(ws):
    append(ws, "customers", [{"customer_id": c} for c in ("c1", "c2", "c3", "c4")])

    def ev(cid, day, kind):
        return {
            "event_id": f"{cid}{day}{kind}",
            "customer_id": cid,
            "occurred_at": datetime(2024, 6, day, 10),
            "type": kind,
            "properties": json.dumps({}),
        }

    append(
        ws,
        "events",
        [
            ev("c1", 20, "product_view"),  # 10 days old: counts 0.5
            ev("c2", 10, "add_to_cart"),  # 20 days: 0.25 × 2
            ev("c2", 30, "product_view"),  # today: 1
            ev("c3", 30, "login"),  # not weighted
        ],
    )

    def order(oid, cid, day, ret=False):
        return {
            "order_id": oid,
            "customer_id": cid,
            "ordered_at": datetime(2024, 6, day, 9),
            "amount": 10.0,
            "is_return": ret,
        }

    append(
        ws,
        "orders",
        [
            order("o1", "c1", 30),
            order("o2", "c4", 20),
            order("o3", "c4", 20),
            order("o4", "c3", 30, ret=True),
        ],
    )
    return ws


def _scores(ws, normalise: str) -> dict[str, dict]:
    spec = ScoreSpec.parse(
        {"weights": WEIGHTS, "half_life_days": 10, "normalise": normalise}, "test"
    )
    at = resolve_as_of("2024-06-30", ws.config.timezone)
    return {r["customer_id"]: r for r in behaviour_scores(ws, spec, at).to_pyarrow().to_pylist()}


def test_raw_scores_by_hand(active):
    s = _scores(active, "minmax")
    # c1: order today 5 × 1 + view 10 days ago 1 × 0.5; c2: cart 2 × 0.25 + view 1;
    # c3: a return and a login count nothing; c4: two orders 10 days ago 2 × 5 × 0.5
    assert {c: r["raw"] for c, r in s.items()} == {"c1": 5.5, "c2": 1.5, "c3": 0.0, "c4": 5.0}


def test_minmax_and_percentile_normalisation_and_levels(active):
    s = _scores(active, "minmax")
    assert s["c1"]["score"] == 100.0
    assert s["c4"]["score"] == pytest.approx(5 / 5.5 * 100)
    assert s["c2"]["score"] == pytest.approx(1.5 / 5.5 * 100)
    assert s["c3"]["score"] == 0.0
    assert [s[c]["level"] for c in ("c1", "c4", "c2", "c3")] == ["core", "core", "low", "dormant"]
    p = _scores(active, "percentile")
    assert [p[c]["score"] for c in ("c3", "c2", "c4", "c1")] == pytest.approx(
        [0.0, 100 / 3, 200 / 3, 100.0]
    )
    assert [p[c]["level"] for c in ("c3", "c2", "c4", "c1")] == ["dormant", "low", "high", "core"]


def test_contributions_are_shown_with_the_weights(active):
    spec = ScoreSpec.parse({"weights": WEIGHTS, "half_life_days": 10}, "test")
    summary = score_summary(active, spec, resolve_as_of("2024-06-30", "Asia/Shanghai"))
    shares = {b["behaviour"]: (b["weight"], b["share"]) for b in summary["behaviours"]}
    # total raw 12: orders 10, carts 0.5, views 1.5
    assert shares == {
        "orders": (5.0, pytest.approx(10 / 12)),
        "add_to_cart": (2.0, pytest.approx(0.5 / 12)),
        "product_view": (1.0, pytest.approx(1.5 / 12)),
    }
    levels = {lv["level"]: (lv["label_zh"], lv["customers"]) for lv in summary["levels"]}
    assert levels == {
        "dormant": ("沉睡", 1),
        "low": ("低", 1),
        "medium": ("中", 0),
        "high": ("高", 1),
        "core": ("核心", 1),
    }


def test_score_tag_in_rules(active):
    (tag,) = parse_tags(
        {
            "tags": [
                {
                    "name": "activity",
                    "source": "score",
                    "score": {"weights": WEIGHTS, "half_life_days": 10},
                }
            ]
        },
        "t",
    )
    assert (tag.type, tag.layer) == ("score", "behaviour")
    apply_tags(active, [tag])
    refresh_tags(active, ["activity"], now=datetime(2024, 7, 1), as_of="2024-06-30")
    assert evaluate(active, "tag.activity >= 60", "2024-06-30") == ["c1", "c4"]


def test_bad_score_settings():
    with pytest.raises(InputError, match="normalise = 'zscore'"):
        ScoreSpec.parse({"normalise": "zscore"}, "t")
    with pytest.raises(InputError, match=r"weights.orders = -1"):
        ScoreSpec.parse({"weights": {"orders": -1}}, "t")
