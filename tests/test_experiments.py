"""Experiments: deterministic, balanced assignment and the report on a hand-made workspace.

The expected figures are computed here from the raw outcomes written below, by formulas
written out in the test (Wilson, Newcombe, pooled z with math.erfc) and by scipy functions
that work from the raw per-customer values (chi2_contingency, ttest_ind), not from the sums
the report uses.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import pyarrow as pa
import pytest
from scipy import stats

from kequn.act.experiment_report import list_experiments, report
from kequn.act.experiments import Experiment, assign
from kequn.errors import InputError

SHARES = {"holdout": 0.1, "a": 0.45, "b": 0.45}
Z = 1.959963984540054


def test_assignment_is_stable():
    ids = [f"c{i}" for i in range(500)]
    first = [assign("spring", i, SHARES) for i in ids]
    again = [assign("spring", i, dict(reversed(SHARES.items()))) for i in ids]
    assert first == again  # same arm whatever the order the shares are listed in
    assert {assign("spring", "c1", SHARES) for _ in range(20)} == {first[1]}


def test_assignment_is_balanced_over_20k_ids():
    arms = [assign("spring", f"cust-{i:06d}", SHARES) for i in range(20_000)]
    names = sorted(SHARES)
    observed = [arms.count(a) for a in names]
    expected = [20_000 * SHARES[a] for a in names]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_assignment_is_independent_across_experiments():
    ids = [f"cust-{i}" for i in range(4_000)]
    x = [assign("one", i, {"a": 0.5, "b": 0.5}) for i in ids]
    y = [assign("two", i, {"a": 0.5, "b": 0.5}) for i in ids]
    table = [
        [sum(1 for p, q in zip(x, y, strict=True) if p == r and q == c) for c in "ab"] for r in "ab"
    ]
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_experiment_settings_are_checked():
    with pytest.raises(InputError, match="sum to 0.9"):
        Experiment("x", {"a": 0.5, "b": 0.4})
    with pytest.raises(InputError, match="'clicks'"):
        Experiment("x", {"a": 1.0}, outcome="clicks")
    with pytest.raises(InputError, match="arms"):
        Experiment.from_dict({"name": "x", "arms": {"a": "half"}})
    exp = Experiment.from_dict({"arms": {"a": 0.5, "holdout": 0.5}}, name="t1", trigger="t1")
    assert (exp.name, exp.trigger, exp.window_days, exp.outcome) == ("t1", "t1", 7, "order")


# --- the hand-made workspace ---------------------------------------------------------------

T0 = datetime(2024, 3, 1, 10, 0)


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


ASSIGNMENTS = [
    # customer, arm, assigned_at
    ("h1", "holdout", T0),
    ("h2", "holdout", T0),
    ("h3", "holdout", T0),
    ("h4", "holdout", T0),
    ("h1", "holdout", _dt("2024-03-10T09:00")),  # a second row: the first one counts
    ("a1", "a", T0),
    ("a2", "a", T0),
    ("a3", "a", T0),
    ("a4", "a", T0),
    ("a5", "a", T0),
    ("a6", "a", _dt("2024-03-28T12:00")),  # window ends after as_of: pending
    ("a7", "a", _dt("2024-04-02T12:00")),  # assigned after as_of: not seen
    ("b1", "b", T0),
    ("b2", "b", T0),
    ("b3", "b", T0),
]

ORDERS = [
    # order, customer, ordered_at, amount, is_return
    ("o1", "h1", "2024-03-03T12:00", 100.0, False),
    ("o2", "a1", "2024-03-02T12:00", 50.0, False),
    ("o3", "a1", "2024-03-04T12:00", -50.0, True),  # a return: not an outcome
    ("o4", "a2", "2024-03-08T09:00", 80.0, False),
    ("o5", "a3", "2024-03-08T10:00", 20.0, False),  # exactly 7 days later: inside
    ("o6", "a4", "2024-03-08T10:00:01", 30.0, False),  # one second too late
    ("o7", "a5", "2024-03-01T10:00", 40.0, False),  # at assignment: not after it
    ("o8", "a5", "2024-02-20T10:00", 60.0, False),  # before assignment
    ("o9", "b1", "2024-03-05T10:00", 10.0, False),
    ("o10", "b1", "2024-03-06T10:00", 15.0, False),  # two orders: one conversion, 25 revenue
    ("o11", "a6", "2024-03-29T10:00", 99.0, False),  # pending customer's order
]

# The outcomes the rows above mean, written out by hand (as_of 2024-03-31, 7-day window).
HOLDOUT_REVENUE = [100.0, 0.0, 0.0, 0.0]
A_REVENUE = [50.0, 80.0, 20.0, 0.0, 0.0]
B_REVENUE = [25.0, 0.0, 0.0]

CITIES = {
    "h1": "北京",
    "h2": "北京",
    "a1": "北京",
    "a2": "北京",
    "b1": "北京",
    "h3": "上海",
    "h4": "上海",
    "a3": "上海",
    "a4": "上海",
    "b2": "上海",
}
# a5, b3 have no city (a5 has no customer row at all)


@pytest.fixture
def exp_ws(ws):
    fill(ws)
    return ws


def fill(ws) -> None:
    """Write the assignments, orders and customers above into a workspace."""
    ws.store.append(
        "experiment_assignments",
        pa.table(
            {
                "experiment": ["welcome"] * len(ASSIGNMENTS),
                "customer_id": [a[0] for a in ASSIGNMENTS],
                "variant": [a[1] for a in ASSIGNMENTS],
                "trigger": ["welcome-mail"] * len(ASSIGNMENTS),
                "segment": ["new"] * len(ASSIGNMENTS),
                "assigned_at": pa.array([a[2] for a in ASSIGNMENTS], pa.timestamp("us")),
            }
        ),
    )
    ws.store.append(
        "orders",
        pa.table(
            {
                "order_id": [o[0] for o in ORDERS],
                "customer_id": [o[1] for o in ORDERS],
                "ordered_at": pa.array([_dt(o[2]) for o in ORDERS], pa.timestamp("us")),
                "amount": [o[3] for o in ORDERS],
                "is_return": [o[4] for o in ORDERS],
            }
        )
        .append_column("quantity", pa.array([1.0] * len(ORDERS)))
        .append_column("lines", pa.array([1] * len(ORDERS)))
        .append_column("status", pa.array([None] * len(ORDERS), pa.string()))
        .append_column("channel", pa.array([None] * len(ORDERS), pa.string()))
        .append_column("source", pa.array(["test"] * len(ORDERS)))
        .append_column("import_id", pa.array([None] * len(ORDERS), pa.string())),
    )
    ids = sorted({a[0] for a in ASSIGNMENTS} - {"a5"})
    customers = {name: [None] * len(ids) for name in ws.table("customers").columns}
    customers["customer_id"] = ids
    customers["city"] = [CITIES.get(i) for i in ids]
    customers["attributes"] = [
        json.dumps({"会员等级": "gold" if i in ("a1", "h1") else "plain"}) for i in ids
    ]
    schema = ws.table("customers").schema().to_pyarrow()
    ws.store.append("customers", pa.Table.from_pydict(customers, schema=schema))


def _wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


def _arm(rep: dict, name: str) -> dict:
    return next(a for a in rep["arms"] if a["arm"] == name)


def test_report_counts_and_rates(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-31")
    assert rep["baseline"] == "holdout"
    assert [a["arm"] for a in rep["arms"]] == ["holdout", "a", "b"]
    assert (rep["assigned"], rep["pending"], rep["analysed"]) == (13, 1, 12)
    assert rep["config"] == "defaults" and (rep["outcome"], rep["window_days"]) == ("order", 7)
    h, a, b = _arm(rep, "holdout"), _arm(rep, "a"), _arm(rep, "b")
    assert (h["n"], h["conversions"]) == (4, 1)
    assert (a["n"], a["conversions"]) == (5, 3)
    assert (b["n"], b["conversions"]) == (3, 1)
    assert a["rate"] == pytest.approx(0.6)
    assert a["revenue"] == pytest.approx(sum(A_REVENUE))
    assert a["revenue_mean"] == pytest.approx(30.0)
    # Wilson, by hand; 3 of 5 is (0.2307, 0.8824) in published tables
    assert a["rate_ci"] == pytest.approx(_wilson(3, 5))
    assert a["rate_ci"] == pytest.approx([0.2307, 0.8824], abs=1e-4)
    assert h["rate_ci"] == pytest.approx(_wilson(1, 4))
    # mean revenue: Student t interval from the raw values
    sd = stats.tstd(A_REVENUE)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert a["revenue_mean_ci"] == pytest.approx([30.0 - half, 30.0 + half])
    assert h["uplift"] is None


def test_report_uplift_and_tests(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-31")
    up = _arm(rep, "a")["uplift"]
    p1, p0 = 3 / 5, 1 / 4
    assert up["rate"]["abs"] == pytest.approx(p1 - p0)
    assert up["rate"]["rel"] == pytest.approx(p1 / p0 - 1)
    l1, u1 = _wilson(3, 5)
    l0, u0 = _wilson(1, 4)
    newcombe = (
        p1 - p0 - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        p1 - p0 + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )
    assert up["rate"]["abs_ci"] == pytest.approx(newcombe)
    # pooled z by hand, and the same p-value from a 2x2 chi-square on the counts
    pooled = 4 / 9
    z = (p1 - p0) / math.sqrt(pooled * (1 - pooled) * (1 / 5 + 1 / 4))
    assert up["rate"]["z"] == pytest.approx(z)
    assert up["rate"]["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    chi = stats.chi2_contingency([[3, 2], [1, 3]], correction=False)
    assert up["rate"]["p_value"] == pytest.approx(chi.pvalue)
    # Katz log interval of the rate ratio
    se = math.sqrt(1 / 3 - 1 / 5 + 1 / 1 - 1 / 4)
    rr = p1 / p0
    assert up["rate"]["rel_ci"] == pytest.approx(
        [rr * math.exp(-Z * se) - 1, rr * math.exp(Z * se) - 1]
    )
    # revenue: Welch's test from the raw per-customer values
    welch = stats.ttest_ind(A_REVENUE, HOLDOUT_REVENUE, equal_var=False)
    assert up["revenue"]["abs"] == pytest.approx(30.0 - 25.0)
    assert up["revenue"]["p_value"] == pytest.approx(welch.pvalue)
    assert up["revenue"]["t"] == pytest.approx(welch.statistic)
    assert up["revenue"]["df"] == pytest.approx(welch.df)
    ci = welch.confidence_interval(0.95)
    assert up["revenue"]["abs_ci"] == pytest.approx([ci.low, ci.high])
    b_up = _arm(rep, "b")["uplift"]
    assert b_up["revenue"]["p_value"] == pytest.approx(
        stats.ttest_ind(B_REVENUE, HOLDOUT_REVENUE, equal_var=False).pvalue
    )


def test_report_window_follows_options_without_a_trigger(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-31", outcome="revenue", window_days=1)
    assert rep["config"] == "options" and rep["outcome"] == "revenue"
    a = _arm(rep, "a")
    # (assignment, +24 h]: none of a1..a5's orders is inside (a1's is 26 h later); a6's
    # window (03-28 12:00, 03-29 12:00] has ended by as_of and holds its order
    assert (a["n"], a["conversions"], a["revenue"]) == (6, 1, 99.0)
    assert rep["pending"] == 0  # a6's 1-day window ended on 03-29 12:00


def test_report_as_of_excludes_later_assignments_and_orders(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-07")
    # every 7-day window from 03-01 10:00 ends 03-08 10:00, after this as_of: all pending
    assert (rep["assigned"], rep["pending"], rep["analysed"]) == (12, 12, 0)
    later = report(exp_ws, "welcome", as_of="2024-04-30")
    assert later["assigned"] == 15 - 1  # a7 seen now; h1's second row still not a customer
    assert _arm(later, "a")["n"] == 7


def test_report_uses_the_trigger_config_and_checks_sample_ratio(exp_ws):
    config = {
        "name": "welcome-mail",
        "segment": "new",
        "experiment": {
            "name": "welcome",
            "arms": {"holdout": 0.1, "a": 0.45, "b": 0.45},
            "outcome": "revenue",
            "window_days": 7,
            "variants": {},
        },
    }
    exp_ws.store.append(
        "triggers",
        pa.table(
            {
                "name": ["welcome-mail"],
                "segment": ["new"],
                "on": ["enter"],
                "channel": ["webhook"],
                "config": [json.dumps(config)],
                "updated_at": pa.array([T0], pa.timestamp("us")),
            }
        ),
    )
    # options are only a fallback: the trigger's settings win
    rep = report(exp_ws, "welcome", as_of="2024-03-31", outcome="order", window_days=1)
    assert (rep["outcome"], rep["window_days"]) == ("revenue", 7)
    assert rep["config"] == "trigger 'welcome-mail'"
    srm = rep["srm"]
    observed = [4, 6, 3]  # holdout, a (a1..a6), b
    expected = [13 * 0.1, 13 * 0.45, 13 * 0.45]
    assert srm["observed"] == {"holdout": 4, "a": 6, "b": 3}
    assert srm["p_value"] == pytest.approx(stats.chisquare(observed, expected).pvalue)
    assert srm["mismatch"] == (srm["p_value"] < 0.001)
    listed = {e["experiment"]: e for e in list_experiments(exp_ws)}
    assert listed["welcome"]["trigger"] == "welcome-mail"
    assert listed["welcome"]["arms"] == {"holdout": 4, "a": 7, "b": 3}


def test_report_by_city_and_attribute(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-31", by="city")
    groups = {g["group"]: g for g in rep["groups"]}
    assert list(groups) == ["上海", "北京", "(none)"]
    bj = {a["arm"]: a for a in groups["北京"]["arms"]}
    assert (bj["holdout"]["n"], bj["holdout"]["conversions"]) == (2, 1)
    assert (bj["a"]["n"], bj["a"]["conversions"]) == (2, 2)
    assert (bj["b"]["n"], bj["b"]["conversions"]) == (1, 1)
    assert bj["a"]["uplift"]["rate"]["abs"] == pytest.approx(1.0 - 0.5)
    sh = {a["arm"]: a for a in groups["上海"]["arms"]}
    assert (sh["a"]["n"], sh["a"]["conversions"]) == (2, 1)  # a3 in, a4 one second late
    none = {a["arm"]: a for a in groups["(none)"]["arms"]}
    assert (none["a"]["n"], none["b"]["n"], none["holdout"]["n"]) == (1, 1, 0)
    # the overall figures are unchanged by grouping
    assert [a["n"] for a in rep["arms"]] == [4, 5, 3]
    by_attr = report(exp_ws, "welcome", as_of="2024-03-31", by="attributes.会员等级")
    gold = next(g for g in by_attr["groups"] if g["group"] == "gold")
    assert gold["n"] == 2  # h1 and a1


def test_report_by_segment_membership(exp_ws):
    exp_ws.store.append(
        "segments",
        pa.table({"name": ["vip"], "rule": ["city = '北京'"]})
        .append_column("label_zh", pa.array([None], pa.string()))
        .append_column("label_en", pa.array([None], pa.string()))
        .append_column("description", pa.array([None], pa.string()))
        .append_column("owner", pa.array([None], pa.string()))
        .append_column("tags", pa.array([None], pa.string()))
        .append_column("source", pa.array([None], pa.string()))
        .append_column("updated_at", pa.array([T0], pa.timestamp("us"))),
    )
    exp_ws.store.append(
        "memberships",
        pa.table(
            {
                "segment": ["vip"] * 3,
                "customer_id": ["a1", "h2", "b2"],
                "entered_at": pa.array([T0] * 3, pa.timestamp("us")),
                "exited_at": pa.array([None, None, T0], pa.timestamp("us")),  # b2 left
            }
        ),
    )
    rep = report(exp_ws, "welcome", as_of="2024-03-31", by="segment:vip")
    groups = {g["group"]: {a["arm"]: a["n"] for a in g["arms"]} for g in rep["groups"]}
    assert groups["vip"] == {"holdout": 1, "a": 1, "b": 0}
    assert groups["(none)"] == {"holdout": 3, "a": 4, "b": 3}
    with pytest.raises(InputError, match="'vipp'.*did you mean 'vip'"):
        report(exp_ws, "welcome", as_of="2024-03-31", by="segment:vipp")


def test_report_errors_name_the_bad_value(exp_ws):
    with pytest.raises(InputError, match="'welcom'.*did you mean 'welcome'"):
        report(exp_ws, "welcom", as_of="2024-03-31")
    with pytest.raises(InputError, match="'citi'.*did you mean 'city'"):
        report(exp_ws, "welcome", as_of="2024-03-31", by="citi")
    with pytest.raises(InputError, match="'clicks'"):
        report(exp_ws, "welcome", as_of="2024-03-31", outcome="clicks")


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_report_and_list(exp_ws):
    from typer.testing import CliRunner

    from kequn.cli import app

    runner = CliRunner()
    folder = str(exp_ws.path)
    exp_ws.close()  # the CLI opens the database itself
    base = ["experiment", "report", "welcome", "-w", folder, "--as-of", "2024-03-31"]
    result = runner.invoke(app, [*base, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(a["arm"], a["n"], a["conversions"]) for a in data["arms"]] == [
        ("holdout", 4, 1),
        ("a", 5, 3),
        ("b", 3, 1),
    ]
    result = runner.invoke(
        app, [*base, "--by", "city", "--outcome", "revenue", "--window-days", "7"]
    )
    assert result.exit_code == 0, result.output
    assert "city = 北京" in result.output and "(baseline)" in result.output
    assert "rev./cust." in result.output, result.output
    result = runner.invoke(app, ["experiment", "report", "nope", "-w", folder])
    assert result.exit_code == 2 and "no experiment 'nope'" in result.output
    result = runner.invoke(app, ["experiment", "list", "-w", folder, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["arms"] == {"a": 7, "b": 3, "holdout": 4}
    result = runner.invoke(app, ["experiment", "list", "-w", folder])
    assert result.exit_code == 0 and "welcome" in result.output


def test_report_warns_about_small_counts_and_sample_ratio(exp_ws):
    rep = report(exp_ws, "welcome", as_of="2024-03-31")
    assert any("fewer than 5 conversions" in w for w in rep["warnings"])
    assert not any("sample ratio" in w for w in rep["warnings"])  # no shares configured


def test_sample_ratio_mismatch_is_flagged(ws):
    n = {"holdout": 100, "a": 100}  # configured 10% / 90%: far from 50/50
    ids = [(f"{arm}{i}", arm) for arm, k in n.items() for i in range(k)]
    ws.store.append(
        "experiment_assignments",
        pa.table(
            {
                "experiment": ["srm"] * len(ids),
                "customer_id": [c for c, _ in ids],
                "variant": [a for _, a in ids],
                "trigger": ["t"] * len(ids),
                "segment": ["s"] * len(ids),
                "assigned_at": pa.array([T0] * len(ids), pa.timestamp("us")),
            }
        ),
    )
    config = {"name": "t", "experiment": {"name": "srm", "arms": {"holdout": 0.1, "a": 0.9}}}
    ws.store.append(
        "triggers",
        pa.table(
            {
                "name": ["t"],
                "segment": ["s"],
                "on": ["enter"],
                "channel": ["webhook"],
                "config": [json.dumps(config)],
                "updated_at": pa.array([T0], pa.timestamp("us")),
            }
        ),
    )
    rep = report(ws, "srm", as_of="2024-03-31")
    expected_p = stats.chisquare([100, 100], [20, 180]).pvalue
    assert rep["srm"]["p_value"] == pytest.approx(expected_p) and rep["srm"]["mismatch"]
    assert any("sample ratio mismatch" in w for w in rep["warnings"])
