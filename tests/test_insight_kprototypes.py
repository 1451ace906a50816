"""K-prototypes: mixed numeric and categorical customers, rules that list categories.

The workspace holds three kinds of customer (ids say which):

* ``p…`` — 北京, channel ``app``, 5-8 orders of ~¥300 in the last 3 weeks;
* ``q…`` — 上海 or 广州, channel ``store``, **the same orders as p** (only the attributes
  tell them apart, so K-means on RFM alone cannot);
* ``r…`` — 成都 or no city at all, channel ``app``, one order of ~¥80 200-300 days ago.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from kequn import init_workspace
from kequn.cli import app
from kequn.errors import InputError, NotFittedError
from kequn.insight import CustomerKPrototypes, cluster, feature_matrix, load_run, save_cluster
from kequn.insight.explain import rule_for_cluster
from kequn.insight.features import OTHER
from kequn.segments import evaluate, parse_rule
from kequn.store import CUSTOMERS, ORDERS

AS_OF = "2024-06-30"
END = datetime(2024, 7, 1)
N = {"p": 60, "q": 60, "r": 50}


def _table(schema, columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    arrays = {name: columns.get(name, [None] * n) for name in schema.names}
    return pa.table(arrays, schema=schema.to_pyarrow())


def build_workspace(folder: Path):
    rng = np.random.default_rng(7)
    ws = init_workspace(folder)
    ids = [f"{g}{i:03d}" for g, n in N.items() for i in range(n)]
    city = (
        ["北京"] * N["p"]
        + ["上海", "广州"] * (N["q"] // 2)
        + ["成都"] * (N["r"] - 10)
        + [None] * 10
    )
    channel = ["app"] * N["p"] + ["store"] * N["q"] + ["app"] * N["r"]
    tier = json.dumps({"会员等级": "金卡"}, ensure_ascii=False)
    attributes = [tier] * N["p"] + [json.dumps({"会员等级": "银卡"}, ensure_ascii=False)] * (
        N["q"] + N["r"]
    )
    ws.store.append(
        "customers",
        _table(
            CUSTOMERS,
            {"customer_id": ids, "city": city, "channel": channel, "attributes": attributes},
        ),
    )
    cust, days, amount = [], [], []
    for g, (lo, hi), (d0, d1), mean in (
        ("p", (5, 8), (0, 20), 300.0),
        ("q", (5, 8), (0, 20), 300.0),
        ("r", (1, 1), (200, 300), 80.0),
    ):
        mine = [i for i in ids if i[0] == g]
        counts = rng.integers(lo, hi + 1, size=len(mine))
        cust += list(np.repeat(mine, counts))
        days += list(rng.integers(d0, d1 + 1, size=int(counts.sum())))
        amount += list(rng.normal(mean, mean * 0.05, size=int(counts.sum())).round(2))
    n = len(cust)
    ws.store.append(
        "orders",
        _table(
            ORDERS,
            {
                "order_id": [f"o{i}" for i in range(n)],
                "customer_id": cust,
                "ordered_at": [END - timedelta(days=int(d) + 1, hours=-10) for d in days],
                "amount": amount,
                "is_return": [False] * n,
            },
        ),
    )
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = build_workspace(tmp_path_factory.mktemp("kproto") / "ws")
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def run(ws):
    # k given: r differs from p and q by several standard deviations, p from q by two
    # categories (a dissimilarity of 2γ = 1), so the silhouette alone prefers k = 2
    return cluster(ws, as_of=AS_OF, features="rfm,attr:city,attr:channel", k=3)


def _truth(ids) -> list[str]:
    return [cid[0] for cid in ids]


def test_mixed_groups_are_recovered(run) -> None:
    assert run.method == "kprototypes"
    assert run.k == 3 and list(run.curve) == [3]
    assert adjusted_rand_score(_truth(run.customer_ids), run.labels) > 0.9


def test_kmeans_on_numbers_alone_cannot_tell_p_from_q(ws) -> None:
    # the control for the test above: the attributes are what separate p and q
    numeric = cluster(ws, as_of=AS_OF, features="rfm", k=3, store=False, explain=False)
    assert numeric.method == "kmeans"
    truth = np.array(_truth(numeric.customer_ids))
    both = np.isin(truth, ["p", "q"])
    assert adjusted_rand_score(truth[both], numeric.labels[both]) < 0.2


def test_centroids_hold_the_modes(run) -> None:
    modes = {(c["centroid"]["attr_city"], c["centroid"]["attr_channel"]) for c in run.clusters}
    assert ("北京", "app") in modes and ("成都", "app") in modes
    store = next(c for c in run.clusters if c["centroid"]["attr_channel"] == "store")
    assert store["centroid"]["attr_city"] in ("上海", "广州") and store["size"] == N["q"]


def test_rules_are_measured_and_precise(ws, run) -> None:
    for r in run.rules:
        parse_rule(r.rule)
        selected = set(evaluate(ws, r.rule, AS_OF))
        actual = set(run.customer_ids[run.labels == r.cluster])
        assert r.rule_size == len(selected) and r.cluster_size == len(actual)
        assert r.precision > 0.95 and r.recall > 0.95, r


def test_categorical_split_rule_selects_the_right_customers(ws) -> None:
    """A cluster defined by two of four cities gives ``city in (…)``, evaluated by the engine."""
    fm = feature_matrix(ws, AS_OF, ("attr:city",))
    (city,) = fm.features
    assert city.categorical and city.levels == ("上海", "北京", "广州", "成都", None)
    labels = np.isin(fm.customer_ids.astype(str), [f"q{i:03d}" for i in range(N["q"])])
    rule = rule_for_cluster(fm.values, labels.astype("int64"), 1, fm.features)
    assert rule == "city in ('上海', '广州')"
    expected = sorted(f"q{i:03d}" for i in range(N["q"]))
    assert evaluate(ws, rule, AS_OF) == expected


def test_missing_level_is_written_with_is_null(ws) -> None:
    fm = feature_matrix(ws, AS_OF, ("attr:city",))
    ids = fm.customer_ids.astype(str)
    r = np.char.startswith(ids.astype("U"), "r")
    rule = rule_for_cluster(fm.values, r.astype("int64"), 1, fm.features)
    assert "is null" in rule
    assert evaluate(ws, rule, AS_OF) == sorted(ids[r])


@pytest.mark.parametrize(
    ("chosen", "text"),
    [
        (["北京"], "city = '北京'"),
        (["上海", "广州"], "city in ('上海', '广州')"),
        ([None], "city is null"),
        (["成都", None], "(city = '成都' or city is null)"),
        (["上海", "北京", "广州", None], "not city in ('成都')"),
        (["上海", "北京", "广州", "成都"], "city is not null"),
    ],
)
def test_condition_in_keeps_the_meaning_of_missing(ws, chosen, text) -> None:
    fm = feature_matrix(ws, AS_OF, ("attr:city",))
    (city,) = fm.features
    assert city.condition_in(chosen) == text
    ids = fm.customer_ids.astype(str)
    codes = [city.levels.index(v) for v in chosen]
    assert evaluate(ws, text, AS_OF) == sorted(ids[np.isin(fm.values[:, 0], codes)])


def test_attributes_json_key_as_a_feature(ws) -> None:
    fm = feature_matrix(ws, AS_OF, ("attr:会员等级",))
    (tier,) = fm.features
    assert tier.expr == "attributes.会员等级" and tier.levels == ("金卡", "银卡")
    assert tier.condition_in(["金卡"]) == "attributes.会员等级 = '金卡'"
    assert evaluate(ws, tier.condition_in(["金卡"]), AS_OF) == sorted(
        f"p{i:03d}" for i in range(N["p"])
    )


def test_stored_run_records_method_and_levels(ws, run) -> None:
    stored = load_run(ws, run.run_id)
    assert stored.method == "kprototypes"
    city = next(f for f in stored.features if f["name"] == "attr_city")
    assert city["expr"] == "city" and city["levels"] == ["上海", "北京", "广州", "成都", None]
    seg_run = save_cluster(ws, run, 0, "kproto_zero")
    assert seg_run.size == run.rules[0].rule_size


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("attr:created_at", "not a categorical column"),
        ("attr:customer_id", "not a categorical column"),
        ("attr:no_such_key", "no customer has a value"),
        ("attr:", "name an attribute"),
        ("rfm,colour", "attr:NAME"),
    ],
)
def test_bad_attribute_features(ws, spec, message) -> None:
    with pytest.raises(InputError, match=message):
        cluster(ws, as_of=AS_OF, features=spec, store=False)


def test_rare_values_become_other(tmp_path: Path) -> None:
    """35 cities: the 30 most frequent are named, the 5 seen once share the level OTHER."""
    ws = init_workspace(tmp_path / "ws")
    try:
        common = [f"城市{i:02d}" for i in range(30)]
        rare = [f"小镇{i}" for i in range(5)]
        city = common * 2 + rare + [None] * 3
        ids = [f"c{i:03d}" for i in range(len(city))]
        ws.store.append("customers", _table(CUSTOMERS, {"customer_id": ids, "city": city}))
        fm = feature_matrix(ws, AS_OF, ("attr:city",))
        (f,) = fm.features
        assert f.levels == (*sorted(common), OTHER, None)
        codes = dict(zip(fm.customer_ids, fm.values[:, 0].astype(int), strict=True))
        assert {codes[f"c{60 + i:03d}"] for i in range(5)} == {30}  # the rare ones
        assert {codes[f"c{65 + i:03d}"] for i in range(3)} == {31}  # no city
        rule = f.condition_in([OTHER])
        assert (
            rule
            == f"city is not null and not city in ({', '.join(repr(c) for c in sorted(common))})"
        )
        assert evaluate(ws, rule, AS_OF) == [f"c{60 + i:03d}" for i in range(5)]
        with_missing = f.condition_in([OTHER, None, "城市00"])
        assert evaluate(ws, with_missing, AS_OF) == sorted(
            ["c000", "c030", *[f"c{60 + i:03d}" for i in range(8)]]
        )
        assert evaluate(ws, f.condition_in(["城市01", "城市02"]), AS_OF) == [
            "c001",
            "c002",
            "c031",
            "c032",
        ]
    finally:
        ws.close()


def test_estimator_on_mixed_blobs() -> None:
    """Three groups: two told apart only by two categories, the third by its numbers."""
    rng = np.random.default_rng(0)
    n = 900
    truth = rng.integers(0, 3, n)
    shift = np.where(truth == 2, 6.0, 0.0)
    numbers = np.column_stack([rng.normal(shift, 1.0), rng.normal(shift, 1.0)])
    colour = np.where(truth == 1, 1, 0) + (truth == 2) * rng.integers(0, 2, n)
    size = np.where(truth == 1, 2, rng.integers(0, 2, n))
    x = np.column_stack([numbers, colour, size]).astype(float)
    cat = np.array([False, False, True, True])
    model = CustomerKPrototypes(3, categorical=cat, log=np.zeros(4, bool)).fit(x)
    assert model.method_ == "kprototypes"
    assert model.gamma_ == pytest.approx(0.5)  # half the mean std of standardised numbers
    assert adjusted_rand_score(truth, model.labels_) > 0.95
    assert (model.predict(x) == model.labels_).all()
    sizes = np.bincount(model.labels_)
    assert list(sizes) == sorted(sizes, reverse=True)
    # the prototypes in original units: means of the numbers, modes of the categories
    for c in range(3):
        rows = x[model.labels_ == c]
        assert model.centroids_[c, 0] == pytest.approx(rows[:, 0].mean())
        assert model.centroids_[c, 2] == np.bincount(rows[:, 2].astype(int)).argmax()
    again = CustomerKPrototypes(3, categorical=cat, log=np.zeros(4, bool)).fit(x)
    assert (again.labels_ == model.labels_).all()  # deterministic for a random_state


def test_estimator_categories_only_and_errors() -> None:
    codes = np.repeat(np.array([[0, 0], [1, 1], [2, 2]]), 20, axis=0).astype(float)
    model = CustomerKPrototypes(3, categorical=np.array([True, True])).fit(codes)
    assert model.k_ == 3 and model.gamma_ == 1.0  # no numbers: γ only scales the cost
    assert adjusted_rand_score(np.repeat([0, 1, 2], 20), model.labels_) == pytest.approx(1.0)
    with pytest.raises(NotFittedError):
        CustomerKPrototypes(categorical=np.array([True, True])).predict(codes)
    with pytest.raises(InputError, match="level indexes"):
        CustomerKPrototypes(categorical=np.array([True, False])).fit([[0.5, 1.0], [1, 2]])
    with pytest.raises(InputError, match="2 flags"):
        CustomerKPrototypes(categorical=np.array([True])).fit(codes)
    with pytest.raises(InputError, match="gamma"):
        CustomerKPrototypes(2, categorical=np.array([True, True]), gamma=0).fit(codes)


def test_cli_cluster_with_attributes(ws) -> None:
    runner = CliRunner()
    args = ["cluster", "--features", "rfm,attr:city", "--as-of", AS_OF, "--k", "3"]
    result = runner.invoke(app, [*args, "--workspace", str(ws.path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["method"] == "kprototypes" and data["k"] == 3
    cities = {c["centroid"]["attr_city"] for c in data["clusters"]}
    assert "北京" in cities
    text = runner.invoke(app, [*args, "--workspace", str(ws.path)])
    assert text.exit_code == 0, text.output
    assert "kprototypes" in text.output and "北京" in text.output
    bad = runner.invoke(app, ["cluster", "--features", "attr:created_at", "-w", str(ws.path)])
    assert bad.exit_code != 0 and "created_at" in bad.output
