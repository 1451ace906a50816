"""The churn classifier: features and labels checked by hand, the model's conventions,
the time-split evaluation on generated data, stored scores and the errors."""

from __future__ import annotations

import datetime as dt
import math
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kequn import init_workspace
from kequn.errors import InputError, NotFittedError, WorkspaceError
from kequn.ingest import import_files
from kequn.models.churn import MIN_CUSTOMERS, ChurnModel, churn_dataset, predict_churn
from kequn.models.churn_evaluation import (
    calibration_table,
    permutation_importances,
    resolve_cutoffs,
    train_churn,
)
from kequn.models.churn_features import (
    DataSpan,
    churn_features,
    churn_labels,
    data_span,
    event_types,
    parse_day,
)
from kequn.models.churn_store import (
    CHURN_SCORES,
    MODEL_FILE,
    load_churn_model,
    save_churn_model,
    score_churn,
)
from kequn.sample import write_sample
from kequn.store import TABLES

T = dt.datetime
CUTOFF = dt.date(2024, 6, 30)


def append(ws, name: str, rows: list[dict]) -> None:
    """Rows with only the columns a test cares about; the rest of the schema is null."""
    schema = TABLES[name].to_pyarrow()
    data = {f.name: [r.get(f.name) for r in rows] for f in schema}
    ws.store.append(name, pa.table(data, schema=schema))


def order(n: int, customer: str | None, at: T, amount: float, is_return: bool | None = False):
    return {
        "order_id": f"o{n}",
        "customer_id": customer,
        "ordered_at": at,
        "amount": amount,
        "is_return": is_return,
    }


def event(n: int, customer: str, at: T, kind: str):
    return {"event_id": f"e{n}", "customer_id": customer, "occurred_at": at, "type": kind}


HAND_ORDERS = [
    # A: windows at cutoff 2024-06-30 — last 30 days = 06-01…06-30, 90 = 04-02…, 180 = 01-03…
    ("A", T(2024, 1, 1, 10), 100.0, False),  # first purchase, outside 180d (D-181)
    ("A", T(2024, 4, 1, 9), 50.0, False),  # D-90: outside 90d, inside 180d
    ("A", T(2024, 4, 2, 0), 30.0, False),  # D-89: first day of the 90-day window
    ("A", T(2024, 5, 31, 12), 20.0, False),  # D-30: outside 30d
    ("A", T(2024, 6, 1, 0), 10.0, False),  # D-29: first day of the 30-day window
    ("A", T(2024, 6, 30, 23, 59, 59), 5.0, False),  # on the cutoff day: counts
    ("A", T(2024, 6, 15), -30.0, True),  # a return: never spend, counted as a return
    ("A", T(2024, 7, 1, 0), 99.0, False),  # after the cutoff: label only
    # B: one purchase, its return, buys again after the 90-day horizon
    ("B", T(2024, 3, 15, 11), 40.0, False),
    ("B", T(2024, 3, 20), -40.0, True),
    ("B", T(2024, 10, 15), 40.0, False),
    # C: two orders on one day (is_return unknown counts as a purchase); buys on D+90
    ("C", T(2024, 6, 10, 9), 15.0, False),
    ("C", T(2024, 6, 10, 18), 25.0, None),
    ("C", T(2024, 9, 28, 23), 10.0, False),
    # D: only a return — not a buyer; E: buys on the cutoff day and again on D+91
    ("D", T(2024, 5, 1), -10.0, True),
    ("E", T(2024, 6, 30, 8), 60.0, False),
    ("E", T(2024, 9, 29, 0), 60.0, False),
    # F: first purchase after the cutoff; a guest order without customer
    ("F", T(2024, 7, 5), 70.0, False),
    (None, T(2024, 6, 20), 500.0, False),
]
HAND_EVENTS = [
    ("A", T(2024, 6, 30, 23), "view"),
    ("A", T(2024, 5, 31, 23, 59), "view"),  # D-30: outside 30d, inside 90d
    ("A", T(2024, 6, 1, 0), "cart"),
    ("A", T(2024, 7, 1, 0), "view"),  # after the cutoff
    ("C", T(2024, 3, 1), "cart"),  # 121 days before the cutoff
    ("E", T(2024, 6, 29), "rare"),
]


