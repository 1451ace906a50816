"""RFM scores: exact values on a hand-made table, tie rule, as_of, storage, two backends.

The table below was scored by hand (the working is in the comments of ``EXPECTED``); every
test states its expected numbers instead of recomputing them, so a change of definition
shows up as a failing test, not as a silently different answer.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import ibis
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kequn
from kequn.errors import InputError
from kequn.features.rfm import (
    COLUMNS,
    RFM_SCORES,
    parse_as_of,
    rfm,
    rfm_migration,
    rfm_summary,
    rfm_table,
    save_rfm,
    stored_rfm,
    to_pandas,
)

# ibis 12 reads SQLite results through pandas options that pandas 3 deprecates.
SQLITE_WARNING = "ignore:The 'future.infer_string' option is deprecated"

T = datetime
# (order_id, customer_id, ordered_at, amount, is_return)
ORDERS = [
    # a: two orders on the as_of day (same-day orders count twice), a return that day
    ("a1", "a", T(2024, 3, 31, 9), 100.0, False),
    ("a2", "a", T(2024, 3, 31, 21), 50.0, False),
    ("a3", "a", T(2024, 3, 31, 22), -30.0, True),
    # b: three orders, two of them on the same day
    ("b1", "b", T(2024, 3, 1, 10), 200.0, False),
    ("b2", "b", T(2024, 3, 20, 8), 100.0, False),
    ("b3", "b", T(2024, 3, 20, 18), 100.5, False),
    # c and d: identical R, F and M (d at the last second of the day)
    ("c1", "c", T(2024, 2, 1, 0, 0), 60.0, False),
    ("d1", "d", T(2024, 2, 1, 23, 59, 59), 60.0, False),
    # e: a purchase refunded in full later
    ("e1", "e", T(2024, 1, 15, 12), 500.0, False),
    ("e2", "e", T(2024, 3, 25, 12), -500.0, True),
    # f: one order before as_of, one after (ignored)
    ("f1", "f", T(2024, 3, 30, 12), 10.0, False),
    ("f2", "f", T(2024, 4, 2, 12), 999.0, False),
    # g: only a return -> not scored; h: only an order after as_of -> not scored
    ("g1", "g", T(2024, 3, 10, 12), -20.0, True),
    ("h1", "h", T(2024, 4, 5, 12), 80.0, False),
    # i: 0.1 + 0.2 must equal j's 0.3 exactly (a floating sum would not)
    ("i1", "i", T(2023, 12, 31, 12), 0.1, False),
    ("i2", "i", T(2024, 1, 1, 12), 0.2, False),
    ("j1", "j", T(2024, 3, 31, 23, 59, 59), 0.3, None),  # is_return unknown: a purchase
]
AS_OF = "2024-03-31"

# n = 8 scored customers; score = 1 + floor(5 * below / 8).
# recency: i 90 (below 0 -> 1), e 76 (1 -> 1), c d 59 (2 -> 2), b 11 (4 -> 3),
#          f 1 (5 -> 4), a j 0 (6 -> 4)
# frequency: c d e f j 1 (0 -> 1), a i 2 (5 -> 4), b 3 (7 -> 5)
# monetary: i j 0.3 (0 -> 1), f 10 (2 -> 2), c d 60 (3 -> 2), a 150 (5 -> 4),
#           b 400.5 (6 -> 4), e 500 (7 -> 5)
# intl: FM = ceil((F + M) / 2)
EXPECTED = pd.DataFrame(
    [
        # id, recency, F, M, aov, R, F, M, intl, cn8, tiers, first, last
        ("a", 0, 2, 150.0, 75.0, 4, 4, 4, "loyal", "important_value", "platinum",
         "2024-03-31", "2024-03-31"),
        ("b", 11, 3, 400.5, 133.5, 3, 5, 4, "loyal", "important_value", "platinum",
         "2024-03-01", "2024-03-20"),
        ("c", 59, 1, 60.0, 60.0, 2, 1, 2, "need_attention", "general_winback", "silver",
         "2024-02-01", "2024-02-01"),
        ("d", 59, 1, 60.0, 60.0, 2, 1, 2, "need_attention", "general_winback", "silver",
         "2024-02-01", "2024-02-01"),
        ("e", 76, 1, 500.0, 500.0, 1, 1, 5, "at_risk", "important_winback", "silver",
         "2024-01-15", "2024-01-15"),
        ("f", 1, 1, 10.0, 10.0, 4, 1, 2, "potential_loyalist", "general_development",
         "silver", "2024-03-30", "2024-03-30"),
        ("i", 90, 2, 0.3, 0.15, 1, 4, 1, "at_risk", "general_retention", "silver",
         "2023-12-31", "2024-01-01"),
        ("j", 0, 1, 0.3, 0.3, 4, 1, 1, "promising", "general_development", "silver",
         "2024-03-31", "2024-03-31"),
    ],
    columns=["customer_id", "recency_days", "frequency", "monetary", "avg_order_value",
             "r_score", "f_score", "m_score", "intl", "cn8", "tiers",
             "first_purchase_date", "last_purchase_date"],
)  # fmt: skip


def orders_table(rows: list[tuple]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "ordered_at": pa.array([r[2] for r in rows], pa.timestamp("us")),
            "amount": [r[3] for r in rows],
            "quantity": pa.nulls(n, pa.float64()),
            "lines": pa.nulls(n, pa.int64()),
            "status": pa.nulls(n, pa.string()),
            "is_return": pa.array([r[4] for r in rows], pa.bool_()),
            "channel": pa.nulls(n, pa.string()),
            "source": pa.nulls(n, pa.string()),
            "import_id": pa.nulls(n, pa.string()),
        }
    )


def make_workspace(path: Path, backend: str = "duckdb", rows: list[tuple] | None = None):
    """A workspace on DuckDB (the default) or on SQLite through an Ibis URL."""
    if backend == "sqlite":
        path.mkdir(parents=True)
        (path / "kequn.toml").write_text(
            f'[store]\nbackend = "sqlite:///{path / "kequn.sqlite"}"\n', encoding="utf-8"
        )
        ws = kequn.open_workspace(path)
    else:
        ws = kequn.init_workspace(path)
    ws.store.append("orders", orders_table(ORDERS if rows is None else rows))
    return ws


@pytest.fixture(scope="module")
def duck(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("rfm") / "duck")
    yield ws
    ws.close()


@pytest.fixture
def fresh(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    yield ws
    ws.close()


def expected(scheme: str) -> pd.DataFrame:
    frame = EXPECTED.rename(columns={scheme: "rfm_segment"})
    return frame.drop(columns=[c for c in ("intl", "cn8", "tiers") if c != scheme])


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id", ignore_index=True)


def check(result: pd.DataFrame, scheme: str) -> None:
    want = expected(scheme)
    got = result.sort_values("customer_id")[list(want.columns)].copy()
    for name in ("first_purchase_date", "last_purchase_date"):
        got[name] = got[name].dt.strftime("%Y-%m-%d")
    got["rfm_segment"] = got["rfm_segment"].astype(str)
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want, check_dtype=False, check_exact=True
    )


# --- exact values -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["intl", "cn8", "tiers"])
def test_exact_values_and_segments(duck, scheme):
    result = rfm(duck, as_of=AS_OF, scheme=scheme)
    assert list(result.columns) == list(COLUMNS)
    check(result, scheme)


def test_columns_and_types(duck):
    result = rfm(duck, as_of=AS_OF)
    assert result["recency_days"].dtype == "int64"
    assert result["r_score"].dtype == "int64"
    assert result["monetary"].dtype == "float64"
    assert pd.api.types.is_datetime64_any_dtype(result["last_purchase_date"])
    # segments are categoricals whose categories are the whole scheme, in its order
    assert isinstance(result["rfm_segment"].dtype, pd.CategoricalDtype)
    assert list(result["rfm_segment"].cat.categories[:2]) == ["champions", "loyal"]
    assert result["rfm_segment_en"].value_counts(sort=False).to_dict()["Champions"] == 0
    first = result.set_index("customer_id").loc["a"]
    assert (first.rfm_segment_zh, first.rfm_segment_en) == ("忠诚客户", "Loyal")


def test_ties_always_share_a_score(duck):
    r = rfm(duck, as_of=AS_OF).set_index("customer_id")
    assert tuple(r.loc["c", ["r_score", "f_score", "m_score"]]) == tuple(
        r.loc["d", ["r_score", "f_score", "m_score"]]
    )
    assert r.loc["a", "r_score"] == r.loc["j", "r_score"]  # same day, different hours
    assert r.loc["i", "monetary"] == r.loc["j", "monetary"] == 0.3  # 0.1 + 0.2 is exact
    assert r.loc["i", "m_score"] == r.loc["j", "m_score"] == 1


def test_net_returns_subtracts_returns_up_to_as_of(duck):
    r = rfm(duck, as_of=AS_OF, net_returns=True).set_index("customer_id")
    assert r.loc["a", "monetary"] == 120.0 and r.loc["a", "frequency"] == 2
    assert r.loc["e", "monetary"] == 0.0 and r.loc["e", "frequency"] == 1
    assert r.loc["b", "monetary"] == 400.5
    assert "g" not in r.index  # only a return: never a purchase
    before = rfm(duck, as_of="2024-03-24", net_returns=True).set_index("customer_id")
    assert before.loc["e", "monetary"] == 500.0  # the refund on 03-25 is after as_of


def test_as_of_in_the_past_ignores_later_orders(duck):
    r = rfm(duck, as_of=date(2024, 2, 1)).set_index("customer_id")
    assert sorted(r.index) == ["c", "d", "e", "i"]
    assert r["recency_days"].to_dict() == {"c": 0, "d": 0, "e": 17, "i": 31}
    assert r.loc["i", "frequency"] == 2
    # n = 4: recency c d 0 (below 2 -> 3), e 17 (1 -> 2), i 31 (0 -> 1)
    assert r["r_score"].to_dict() == {"c": 3, "d": 3, "e": 2, "i": 1}


def test_as_of_instant_ignores_the_rest_of_that_day(duck):
    r = rfm(duck, as_of="2024-02-01T12:00").set_index("customer_id")
    assert sorted(r.index) == ["c", "e", "i"]  # d ordered at 23:59:59
    assert r.loc["c", "recency_days"] == 0
    aware = datetime(2024, 2, 1, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
    assert sorted(rfm(duck, as_of=aware).customer_id) == ["c", "e", "i"]


def test_nothing_before_as_of_gives_an_empty_frame(duck):
    r = rfm(duck, as_of="2020-01-01")
    assert len(r) == 0 and list(r.columns) == list(COLUMNS)


def test_bins_other_than_five(duck):
    r = rfm(duck, as_of=AS_OF, bins=3).set_index("customer_id").sort_index()
    # n = 8, score = 1 + floor(3 * below / 8); recency below: i 0, e 1, c d 2, b 4, f 5, a j 6
    assert r["r_score"].to_dict() == {
        "a": 3, "b": 2, "c": 1, "d": 1, "e": 1, "f": 2, "i": 1, "j": 3
    }  # fmt: skip
    # On the intl grid 3 bins read as 1, 3, 5: a is R 3 -> 5, F 2 -> 3, M 2 -> 3, so FM 3
    assert r.loc["a", ["f_score", "m_score"]].tolist() == [2, 2]
    assert r.loc["a", "rfm_segment"] == "loyal"


def test_fixed_thresholds(duck):
    cuts = {
        "recency": [0, 11, 59, 76],
        "frequency": [2, 3, 4, 5],
        "monetary": [10, 60, 150, 400.5],
    }
    r = rfm(duck, as_of=AS_OF, method="fixed", thresholds=cuts).set_index("customer_id")
    # R = 1 + #(cuts >= days): a 0 -> 5, f 1 -> 4, b 11 -> 4, c 59 -> 3, e 76 -> 2, i 90 -> 1
    assert r["r_score"].to_dict() == {
        "a": 5, "b": 4, "c": 3, "d": 3, "e": 2, "f": 4, "i": 1, "j": 5
    }  # fmt: skip
    # F, M = 1 + #(cuts <= value); a value equal to a threshold reaches it
    assert r["f_score"].to_dict() == {
        "a": 2, "b": 3, "c": 1, "d": 1, "e": 1, "f": 1, "i": 2, "j": 1
    }  # fmt: skip
    assert r["m_score"].to_dict() == {
        "a": 4, "b": 5, "c": 3, "d": 3, "e": 5, "f": 2, "i": 1, "j": 1
    }  # fmt: skip


def test_fixed_thresholds_from_the_config(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    config = ws.path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^scheme = "intl".*$', 'scheme = "tiers"', text)
    text = re.sub(r'(?m)^method = "quantile".*$', 'method = "fixed"', text)
    text += (  # [rfm] is the template's last table, so its sub-table can follow
        "\n[rfm.thresholds]\nrecency = [0, 11, 59, 76]\nfrequency = [2, 3, 4, 5]\n"
        "monetary = [10, 60, 150, 400.5]\n"
    )
    config.write_text(text, encoding="utf-8")
    ws.close()
    r = rfm(ws.path, as_of=AS_OF).set_index("customer_id")  # a path opens and closes
    assert r.loc["b", ["r_score", "f_score", "m_score"]].tolist() == [4, 3, 5]
    assert r.loc["b", "rfm_segment"] == "platinum"  # 4 + 3 + 5 = 12 -> 4


# --- the tie rule, on any data ----------------------------------------------------------------


_MEMORY = {}


def memory_duckdb() -> ibis.BaseBackend:
    if "con" not in _MEMORY:
        _MEMORY["con"] = ibis.duckdb.connect()
    return _MEMORY["con"]


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.integers(min_value=-3, max_value=6), min_size=1, max_size=40),
    bins=st.integers(min_value=2, max_value=10),
)
def test_quantile_rule_on_any_values(values, bins):
    """score = 1 + floor(bins * #(smaller values) / n): ties equal, monotone, minimum 1."""
    from kequn.features.rfm import quantile_scores

    con = memory_duckdb()
    t = ibis.memtable({"v": values, "i": list(range(len(values)))})
    t = quantile_scores(t, bins, {"score": ("v", True)})
    got = dict(zip(*con.to_pyarrow(t.select("i", "score")).to_pydict().values(), strict=True))
    n = len(values)
    for i, v in enumerate(values):
        below = sum(1 for w in values if w < v)
        assert got[i] == 1 + (bins * below) // n
        assert 1 <= got[i] <= bins


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 1}, "bins = 1: bins must be from 2 to 10"),
        ({"bins": 11}, "bins = 11"),
        ({"bins": "5"}, "bins = '5': bins must be a whole number"),
        ({"scheme": "rfm11"}, "scheme = 'rfm11': use one of intl, cn8, tiers"),
        ({"method": "kmeans"}, "method = 'kmeans'"),
        ({"as_of": "2024-13-01"}, "as_of '2024-13-01' is not a date or time"),
        ({"as_of": 20240101}, "as_of 20240101"),
        ({"method": "fixed"}, "method 'fixed' needs thresholds"),
        (
            {"method": "fixed", "thresholds": {"recency": [1, 2], "frequency": [], "monetary": []}},
            "thresholds recency = [1, 2]: needs 4 strictly ascending numbers",
        ),
        (
            {
                "method": "fixed",
                "thresholds": {"recency": [9, 3, 2, 1], "frequency": [1, 2, 3, 4]},
            },
            "thresholds recency = [9, 3, 2, 1]",
        ),
        (
            {"method": "fixed", "thresholds": {"recency": [1, 2, 3, 4], "age": [1]}},
            "unknown key 'age'",
        ),
    ],
)
def test_bad_arguments_name_the_value(duck, kwargs, message):
    with pytest.raises(InputError) as info:
        rfm(duck, **({"as_of": AS_OF} | kwargs))
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_aware_as_of_is_read_in_the_workspace_time_zone():
    day, at = parse_as_of(datetime(2024, 1, 31, 20, 0, tzinfo=UTC), "Asia/Shanghai")
    assert (day, at) == (date(2024, 2, 1), datetime(2024, 2, 1, 4, 0))
    assert parse_as_of("2024-02-01", "UTC") == (date(2024, 2, 1), None)
    assert parse_as_of(" 2024-02-01 10:30 ", "UTC") == (date(2024, 2, 1), T(2024, 2, 1, 10, 30))


