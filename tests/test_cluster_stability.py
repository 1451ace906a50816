"""Stable cluster ids across runs (Hungarian matching of centroids) and the drift report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_insight_clustering import AS_OF, END, build_workspace

from kequn import init_workspace
from kequn.insight import cluster
from kequn.insight.stability import MOVED_WARN, match_clusters, relabel, warnings_for
from kequn.store import TABLES


def test_hungarian_matching_and_relabel_by_hand() -> None:
    # current cluster 0 sits on previous 1, current 1 on previous 0, current 2 on previous 2;
    # a greedy pass would take (0, 1) = 0.1 first as well, but (2, 2) must not go to 0
    cost = np.array([[5.0, 0.1, 9.0], [0.2, 7.0, 8.0], [9.0, 9.0, 0.3]])
    assert match_clusters(cost) == {0: 1, 1: 0, 2: 2}
    assert relabel({0: 1, 1: 0, 2: 2}, [0, 1, 2], np.array([5, 9, 2])).tolist() == [1, 0, 2]
    # greedy would pair (0, 0) = 1.0 and leave (1, 1) = 10; the optimum is 2 + 2
    assert match_clusters(np.array([[1.0, 2.0], [2.0, 10.0]])) == {0: 1, 1: 0}
    # k grew: the unmatched cluster takes the free id
    assert relabel({0: 1, 2: 0}, [0, 1], np.array([4, 3, 9])).tolist() == [1, 2, 0]
    # k shrank: ids stay 0..k-1 (previous id 2 is given up, the free id 1 is used)
    assert relabel({0: 2, 1: 0}, [0, 1, 2], np.array([7, 3])).tolist() == [1, 0]
    assert warnings_for(3, 3, 0.1, 0.05) == []
    assert warnings_for(4, 3, 0.1, 0.05)[0] == "k changed from 3 to 4"
    assert "changed cluster" in warnings_for(3, 3, 0.1, MOVED_WARN + 0.01)[0]
    assert "0.60 standard deviations" in warnings_for(3, 3, 0.6, 0.0)[0]


def _shuffled_copy(source, folder: Path, seed: int):
    """The same rows in another order, in a new workspace."""
    rng = np.random.default_rng(seed)
    ws = init_workspace(folder)
    for name in ("customers", "orders", "events"):
        table = source.table(name).to_pyarrow()
        ws.store.append(name, table.take(pa.array(rng.permutation(table.num_rows))))
    return ws


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stable")
    first = build_workspace(root / "a")
    second = _shuffled_copy(first, root / "b", seed=11)
    yield first, second
    first.close()
    second.close()


def _labels(run) -> dict[str, int]:
    return dict(zip(run.customer_ids.tolist(), run.labels.tolist(), strict=True))


def test_same_data_in_another_row_order_gives_the_same_ids(pair) -> None:
    first, second = pair
    a = cluster(first, as_of=AS_OF, features="rfm,events", previous=None, store=False)
    b = cluster(second, as_of=AS_OF, features="rfm,events", previous=None, store=False)
    assert a.k == b.k >= 3
    assert _labels(a) == _labels(b)
    assert [c["size"] for c in a.clusters] == [c["size"] for c in b.clusters]
    assert a.drift is None and a.as_dict()["drift"] is None


def test_rerun_keeps_ids_then_drift_is_measured(pair, tmp_path: Path) -> None:
    ws = _shuffled_copy(pair[0], tmp_path / "ws", seed=5)
    base = cluster(ws, as_of=AS_OF, features="rfm,events", previous=None)
    again = cluster(ws, as_of=AS_OF, features="rfm,events", random_state=7)
    assert again.drift is not None and again.drift.previous_run == base.run_id
    assert _labels(again) == _labels(base)
    d = again.drift
    assert d.customers_compared == 180 and d.customers_moved == 0 and d.warnings == []
    assert all(c["previous"] == c["cluster"] and c["shift_sd"] < 1e-6 for c in d.clusters)

    # 40 of the 60 one-time "a" buyers come back: many recent big orders
    back = [f"a{i:03d}" for i in range(40)]
    n = len(back) * 10
    orders = pa.table(
        {
            "order_id": [f"x{i}" for i in range(n)],
            "customer_id": np.repeat(back, 10).tolist(),
            "ordered_at": [END - timedelta(days=2 + i % 5) for i in range(n)],
            "amount": [480.0 + i % 40 for i in range(n)],
            "is_return": [False] * n,
            "channel": ["app"] * n,
        }
    )
    for col in TABLES["orders"].names:
        if col not in orders.column_names:
            orders = orders.append_column(col, pa.nulls(n, TABLES["orders"][col].to_pyarrow()))
    ws.store.append("orders", orders)
    later = cluster(ws, as_of=AS_OF, features="rfm,events")
    d = later.drift
    # independently: the customers whose stored cluster differs between the two runs
    t = ws.table("clusters")

    def stored(run_id: str) -> dict[str, int]:
        rows = t.filter(t.run_id == run_id).select("customer_id", "cluster").to_pyarrow()
        return dict(zip(rows["customer_id"].to_pylist(), rows["cluster"].to_pylist(), strict=True))

    before, after = stored(again.run_id), stored(later.run_id)
    if later.k == again.k:
        changed = sum(before[c] != after[c] for c in after)
        assert d.customers_moved == changed
        # the returning buyers now sit with the "b" customers, whose id is kept
        b_id = before["b000"]
        assert after["b000"] == b_id
        assert sum(after[c] == b_id for c in back) >= 35
    assert d.customers_moved >= 35 and d.drifted
    assert any("changed cluster" in w for w in d.warnings)
    assert d.as_dict()["customers_moved"] == d.customers_moved
    ws.close()