@pytest.fixture
def hand(ws):
    append(ws, "orders", [order(i, c, at, a, r) for i, (c, at, a, r) in enumerate(HAND_ORDERS)])
    append(ws, "events", [event(i, c, at, k) for i, (c, at, k) in enumerate(HAND_EVENTS)])
    return ws


# --- features and labels ------------------------------------------------------------------


def test_features_by_hand(hand):
    types = event_types(hand.table("events"), CUTOFF, limit=2)
    assert types == ["cart", "view"]  # two of each up to the cutoff; ties by name
    X = churn_features(hand.table("orders"), hand.table("events"), CUTOFF, types)
    assert list(X.index) == ["A", "B", "C", "E"]  # D only returned, F started later
    a = X.loc["A"]
    expected_a = {
        "recency_days": 0,
        "tenure_days": 181,
        "orders": 6,
        "purchase_days": 6,
        "monetary": 215.0,
        "avg_order_value": 215.0 / 6,
        "avg_gap_days": 181 / 5,
        "recency_gap_ratio": 0.0,
        "orders_30d": 2,
        "spend_30d": 15.0,
        "orders_90d": 4,
        "spend_90d": 65.0,
        "orders_180d": 5,
        "spend_180d": 115.0,
        "returns": 1,
        "returns_90d": 1,
        "return_amount": 30.0,
        "days_since_last_event": 0.0,
        "events_30d": 2,
        "events_90d": 3,
        "events_30d:cart": 1,
        "events_90d:cart": 1,
        "events_30d:view": 1,
        "events_90d:view": 2,
    }
    assert set(X.columns) == set(expected_a)
    for name, value in expected_a.items():
        assert a[name] == pytest.approx(value), name

    b = X.loc["B"]
    assert (b["recency_days"], b["tenure_days"], b["orders"], b["monetary"]) == (107, 107, 1, 40)
    assert (b["returns"], b["returns_90d"], b["return_amount"]) == (1, 0, 40.0)
    assert math.isnan(b["avg_gap_days"]) and math.isnan(b["recency_gap_ratio"])
    assert math.isnan(b["days_since_last_event"]) and b["events_90d"] == 0

    c = X.loc["C"]
    assert (c["orders"], c["purchase_days"], c["monetary"], c["recency_days"]) == (2, 1, 40, 20)
    assert math.isnan(c["avg_gap_days"])
    assert (c["days_since_last_event"], c["events_90d"], c["events_90d:cart"]) == (121, 0, 0)

    e = X.loc["E"]  # its 'rare' event counts in the totals but has no column of its own
    assert (e["days_since_last_event"], e["events_30d"], e["events_30d:view"]) == (1, 1, 0)
    assert X["orders"].dtype == np.int64 and X["avg_gap_days"].dtype == np.float64


def test_labels_by_hand(hand):
    orders = hand.table("orders")
    labels = churn_labels(orders, CUTOFF, 90)
    # A buys on D+1, C on D+90 (the last day of the horizon): retained; E on D+91: churned
    assert labels.to_dict() == {"A": False, "B": True, "C": False, "E": True}
    assert churn_labels(orders, CUTOFF, 91).to_dict()["E"] is False
    assert churn_labels(orders, CUTOFF, 1).to_dict() == {
        "A": False,
        "B": True,
        "C": True,
        "E": True,
    }


def test_dataset_and_span(hand):
    assert data_span(hand.table("orders")) == DataSpan(
        dt.date(2024, 1, 1), dt.date(2024, 10, 15), 15
    )
    X, y = churn_dataset(hand, "2024-06-30", 90, max_event_types=1)
    assert list(y.index) == list(X.index) and y.dtype == bool
    assert [c for c in X.columns if ":" in c] == ["events_30d:cart", "events_90d:cart"]
    X, y = churn_dataset(hand, CUTOFF, None)
    assert y is None and len(X) == 4