# --- storage, summary, migration --------------------------------------------------------------


def test_saved_runs_replace_the_same_day_and_read_back_equal(fresh):
    run = save_rfm(fresh, as_of=AS_OF, scheme="cn8")
    assert (run.as_of, run.scheme, run.customers) == (date(2024, 3, 31), "cn8", 8)
    save_rfm(fresh, as_of=AS_OF, scheme="cn8")  # same key: replaced, not doubled
    save_rfm(fresh, as_of=AS_OF, scheme="intl")
    table = fresh.table("rfm_scores")
    assert table.schema().names == RFM_SCORES.names
    assert fresh.con.to_pyarrow(table.count()).as_py() == 16
    check(to_pandas(stored_rfm(fresh, AS_OF, "cn8").order_by("customer_id")), "cn8")
    direct = rfm(fresh, as_of=AS_OF, scheme="cn8", save=True)
    check(direct, "cn8")


def test_rfm_table_is_lazy_and_composable(duck):
    t = rfm_table(duck, as_of=AS_OF)
    champions = t.filter(t.frequency >= 2).customer_id.to_pyarrow().to_pylist()
    assert sorted(champions) == ["a", "b", "i"]


def test_summary_lists_every_segment_in_order(duck):
    t = rfm_table(duck, as_of=AS_OF)
    s = rfm_summary(t, "intl").set_index("rfm_segment")
    assert list(s.index)[:3] == ["champions", "loyal", "potential_loyalist"]
    assert len(s) == 11 and s["customers"].sum() == 8
    assert s.loc["loyal", "customers"] == 2 and s.loc["champions", "customers"] == 0
    assert s.loc["loyal", "revenue"] == 550.5
    assert s["customer_share"].sum() == pytest.approx(1.0)
    assert s.loc["need_attention", "recency_days"] == 59.0
    assert s.loc["loyal", "rfm_segment_zh"] == "忠诚客户"


