"""The per-customer summary in SQL (Ibis on the store's DuckDB) equals the in-memory one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kequn.models import (
    CDNOW_CALIBRATION_END,
    CDNOW_OBSERVATION_END,
    load_cdnow_summary,
    load_cdnow_transactions,
    summary_from_orders,
    summary_from_transactions,
)
from kequn.store import Store


def orders_table(
    ids: list, stamps: pd.Series, amounts: list, returns: list[bool] | None = None
) -> pa.Table:
    n = len(ids)
    return pa.Table.from_pandas(
        pd.DataFrame(
            {
                "order_id": [f"o{i}" for i in range(n)],
                "customer_id": [str(c) for c in ids],
                "ordered_at": pd.to_datetime(stamps),
                "amount": np.asarray(amounts, dtype=np.float64),
                "quantity": 1.0,
                "lines": 1,
                "status": "complete",
                "is_return": returns if returns is not None else [False] * n,
                "channel": "web",
                "source": "test",
                "import_id": "i1",
            }
        ),
        preserve_index=False,
    )


@pytest.fixture
def store(tmp_path: Path):
    store = Store.connect("duckdb", tmp_path, "kequn.duckdb")
    yield store
    store.close()


@pytest.fixture(scope="module")
def cdnow_tx() -> pd.DataFrame:
    tx = load_cdnow_transactions()
    tx["customer_id"] = tx["customer_id"].map("{:04d}".format)
    return tx


def test_orders_summary_equals_the_array_summary_on_cdnow(store: Store, cdnow_tx) -> None:
    # Orders at various times of day, plus returns, which must not count.
    stamps = cdnow_tx["date"] + pd.to_timedelta(np.arange(len(cdnow_tx)) % 24, unit="h")
    returns = cdnow_tx.iloc[::50]
    store.append("orders", orders_table(cdnow_tx["customer_id"], stamps, cdnow_tx["amount"]))
    store.append(
        "orders",
        orders_table(
            returns["customer_id"],
            returns["date"] + pd.Timedelta(days=3),
            -returns["amount"],
            [True] * len(returns),
        ),
    )
    from_sql = summary_from_orders(
        store.table("orders"), CDNOW_CALIBRATION_END, CDNOW_OBSERVATION_END
    )
    from_arrays = summary_from_transactions(
        cdnow_tx["customer_id"],
        stamps,
        cdnow_tx["amount"],
        CDNOW_CALIBRATION_END,
        CDNOW_OBSERVATION_END,
    )
    pd.testing.assert_frame_equal(from_sql, from_arrays, check_exact=False, rtol=1e-12)
    published = load_cdnow_summary()
    assert (from_sql["frequency"].to_numpy() == published["frequency"].to_numpy()).all()
    assert from_sql["frequency_holdout"].sum() == 1882


def test_orders_summary_in_days_without_holdout(store: Store) -> None:
    store.append(
        "orders",
        orders_table(
            ["a", "a", "a", "b"],
            ["2024-01-01 08:00", "2024-01-01 20:00", "2024-01-11 09:00", "2024-01-05 10:00"],
            [10.0, 5.0, 7.0, 3.0],
        ),
    )
    out = summary_from_orders(store.table("orders"), dt.date(2024, 1, 31), freq="D")
    assert list(out.columns) == ["frequency", "recency", "T", "monetary_value"]
    assert out.loc["a"].tolist() == [1, 10.0, 30.0, 7.0]
    assert out.loc["b"].tolist() == [0, 0.0, 26.0, 0.0]


def test_orders_summary_errors(store: Store) -> None:
    orders = store.table("orders")
    with pytest.raises(ValueError, match="holds no purchases"):
        summary_from_orders(orders, "2024-01-31")
    store.append("orders", orders_table(["a"], ["2024-01-05"], [3.0]))
    with pytest.raises(ValueError, match="before the first purchase"):
        summary_from_orders(orders, "2023-12-31")
    with pytest.raises(ValueError, match="lacks the column"):
        summary_from_orders(orders.drop("is_return"), "2024-01-31")


# --- the rules, against a plain reference implementation --------------------------------

purchases = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 60),  # day offset
        st.integers(0, 23),  # hour
        st.sampled_from([0.0, 1.5, 10.0, 99.99]),
    ),
    min_size=1,
    max_size=40,
)


def reference_summary(rows: list, cal: int, obs: int) -> dict:
    """One customer at a time, straight from the rules in the module docstring."""
    out = {}
    for customer in sorted({r[0] for r in rows}):
        days: dict[int, float] = {}
        for c, day, _, amount in rows:
            if c == customer:
                days[day] = days.get(day, 0.0) + amount
        cal_days = sorted(d for d in days if d <= cal)
        if not cal_days:
            continue
        first, repeat = cal_days[0], cal_days[1:]
        hold = [d for d in days if cal < d <= obs]
        out[customer] = {
            "frequency": len(repeat),
            "recency": cal_days[-1] - first,
            "T": cal - first,
            "monetary_value": sum(days[d] for d in repeat) / len(repeat) if repeat else 0.0,
            "frequency_holdout": len(hold),
        }
    return out


@settings(max_examples=60, deadline=None)
@given(rows=purchases, cal=st.integers(0, 45))
def test_summary_follows_the_rules(rows: list, cal: int) -> None:
    start = pd.Timestamp("2024-03-01")
    first_day = min(r[1] for r in rows)
    cal = max(cal, first_day)
    obs = 60
    stamps = [start + pd.Timedelta(days=d, hours=h) for _, d, h, _ in rows]
    cal_date = (start + pd.Timedelta(days=cal)).date()
    obs_date = (start + pd.Timedelta(days=obs)).date()
    last_day = max(r[1] for r in rows)
    args = ([r[0] for r in rows], stamps, [r[3] for r in rows], cal_date, obs_date, "D")
    if cal >= last_day:  # no data after the calibration end: the summary refuses a holdout
        with pytest.raises(ValueError, match="holdout period holds no data"):
            summary_from_transactions(*args)
        return
    got = summary_from_transactions(*args)
    expected = reference_summary(rows, cal, obs)
    assert list(got.index) == list(expected)
    for customer, values in expected.items():
        row = got.loc[customer]
        assert row["frequency"] == values["frequency"]
        assert row["recency"] == values["recency"]
        assert row["T"] == values["T"]
        assert row["monetary_value"] == pytest.approx(values["monetary_value"], rel=1e-12)
        assert row["frequency_holdout"] == values["frequency_holdout"]
        assert 0 <= row["recency"] <= row["T"]