def test_parse_day():
    assert parse_day("2024-06-30") == CUTOFF
    assert parse_day(T(2024, 6, 30)) == CUTOFF
    with pytest.raises(InputError, match="has a time of day"):
        parse_day(T(2024, 6, 30, 12))
    with pytest.raises(InputError, match=r"cutoff '2024-13-01' is not a day; use YYYY-MM-DD"):
        parse_day("2024-13-01")


def test_resolve_cutoffs():
    span = DataSpan(dt.date(2023, 1, 1), dt.date(2024, 12, 31), 100)
    # default: the test cutoff is the last day with a complete horizon, training 90 days before
    assert resolve_cutoffs(span, None, None, 90) == (dt.date(2024, 7, 4), dt.date(2024, 10, 2))
    assert resolve_cutoffs(span, "2024-01-31", None, 30) == (
        dt.date(2024, 1, 31),
        dt.date(2024, 3, 1),
    )
    with pytest.raises(InputError, match="before the first purchase"):
        resolve_cutoffs(span, "2022-12-31", None, 90)
    with pytest.raises(InputError, match=r"run past the last purchase .* on or before 2024-10-02"):
        resolve_cutoffs(span, None, "2024-10-03", 90)
    with pytest.raises(InputError, match="at least 90 days after the training cutoff"):
        resolve_cutoffs(span, "2024-06-01", "2024-08-01", 90)


# --- the model's conventions --------------------------------------------------------------


def synthetic(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 400, n),
            "orders": rng.integers(1, 10, n),
            "avg_gap_days": np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 100),
            "events_30d:view": rng.integers(0, 3, n),
        }
    )
    y = rng.random(n) < 1 / (1 + np.exp(-(X["recency_days"] - 200) / 50))
    return X, y


def test_model_conventions():
    settings = {"horizon": 30, "max_iter": 20, "random_state": 3}
    model = ChurnModel(**settings)
    assert model.get_params() == {**ChurnModel().get_params(), **settings}
    assert not any(k.endswith("_") for k in vars(model))
    assert "horizon=30" in repr(model)
    X, y = synthetic()
    for call in (
        lambda: model.predict_proba(X),
        lambda: model.predict_risk(X),
        lambda: model.predict(X),
        lambda: model.event_types_,
    ):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    assert not hasattr(model, "event_types_")  # NotFittedError is an AttributeError

    assert model.fit(X, y) is model
    learned = {k for k in vars(model) if k.endswith("_")}
    assert learned == {
        "estimator_",
        "feature_names_in_",
        "ignored_features_",
        "n_features_in_",
        "classes_",
        "n_customers_",
        "churn_rate_",
    }
    assert model.event_types_ == ["view"] and model.n_features_in_ == 4
    assert model.ignored_features_ == []
    risk = model.predict_risk(X)
    assert risk.name == "churn_risk" and risk.index.equals(X.index)
    assert ((risk > 0) & (risk < 1)).all()
    # columns in another order, plus an extra one, give the same scores
    shuffled = X[X.columns[::-1]].assign(extra=1)
    np.testing.assert_allclose(model.predict_proba(shuffled), model.predict_proba(X))
    assert (model.predict(X) == (risk.to_numpy() >= 0.5)).all()
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_risk(X), risk)