def test_migration_between_two_days(fresh):
    moves = rfm_migration(fresh, "2024-02-01", AS_OF, scheme="tiers")
    got = {(r.from_segment, r.to_segment): r.customers for r in moves.itertuples()}
    # c d e i scored on 02-01; a b f j are new by 03-31
    assert sum(got.values()) == 8
    assert sum(n for (a, _), n in got.items() if a == "(none)") == 4
    # both runs were stored on the way
    assert fresh.con.to_pyarrow(fresh.table("rfm_scores").count()).as_py() == 12
    with pytest.raises(InputError, match="give a day"):
        rfm_migration(fresh, "2024-02-01T10:00", AS_OF)


# --- a second backend -------------------------------------------------------------------------


@pytest.mark.filterwarnings(SQLITE_WARNING)
def test_sqlite_gives_identical_results(duck, tmp_path):
    lite = make_workspace(tmp_path / "lite", backend="sqlite")
    try:
        assert lite.con.name == "sqlite"
        cases = [
            {"scheme": "cn8", "net_returns": True},
            {"scheme": "tiers", "bins": 4, "as_of": "2024-02-01T12:00"},
            {
                "method": "fixed",
                "thresholds": {
                    "recency": [0, 11, 59, 76],
                    "frequency": [2, 3, 4, 5],
                    "monetary": [10, 60, 150, 400.5],
                },
            },
        ]
        for case in cases:
            kwargs = {"as_of": AS_OF} | case
            pd.testing.assert_frame_equal(by_id(rfm(lite, **kwargs)), by_id(rfm(duck, **kwargs)))
        check(rfm(lite, as_of=AS_OF, scheme="intl", save=True), "intl")
        moves = rfm_migration(lite, "2024-02-01", AS_OF, scheme="intl")
        assert moves["customers"].sum() == 8
    finally:
        lite.close()
