"""Every scheme's mapping, checked cell by cell and on its boundaries, compiled and run in SQL."""

from __future__ import annotations

from datetime import datetime
from itertools import product

import ibis
import pytest
from test_rfm import make_workspace

from kequn.features.rfm import rfm
from kequn.features.rfm_schemes import (
    CN8_MAP,
    INTL_GRID,
    SCHEMES,
    segment_code,
    to_five,
)

_MEMORY = {}


def run(expr_table: ibis.Table) -> list:
    if "con" not in _MEMORY:
        _MEMORY["con"] = ibis.duckdb.connect()
    return _MEMORY["con"].to_pyarrow(expr_table).column(0).to_pylist()


def codes(scheme: str, rows: list[tuple[int, int, int]], bins: int = 5) -> list[str]:
    t = ibis.memtable({"r": [x[0] for x in rows], "f": [x[1] for x in rows],
                       "m": [x[2] for x in rows]})  # fmt: skip
    highs = {}
    if scheme == "cn8":  # here the three scores are 0/1 flags: 1 = high
        highs = {"r_high": t.r == 1, "f_high": t.f == 1, "m_high": t.m == 1}
    return run(t.select(code=segment_code(scheme, t.r, t.f, t.m, bins=bins, **highs)))


# The published R x FM grid, restated here on purpose: rows R = 5..1, columns FM = 1..5.
PUBLISHED = {
    5: ["new_customers", "potential_loyalist", "loyal", "champions", "champions"],
    4: ["promising", "potential_loyalist", "potential_loyalist", "loyal", "champions"],
    3: ["promising", "need_attention", "potential_loyalist", "loyal", "loyal"],
    2: ["about_to_sleep", "need_attention", "need_attention", "at_risk", "at_risk"],
    1: ["lost", "hibernating", "at_risk", "cannot_lose_them", "cannot_lose_them"],
}


def test_intl_grid_is_the_published_one_and_covers_every_cell():
    assert len(INTL_GRID) == 25
    for (r, fm), code in INTL_GRID.items():
        assert PUBLISHED[r][fm - 1] == code, (r, fm)
    assert {s.code for s in SCHEMES["intl"].segments} == set(INTL_GRID.values())
    assert len(SCHEMES["intl"].segments) == 11


def test_intl_every_score_combination_has_a_segment():
    rows = list(product(range(1, 6), repeat=3))
    got = codes("intl", rows)
    for (r, f, m), code in zip(rows, got, strict=True):
        fm = (f + m + 1) // 2  # mean of F and M, rounded half up
        assert code == PUBLISHED[r][fm - 1], (r, f, m)


@pytest.mark.parametrize(
    ("scores", "code"),
    [
        ((5, 1, 1), "new_customers"),
        ((5, 1, 2), "potential_loyalist"),  # FM = ceil(1.5) = 2
        ((5, 3, 4), "champions"),  # FM = ceil(3.5) = 4
        ((5, 3, 3), "loyal"),
        ((4, 5, 4), "champions"),  # FM = ceil(4.5) = 5
        ((4, 4, 3), "loyal"),  # FM = ceil(3.5) = 4
        ((3, 1, 1), "promising"),
        ((3, 2, 1), "need_attention"),  # FM = ceil(1.5) = 2
        ((2, 1, 1), "about_to_sleep"),
        ((2, 3, 4), "at_risk"),  # FM 4
        ((2, 2, 3), "need_attention"),  # FM 3
        ((1, 2, 3), "at_risk"),  # FM = ceil(2.5) = 3
        ((1, 4, 3), "cannot_lose_them"),  # FM = ceil(3.5) = 4
        ((1, 1, 2), "hibernating"),  # FM 2
        ((1, 1, 1), "lost"),
    ],
)
def test_intl_boundaries(scores, code):
    assert codes("intl", [scores]) == [code]


def test_cn8_all_eight_combinations():
    rows = list(product((1, 0), repeat=3))
    got = dict(zip(rows, codes("cn8", rows), strict=True))
    assert got == {(int(r), int(f), int(m)): c for (r, f, m), c in CN8_MAP.items()}
    assert got[(1, 1, 1)] == "important_value"
    assert got[(1, 0, 1)] == "important_development"
    assert got[(0, 1, 1)] == "important_retention"
    assert got[(0, 0, 1)] == "important_winback"
    assert got[(1, 1, 0)] == "general_value"
    assert got[(1, 0, 0)] == "general_development"
    assert got[(0, 1, 0)] == "general_retention"
    assert got[(0, 0, 0)] == "general_winback"


@pytest.mark.parametrize(
    ("total", "code"),
    [(3, "bronze"), (4, "bronze"), (5, "silver"), (7, "silver"), (8, "gold"), (10, "gold"),
     (11, "platinum"), (13, "platinum"), (14, "diamond"), (15, "diamond")],
)  # fmt: skip
def test_tiers_round_the_mean_score(total, code):
    """Tier = mean of R, F, M rounded: 4/3 -> 1, 5/3 -> 2, 10/3 -> 3, 11/3 -> 4, 14/3 -> 5."""
    r = min(5, total - 2)
    f = min(5, total - r - 1)
    m = total - r - f
    assert codes("tiers", [(r, f, m)]) == [code]


@pytest.mark.parametrize(
    ("bins", "five"),
    [
        (2, [2, 4]),
        (3, [1, 3, 5]),
        (4, [1, 2, 4, 5]),
        (5, [1, 2, 3, 4, 5]),
        (10, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
    ],
)
def test_other_bin_counts_map_to_the_five_grid_by_bin_midpoint(bins, five):
    t = ibis.memtable({"s": list(range(1, bins + 1))})
    assert run(t.select(x=to_five(t.s, bins))) == five


def test_cn8_score_equal_to_the_mean_counts_as_high(tmp_path):
    """Customer k buys k times: F and M scores 1..5, mean 3; F = 3 is high, F = 2 is low."""
    rows = [
        (f"o{k}{n}", f"c{k}", datetime(2024, 1, 1, 10), 10.0, False)
        for k in range(1, 6)
        for n in range(k)
    ]
    ws = make_workspace(tmp_path / "ws", rows=rows)
    try:
        r = rfm(ws, as_of="2024-01-31", scheme="cn8").set_index("customer_id").sort_index()
    finally:
        ws.close()
    assert r["f_score"].tolist() == r["m_score"].tolist() == [1, 2, 3, 4, 5]
    # All bought on the same day: every R score is 1, equal to the mean 1, so R is high.
    # F and M scores 1..5 have mean 3: scores 3, 4, 5 are high, 1 and 2 are low.
    assert r["r_score"].tolist() == [1, 1, 1, 1, 1]
    assert r["rfm_segment"].to_dict() == {
        "c1": "general_development",
        "c2": "general_development",
        "c3": "important_value",
        "c4": "important_value",
        "c5": "important_value",
    }
