"""Clustering: groups recovered, rules measured by the segment engine, save as a segment.

The workspace holds three kinds of customer built to be told apart (ids say which):

* ``a…`` — one small order 300-400 days ago, no events;
* ``b…`` — 8-12 orders of ~¥500, the last within 10 days;
* ``c…`` — 3-4 orders of ~¥150 60-90 days ago, many product views in the last 90 days;
* ``n…`` — never bought (leads), a few page views.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score

from kequn import init_workspace
from kequn.errors import InputError, NotFittedError
from kequn.insight import CustomerKMeans, cluster, feature_matrix, load_run, save_cluster
from kequn.segments import current_members, evaluate, segment_definition
from kequn.store import CUSTOMERS, EVENTS, ORDERS

AS_OF = "2024-06-30"
END = datetime(2024, 7, 1)
GROUPS = {"a": 60, "b": 40, "c": 50, "n": 30}


def _table(schema, columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    arrays = {name: columns.get(name, [None] * n) for name in schema.names}
    return pa.table(arrays, schema=schema.to_pyarrow())


def build_workspace(folder: Path):
    """The four kinds of customer above, generated with a fixed seed (vectorised)."""
    rng = np.random.default_rng(3)
    ws = init_workspace(folder)
    ids = [f"{g}{i:03d}" for g, n in GROUPS.items() for i in range(n)]
    ws.store.append(
        "customers",
        _table(CUSTOMERS, {"customer_id": ids, "city": ["北京"] * len(ids)}),
    )
    spec = {  # orders per customer (low, high), days ago (low, high), amount mean
        "a": ((1, 1), (300, 400), 60.0),
        "b": ((8, 12), (0, 10), 500.0),
        "c": ((3, 4), (60, 90), 150.0),
    }
    cust, days, amount = [], [], []
    for g, ((lo, hi), (d0, d1), mean) in spec.items():
        mine = [i for i in ids if i[0] == g]
        counts = rng.integers(lo, hi + 1, size=len(mine))
        cust += list(np.repeat(mine, counts))
        total = int(counts.sum())
        # the newest order of each customer lies in the window; the others before it
        days += list(rng.integers(d0, d1 + 1, size=total) + (g == "b") * rng.integers(0, 60, total))
        amount += list(rng.normal(mean, mean * 0.1, size=total).round(2))
    n_orders = len(cust)
    when = [END - timedelta(days=int(d) + 1, hours=-10) for d in days]
    ws.store.append(
        "orders",
        _table(
            ORDERS,
            {
                "order_id": [f"o{i}" for i in range(n_orders)],
                "customer_id": cust,
                "ordered_at": when,
                "amount": amount,
                "is_return": [False] * n_orders,
                "channel": ["app"] * n_orders,
            },
        ),
    )
    viewers = [i for i in ids if i[0] == "c"]
    views = rng.integers(8, 15, size=len(viewers))
    ev_c = list(np.repeat(viewers, views))
    leads = [i for i in ids if i[0] == "n"]
    pv = np.ones(len(leads), dtype="int64")  # identical leads: one group
    ev_n = list(np.repeat(leads, pv))
    n_ev = len(ev_c) + len(ev_n)
    ev_days = rng.integers(0, 80, size=n_ev)
    ws.store.append(
        "events",
        _table(
            EVENTS,
            {
                "event_id": [f"e{i}" for i in range(n_ev)],
                "customer_id": ev_c + ev_n,
                "occurred_at": [END - timedelta(days=int(d) + 1) for d in ev_days],
                "type": ["product_view"] * len(ev_c) + ["page_view"] * len(ev_n),
            },
        ),
    )
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = build_workspace(tmp_path_factory.mktemp("insight") / "ws")
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def run(ws):
    return cluster(ws, as_of=AS_OF, features="rfm,events")


def test_groups_are_recovered(run) -> None:
    truth = [cid[0] for cid in run.customer_ids]
    assert run.k == 4
    assert adjusted_rand_score(truth, run.labels) > 0.9
    assert set(run.curve) == set(range(2, 9))
    assert run.silhouette == max(run.curve.values())
    sizes = [c["size"] for c in run.clusters]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == sum(GROUPS.values())
    assert sum(c["revenue_share"] for c in run.clusters) == pytest.approx(1.0)


def test_centroids_are_in_original_units(run) -> None:
    by_size = {c["size"]: c for c in run.clusters}
    leads = by_size[GROUPS["n"]]["centroid"]  # never bought: 0 orders, 0 spend
    assert leads["frequency"] == pytest.approx(0.0, abs=1e-6)
    assert leads["monetary"] == pytest.approx(0.0, abs=1e-6)
    frequent = max(run.clusters, key=lambda c: c["centroid"]["frequency"])["centroid"]
    assert 8 <= frequent["frequency"] <= 12 and frequent["recency_days"] <= 10


def test_rule_precision_recall_measured_by_the_engine(ws, run) -> None:
    assert len(run.rules) == run.k
    for r in run.rules:
        selected = set(evaluate(ws, r.rule, AS_OF))  # the rule, evaluated on its own
        actual = set(run.customer_ids[run.labels == r.cluster])
        both = len(selected & actual)
        assert r.rule_size == len(selected) and r.cluster_size == len(actual)
        assert r.precision == pytest.approx(both / len(selected))
        assert r.recall == pytest.approx(both / len(actual))
        assert r.precision > 0.9 and r.recall > 0.9, r


def test_every_feature_threshold_means_the_same_in_the_rule_language(ws) -> None:
    fm = feature_matrix(ws, AS_OF, ("rfm", "events"))
    ids = np.asarray(fm.customer_ids)
    for j, f in enumerate(fm.features):
        col = fm.values[:, j]
        t = float(np.median(col)) + 0.5
        for op, mask in (("<=", col <= t), (">", col > t)):
            if f.integer:
                mask = col <= np.floor(t) if op == "<=" else col > np.floor(t)
            rule = f.condition(op, t)
            assert set(evaluate(ws, rule, AS_OF)) == set(ids[mask]), rule


def test_run_is_stored(ws, run) -> None:
    stored = load_run(ws, run.run_id)
    assert stored.k == run.k and stored.curve == pytest.approx(run.curve)
    assert [r["rule"] for r in stored.rules] == [r.rule for r in run.rules]
    t = ws.table("clusters")
    n = t.filter(t.run_id == run.run_id).count().execute()
    assert n == sum(GROUPS.values())


def test_save_cluster_round_trip(ws, run) -> None:
    rule = run.rules[1].rule
    seg_run = save_cluster(ws, run, 1, "cluster_one")
    seg = segment_definition(ws, "cluster_one")
    assert seg.rule == rule and run.run_id in seg.description and "聚类" in seg.label_zh
    expected = evaluate(ws, rule, AS_OF)
    assert evaluate(ws, "cluster_one", AS_OF) == expected
    stored = current_members(ws, "cluster_one").customer_id.to_pyarrow().to_pylist()
    assert sorted(stored) == expected and seg_run.size == len(expected)


def test_unknown_cluster_number(ws, run) -> None:
    with pytest.raises(InputError, match="use 0 to 3"):
        save_cluster(ws, run.run_id, 9, "nope")


def test_estimator_on_blobs_and_minibatch() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    truth = rng.integers(0, 4, size=600)
    x = centres[truth] + rng.normal(0, 1, size=(600, 2))
    model = CustomerKMeans(log=np.array([False, False])).fit(x)
    assert model.k_ == 4 and adjusted_rand_score(truth, model.labels_) > 0.95
    assert (model.predict(x) == model.labels_).mean() > 0.99
    mini = CustomerKMeans(3, minibatch_threshold=300, log=np.array([False, False])).fit(x)
    assert mini.method_ == "minibatch_kmeans" and mini.k_ == 3
    with pytest.raises(NotFittedError):
        CustomerKMeans().predict(x)
    with pytest.raises(InputError, match="k = 1"):
        CustomerKMeans(1).fit(x)
    with pytest.raises(InputError, match="NaN"):
        CustomerKMeans().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