def test_model_input_errors():
    X, y = synthetic()
    with pytest.raises(InputError, match="horizon must be a positive whole number, got 0"):
        ChurnModel(horizon=0).fit(X, y)
    with pytest.raises(InputError, match="learning_rate must be in"):
        ChurnModel(learning_rate=2.0).fit(X, y)
    with pytest.raises(InputError, match="must be a pandas DataFrame"):
        ChurnModel().fit(X.to_numpy(), y)
    with pytest.raises(InputError, match="position 0 holds 2"):
        ChurnModel().fit(X, np.full(len(X), 2))
    with pytest.raises(InputError, match="one label per row"):
        ChurnModel().fit(X, y[:-1])
    with pytest.raises(InputError, match="'city' is not numeric"):
        ChurnModel().fit(X.assign(city="北京"), y)
    with pytest.raises(InputError, match=f"only 20 customers .* at least {MIN_CUSTOMERS}"):
        ChurnModel().fit(X.head(20), y[:20])
    with pytest.raises(InputError, match="0 churned and 300 retained"):
        ChurnModel().fit(X, np.zeros(len(X), dtype=bool))
    model = ChurnModel(max_iter=10).fit(X, y)
    with pytest.raises(InputError, match="lacks 1 feature.*'events_30d:view'"):
        model.predict_risk(X.drop(columns="events_30d:view"))
    # a column without any value is left out of the fit, not an error
    model = ChurnModel(max_iter=10).fit(X.assign(avg_gap_days=np.nan), y)
    assert model.ignored_features_ == ["avg_gap_days"] and model.n_features_in_ == 3
    assert len(model.predict_risk(X)) == len(X)
    with pytest.raises(InputError, match="every column of X is missing"):
        ChurnModel().fit(pd.DataFrame({"a": np.full(len(X), np.nan)}), y)


def test_calibration_table_and_importances():
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1, 0, 1])
    p = np.linspace(0.05, 0.95, 10)
    table = calibration_table(y, p, bins=5)
    assert table["customers"].tolist() == [2] * 5
    assert table["observed_rate"].tolist() == [0.0, 0.5, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(table["mean_predicted"], [0.1, 0.3, 0.5, 0.7, 0.9])

    X, y = synthetic(400)
    model = ChurnModel(max_iter=30).fit(X, y)
    imp = permutation_importances(model, X, y, repeats=3)
    assert imp["feature"].iloc[0] == "recency_days"  # the only feature the label depends on
    assert set(imp["feature"]) == set(X.columns) and (imp["std"] >= 0).all()


# --- a generated sample: the time split, the baselines, stored scores -------------------------


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("churn")
    paths = write_sample(
        folder / "sample", customers=3000, seed=1, formats="parquet", tables=["orders", "events"]
    )
    ws = init_workspace(folder / "ws")
    import_files(ws, "orders", [paths["orders.parquet"]])
    import_files(ws, "events", [paths["events.parquet"]])
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def trained(sample_ws):
    return train_churn(sample_ws, importance_repeats=2)


def test_time_split_beats_the_trivial_baselines(trained):
    model, report = trained
    # defaults: data end 2025-12-31, test cutoff 90 days before it, training 90 days earlier
    assert (report.cutoff, report.test_cutoff) == (dt.date(2025, 7, 4), dt.date(2025, 10, 2))
    assert report.auc > 0.7
    assert report.auc > report.recency_auc  # recency alone is the trivial baseline
    # BG/NBD scored on the same customers: 1 - P(alive) holds one-time buyers "alive",
    # so it ranks badly; its own P(no purchase) is a serious competitor
    assert report.baseline_auc is not None and 0.0 < report.baseline_auc < 1.0
    assert report.bgnbd_no_purchase_auc > 0.7
    data = report.as_dict()
    assert data["baseline"]["name"] == "bgnbd_1_minus_p_alive"
    assert data["baseline"]["auc"] == report.baseline_auc
    cal = report.calibration
    assert len(cal) == 10 and cal["customers"].sum() == report.test_customers
    assert cal["observed_rate"].iloc[-1] > cal["observed_rate"].iloc[0]
    assert report.importances["importance"].iloc[0] > 0.01
    assert set(report.importances["feature"]) == set(model.feature_names_in_)
    # the saved model is refitted on the latest complete labels
    assert report.model_cutoff == report.test_cutoff
    assert model.n_customers_ == report.test_customers == report.model_customers


def test_scores_are_stored_and_replaced(sample_ws, trained):
    model, report = trained
    with pytest.raises(NotFittedError, match="kequn churn train"):
        score_churn(sample_ws)
    path = save_churn_model(sample_ws, model, report)
    assert path == sample_ws.path / MODEL_FILE
    loaded, meta = load_churn_model(sample_ws)
    assert meta["report"]["auc"] == report.auc and "sklearn" in meta

    rows = score_churn(sample_ws, as_of="2025-12-31")
    expected = predict_churn(sample_ws, model, "2025-12-31")
    np.testing.assert_allclose(rows["churn_risk"], expected["churn_risk"])
    table = sample_ws.table("churn_scores")
    schema = table.schema()
    assert schema.names == CHURN_SCORES.names
    assert schema["as_of"].is_timestamp() and schema["churn_risk"].is_float64()
    score_churn(sample_ws, as_of="2025-12-31")  # the same run again replaces it
    score_churn(sample_ws, as_of="2025-06-30")
    counts = table.group_by("as_of").aggregate(n=table.count()).order_by("as_of").execute()
    n_june = len(churn_dataset(sample_ws, "2025-06-30", None)[0])
    assert counts["n"].tolist() == [n_june, len(rows)]
    stored = table.filter(table.as_of == T(2025, 12, 31)).execute()
    assert set(stored["model"]) == {"churn-hgb-90d"}
    assert stored["churn_risk"].between(0, 1).all()


def test_model_file_from_another_sklearn_is_refused(ws, trained):
    model, _ = trained
    path = save_churn_model(ws, model)
    bundle = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps({**bundle, "sklearn": "0.1"}))
    with pytest.raises(WorkspaceError, match=r"trained with scikit-learn 0.1.*train it again"):
        load_churn_model(ws)
    path.write_bytes(b"not a pickle")
    with pytest.raises(WorkspaceError, match="cannot read the churn model"):
        load_churn_model(ws)


