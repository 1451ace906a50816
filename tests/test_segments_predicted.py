"""Predicted fields in rules: clv, p_alive, expected_purchases, expected_value, churn_risk."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from kequn import RuleError
from kequn.ingest import import_files
from kequn.segments import evaluate
from kequn.store import TABLES


def _clv(rows: list[tuple]) -> pa.Table:
    names = TABLES["clv_scores"].names
    data = {
        "customer_id": [r[0] for r in rows],
        "as_of": [r[1] for r in rows],
        "model": ["bgnbd"] * len(rows),
        "horizon_days": [90] * len(rows),
        "expected_purchases": [r[2] for r in rows],
        "p_alive": [r[3] for r in rows],
        "expected_value": [50.0] * len(rows),
        "clv": [r[4] for r in rows],
        "computed_at": [r[5] for r in rows],
    }
    return pa.table({n: data[n] for n in names}).cast(TABLES["clv_scores"].to_pyarrow())


@pytest.fixture
def scored(ws, write):
    import_files(ws, "customers", [write("c.csv", "customer_id,city\na,北京\nb,上海\nc,北京\n")])
    june, july = datetime(2024, 6, 30, 23, 59, 59), datetime(2024, 7, 31, 23, 59, 59)
    ws.store.append(
        "clv_scores",
        _clv(
            [
                ("a", june, 2.0, 0.9, 300.0, datetime(2024, 7, 1)),
                ("b", june, 0.1, 0.2, 10.0, datetime(2024, 7, 1)),
                ("a", july, 0.5, 0.4, 40.0, datetime(2024, 8, 1)),
                # a rerun of July for b: the newer computation wins
                ("b", july, 1.0, 0.7, 90.0, datetime(2024, 8, 1)),
                ("b", july, 3.0, 0.95, 400.0, datetime(2024, 8, 2)),
            ]
        ),
    )
    return ws


def test_latest_prediction_at_or_before_as_of(scored):
    assert evaluate(scored, "clv > 100", "2024-06-30") == ["a"]
    assert evaluate(scored, "clv > 100", "2024-07-31") == ["b"]
    assert evaluate(scored, "p_alive < 0.5 and city = '北京'", "2024-07-31") == ["a"]
    assert evaluate(scored, "expected_purchases >= 1", "2024-08-15") == ["b"]
    # before any prediction, and for customers never scored, the fields are missing
    assert evaluate(scored, "clv is null", "2024-06-01") == ["a", "b", "c"]
    assert evaluate(scored, "clv is null", "2024-07-31") == ["c"]
    # two-valued: a rule and its negation split the customers
    yes = evaluate(scored, "p_alive >= 0.5", "2024-07-31")
    no = evaluate(scored, "not p_alive >= 0.5", "2024-07-31")
    assert sorted(yes + no) == ["a", "b", "c"] and not set(yes) & set(no)


def test_fields_without_stored_predictions_say_what_to_run(ws, write):
    import_files(ws, "customers", [write("c.csv", "customer_id\na\n")])
    with pytest.raises(RuleError, match="kequn clv predict") as info:
        evaluate(ws, "clv > 100", "2024-07-31")
    assert info.value.kind == "no_predictions"
    with pytest.raises(RuleError, match="kequn churn predict"):
        evaluate(ws, "churn_risk > 0.5", "2024-07-31")


def test_profile_shows_the_latest_scores(scored):
    from kequn.profiles import profile

    data = profile(scored, "b")
    assert data["scores"]["clv"]["clv"] == 400.0  # July, the newer of two runs
    assert "rfm" not in data["scores"] and data["segments"] == []
