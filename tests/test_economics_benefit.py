"""The segmentation benefit matrix: defaults from the data, user scores, the 3.5 boundary."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pytest

from kequn import InputError, init_workspace, open_workspace
from kequn.economics import benefit, import_costs
from kequn.economics.benefit import cycle_score, roi_score
from kequn.store import TABLES

SEGMENTATIONS = """
[segmentations.value_tiers]
segments = ["vip"]
market_maturity = 4
product_standardisation = 3
"""


def append(ws, table: str, rows: list[dict]) -> None:
    names = TABLES[table].names
    data = {n: [r.get(n) for r in rows] for n in names}
    ws.store.append(table, pa.table(data).cast(TABLES[table].to_pyarrow(), safe=False))


@pytest.fixture
def matrix(tmp_path, write):
    ws = init_workspace(tmp_path / "bm")
    june = datetime(2024, 6, 1)
    append(ws, "customers", [{"customer_id": c, "created_at": june} for c in "abcd"])
    append(
        ws,
        "events",
        [
            {  # a's first touch is this event, before the customer record
                "event_id": "e1",
                "customer_id": "a",
                "occurred_at": datetime(2024, 5, 20, 9),
                "type": "product_view",
                "properties": "{}",
            },
            {  # c's event comes after the record: the record is the first touch
                "event_id": "e2",
                "customer_id": "c",
                "occurred_at": datetime(2024, 6, 2, 9),
                "type": "product_view",
                "properties": "{}",
            },
        ],
    )

    def order(oid, cid, day, amount):
        return {
            "order_id": oid,
            "customer_id": cid,
            "ordered_at": datetime(2024, 6, day, 12),
            "amount": amount,
            "is_return": False,
        }

    # days from first touch to first order: a 21 (May 20 → June 10), b 3, c 29; d never bought
    append(
        ws,
        "orders",
        [order("o1", "a", 10, 2500.0), order("o2", "b", 4, 50.0), order("o3", "c", 30, 80.0)],
    )
    append(ws, "segments", [{"name": "vip", "rule": "count(orders) > 0"}])
    append(
        ws,
        "memberships",
        [{"segment": "vip", "customer_id": c, "entered_at": june} for c in "abcd"],
    )
    append(
        ws,
        "triggers",
        [
            {
                "name": "vip_push",
                "segment": "vip",
                "on": "enter",
                "channel": "webhook",
                "config": json.dumps({}),
            }
        ],
    )
    append(
        ws,
        "deliveries",
        [
            {
                "delivery_id": "d1",
                "idempotency_key": "k1",
                "trigger": "vip_push",
                "segment": "vip",
                "customer_id": "a",
                "status": "sent",
                "created_at": datetime(2024, 6, 9, 10),
                "sent_at": datetime(2024, 6, 9, 10),
            }
        ],
    )
    # ROI of vip_push: (2500 − 1000) / 1000 = 1.5
    costs = write(
        "costs.csv",
        "campaign,channel,period_start,period_end,labour\nvip_push,,2024-06-01,2024-06-30,1000\n",
    )
    import_costs(ws, costs)
    ws.close()
    config = tmp_path / "bm" / "kequn.toml"
    config.write_text(config.read_text(encoding="utf-8") + SEGMENTATIONS, encoding="utf-8")
    ws = open_workspace(tmp_path / "bm")
    yield ws
    ws.close()


AS_OF = "2024-06-30"


def test_defaults_from_the_data(matrix):
    report = benefit(matrix, "value_tiers", as_of=AS_OF)
    dims = report["dimensions"]
    assert dims["decision_cycle"]["score"] == 3.0  # median of 21, 3, 29 days is 21 → ≤ 30
    assert dims["decision_cycle"]["source"] == "data"
    assert "median 21 days" in dims["decision_cycle"]["basis"]
    assert "over 3 members" in dims["decision_cycle"]["basis"]
    assert dims["segment_roi"]["score"] == 4.0  # ROI 1.5 → [1, 2)
    assert dims["segment_roi"]["basis"].startswith("ROI 1.50")
    assert dims["market_maturity"] == {**dims["market_maturity"], "score": 4.0, "source": "user"}


def test_exactly_three_and_a_half_keeps_the_segmentation(matrix):
    report = benefit(matrix, "value_tiers", as_of=AS_OF)
    assert report["overall"] == 3.5  # (4 + 3 + 3 + 4) / 4
    assert report["pause"] is False
    assert report["recommendation"].startswith("keep")


def test_below_three_and_a_half_recommends_pausing_and_says_why(matrix):
    report = benefit(matrix, "value_tiers", as_of=AS_OF, scores={"product_standardisation": 2})
    assert report["overall"] == 3.25
    assert report["pause"] is True
    assert report["low"] == ["product_standardisation", "decision_cycle"]
    text = report["recommendation"]
    assert text.startswith("pause or simplify: overall 3.25 is below 3.5")
    assert "product_standardisation 2, decision_cycle 3" in text
    # a user score also overrides a computed one; the computed value stays visible
    over = benefit(matrix, "value_tiers", as_of=AS_OF, scores={"segment_roi": 5})
    assert over["dimensions"]["segment_roi"]["score"] == 5.0
    assert over["dimensions"]["segment_roi"]["computed"] == 4


def test_unset_dimensions_count_as_neutral(matrix, write):
    path = write("seg.toml", '[segmentations.simple]\nsegments = ["vip"]\n')
    report = benefit(matrix, "simple", file=path, as_of=AS_OF)
    assert report["dimensions"]["market_maturity"]["source"] == "assumed"
    assert report["overall"] == (3 + 3 + 3 + 4) / 4


def test_score_mappings_at_their_bounds():
    assert [cycle_score(d) for d in (0, 1, 1.5, 7, 30, 30.5, 90, 91)] == [1, 1, 2, 2, 3, 4, 4, 5]
    assert [roi_score(r) for r in (-0.1, 0, 0.49, 0.5, 1, 1.99, 2)] == [1, 2, 2, 3, 4, 4, 5]


def test_errors_name_what_is_wrong(matrix, write):
    with pytest.raises(InputError, match="unknown segmentation 'value_tier'; did you mean"):
        benefit(matrix, "value_tier")
    with pytest.raises(InputError, match="scores are numbers from 1 to 5"):
        benefit(matrix, "value_tiers", scores={"market_maturity": 6})
    with pytest.raises(InputError, match="did you mean 'segment_roi'"):
        benefit(matrix, "value_tiers", scores={"segment_ro": 3})
    path = write("seg.toml", '[segmentations.x]\nsegments = ["vpi"]\n')
    with pytest.raises(InputError, match="unknown segment 'vpi'; did you mean 'vip'"):
        benefit(matrix, "x", file=path)