# --- errors on workspaces that cannot train -----------------------------------------------------


def test_errors_on_small_workspaces(hand):
    with pytest.raises(InputError, match="only 2 customers had bought at the cutoff 2024-04-01"):
        train_churn(hand, cutoff="2024-04-01", test_cutoff="2024-07-01")
    with pytest.raises(InputError, match="after the last purchase in the data"):
        predict_churn(hand, ChurnModel().fit(*synthetic()), "2024-10-16")


def test_errors_without_purchases(tmp_path):
    ws = init_workspace(tmp_path / "empty")
    with pytest.raises(InputError, match="no purchases .*`kequn import orders FILE`"):
        train_churn(ws)
    ws.close()


def test_error_when_everyone_churned(ws):
    rows = [order(i, f"c{i}", T(2024, 1, 1), 10.0) for i in range(60)]
    rows.append(order(99, "late", T(2024, 12, 31), 10.0))  # extends the data, not a buyer yet
    append(ws, "orders", rows)
    with pytest.raises(InputError, match="none of them bought again within 90 days: only one"):
        train_churn(ws, cutoff="2024-03-01")


def test_bgnbd_baseline_left_out_with_a_note(ws):
    """Without a repeat buyer at the training cutoff BG/NBD cannot be fitted: the report
    says so instead of failing."""
    rows = [order(i, f"c{i}", T(2024, 1, 1) + dt.timedelta(days=i), 10.0) for i in range(60)]
    rows += [order(100 + i, f"c{i}", T(2024, 3, 15), 10.0) for i in range(0, 60, 3)]
    rows += [order(200 + i, f"c{i}", T(2024, 6, 15), 10.0) for i in range(0, 60, 4)]
    rows.append(order(999, "late", T(2024, 8, 30), 10.0))
    append(ws, "orders", rows)
    model, report = train_churn(ws, cutoff="2024-03-01", importance_repeats=1)
    assert report.baseline_auc is None and report.bgnbd_no_purchase_auc is None
    assert report.notes and "BG/NBD baselines left out" in report.notes[0]
    assert report.as_dict()["baseline"]["auc"] is None
