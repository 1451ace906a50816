"""Why-traces: each construct of the rule language shows its actual value and result, and the
trace always agrees with the engine (it is the same compiled query)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from test_segments_fixtures import ALL, copy_workspace
from typer.testing import CliRunner

from kequn.errors import InputError, RuleError
from kequn.segments import Segment, apply, evaluate
from kequn.segments.trace import why
from kequn.store import CHURN_SCORES, RFM_SCORES

AS_OF = "2024-06-30"


def _rows(schema, rows: list[dict]) -> pa.Table:
    return pa.table({n: [r.get(n) for r in rows] for n in schema.names}, schema=schema.to_pyarrow())


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    """The segment fixture with hand-made RFM and churn scores and two stored segments."""
    folder = tmp_path_factory.mktemp("why")
    workspace = copy_workspace(tmp_path_factory, folder)
    rfm = [
        # an older run that scored c03; the latest run (06-30) does not: c03 has no r_score
        {"customer_id": "c03", "as_of": date(2024, 5, 31), "scheme": "intl", "r_score": 4},
        {"customer_id": "c01", "as_of": date(2024, 6, 30), "scheme": "intl", "r_score": 5},
        {"customer_id": "c02", "as_of": date(2024, 6, 30), "scheme": "intl", "r_score": 2},
    ]
    workspace.store.append("rfm_scores", _rows(RFM_SCORES, rfm))
    churn = [
        {"customer_id": "c01", "as_of": datetime(2024, 6, 29), "churn_risk": 0.2, "model": "m"},
        {"customer_id": "c01", "as_of": datetime(2024, 7, 2), "churn_risk": 0.9, "model": "m"},
    ]
    workspace.store.append("churn_scores", _rows(CHURN_SCORES, churn))
    apply(
        workspace,
        [
            Segment(name="beijing", rule="city = '北京'"),
            Segment(name="bj_buyers", rule="in segment 'beijing' and count(orders, ever) >= 1"),
        ],
        AS_OF,
    )
    yield workspace
    workspace.close()


def leaf(rule: str, ws, customer: str) -> dict:
    trace = why(ws, rule, customer, AS_OF)
    node = trace.as_dict()["trace"]
    assert "children" not in node, node
    return node


# rule, customer, expected value, held — each value worked out from the fixture by hand
LEAVES = [
    # fields of different types
    ("city = '北京'", "c01", "北京", True),
    ("city != '北京'", "c05", None, False),  # missing city: != is false too
    ("created_at >= '2024-01-01'", "c01", datetime(2023, 1, 5), False),
    ("birth_date < '1991-01-01'", "c01", date(1990, 5, 1), True),
    ("attributes.会员等级 = '金卡'", "c01", "金卡", True),
    ("attributes.score > 80", "c01", 88, True),
    # computed fields: c01's last purchase 06-25, five days before as_of
    ("days_since_last_order < 3", "c01", 5, False),
    ("days_since_first_order >= 100", "c01", 172, True),  # 2024-01-10 → 06-30
    # aggregates: o01 500 (06-20) and o02 700 (06-25) in the last 30 days, o03 300 (01-10)
    ("count(orders, last 30 days) >= 2", "c01", 2, True),
    ("sum(orders.amount, last 12 months) > 2000", "c01", 1500.0, False),
    ("avg(orders.amount, last 30 days) = 600", "c01", 600.0, True),
    ("min(orders.amount) < 400", "c01", 300.0, True),
    ("max(orders.amount) >= 1000", "c01", 700.0, False),  # o04 (9999) is after as_of
    ("count_distinct(orders.channel) = 2", "c01", 2, True),
    ("count(returns, last 30 days) = 0", "c02", 1, False),  # o06
    ("count(events where type = 'add_to_cart', last 1 day) = 1", "c05", 1, True),  # 23:59:59
    ("count_distinct(events.properties.sku) = 2", "c10", 2, True),  # A1, A1, A3
    ("count(orders, last 30 days) = 0", "c06", 0, True),  # no orders at all: 0, not null
    # sequences: c01 viewed twice on 06-28 and added to cart on 06-29 09:00
    (
        "count(events where type = 'product_view' then events where type = 'add_to_cart' "
        "within 1 day, last 30 days) >= 1",
        "c01",
        2,
        True,
    ),
    (
        "count(events where type = 'product_view' then no events where type = 'add_to_cart' "
        "within 1 day, last 30 days) = 0",
        "c10",
        3,
        False,
    ),
    # lists, ranges, text, nulls
    ("city in ('北京', '上海')", "c02", "上海", True),
    ("city not in ('北京', '上海')", "c02", "上海", False),
    ("days_since_last_order between 0 and 3", "c01", 5, False),
    ("days_since_last_order not between 0 and 3", "c01", 5, True),
    ("email ends with '@example.org'", "c05", "zm@example.org", True),
    ("name contains '伟'", "c02", "李娜", False),
    ("email not starts with 'zw'", "c01", "zw@example.com", False),
    ("city is null", "c05", None, True),
    ("attributes.会员等级 is not null", "c05", None, False),
    # stored scores: the latest RFM run over all customers, the latest churn score ≤ as_of
    ("r_score >= 4", "c01", 5, True),
    ("r_score >= 4", "c02", 2, False),
    ("r_score >= 4", "c03", None, False),  # not in the latest run
    ("churn_risk < 0.5", "c01", 0.2, True),
]


@pytest.mark.parametrize(("rule", "customer", "value", "held"), LEAVES)
def test_each_leaf_shows_its_value(ws, rule: str, customer: str, value, held: bool) -> None:
    node = leaf(rule, ws, customer)
    assert node["value"] == value
    assert node["held"] is held
    assert node["needs"] == (None if held else node["test"])
    assert node["text"].startswith(node["operand"])


def test_failed_comparison_says_what_was_needed(ws) -> None:
    trace = why(ws, "r_score >= 4", "c02", AS_OF)
    assert trace.root.lines() == ["✗ r_score = 2  (needs >= 4)"]
    trace = why(ws, "count(orders, last 30 days) = 0", "c06", AS_OF)
    assert trace.root.lines() == ["✓ count(orders, last 30 days) = 0  (= 0)"]


def test_and_or_not_const_and_segments_are_nested(ws) -> None:
    rule = (
        "in segment 'bj_buyers' and (gender = '男' or not channel = 'app') and true and not false"
    )
    trace = why(ws, rule, "c03", AS_OF)  # 北京, 女, app, two orders in 2023
    assert trace.member is False
    assert trace.root.lines() == [
        "✗ all of:",
        "  ✓ in segment 'bj_buyers'",
        "    ✓ all of:",
        "      ✓ in segment 'beijing'",
        "        ✓ city = '北京'  (= '北京')",
        "      ✓ count(orders) = 2  (>= 1)",
        "  ✗ any of:",
        "    ✗ gender = '女'  (needs = '男')",
        "    ✗ not:",
        "      ✓ channel = 'app'  (= 'app')",
        "  ✓ true",
        "  ✓ not:",
        "    ✗ false",
    ]
    data = trace.as_dict()["trace"]
    assert [c["kind"] for c in data["children"]] == ["segment", "or", "const", "not"]
    assert data["children"][0]["segment"] == "bj_buyers"


RULES = [
    "in segment 'bj_buyers' or (count(orders, last 30 days) >= 1 and not city = '上海')",
    "r_score >= 4 or churn_risk < 0.5 or attributes.会员等级 is not null",
    "count(events where type = 'product_view' then no events where type = 'add_to_cart' "
    "within 1 day, last 30 days) >= 1 or days_since_last_order between 0 and 10",
]


@pytest.mark.parametrize("rule", RULES)
def test_the_trace_agrees_with_the_engine_for_every_customer(ws, rule: str) -> None:
    members = set(evaluate(ws, rule, AS_OF))
    assert 0 < len(members) < len(ALL)  # the rule splits the customers, so this can fail
    for cid in ALL:
        assert why(ws, rule, cid, AS_OF).member is (cid in members), cid


def test_a_past_date_reads_the_membership_history(tmp_path_factory, tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path_factory, tmp_path)
    try:
        recent = [Segment(name="recent", rule="count(orders, last 3 days) > 0")]
        apply(ws, recent, "2024-06-26")  # c01 (06-25) enters
        apply(ws, recent, "2024-06-29")  # c01 leaves, c04 (06-29) enters
        trace = why(ws, "recent", "c01", "2024-06-27")
        assert trace.member is True  # 06-25 is within 06-25 … 06-27
        assert trace.recorded == {
            "member": True,
            "run": datetime(2024, 6, 26),
            "interval": {"entered_at": datetime(2024, 6, 26), "exited_at": datetime(2024, 6, 29)},
        }
        assert trace.intervals == [trace.recorded["interval"]]
        later = why(ws, "recent", "c01", "2024-06-29")
        assert later.member is False and later.recorded["member"] is False
        assert later.recorded["interval"] is None
        before = why(ws, "recent", "c01", "2024-06-20")
        assert before.recorded["member"] is None  # no evaluation by then
        assert why(ws, "count(orders, last 3 days) > 0", "c01", "2024-06-27").recorded is None
    finally:
        ws.close()


def test_errors_say_what_is_wrong(ws) -> None:
    with pytest.raises(InputError, match="no customer 'nobody'"):
        why(ws, "beijing", "nobody", AS_OF)
    with pytest.raises(RuleError, match="unknown field 'ctiy'"):
        why(ws, "ctiy = '北京'", "c01", AS_OF)


def test_cli_why(ws) -> None:
    from kequn.cli import app

    folder = str(ws.path)
    runner = CliRunner()
    result = runner.invoke(
        app, ["segment", "why", "bj_buyers", "c07", "--as-of", AS_OF, "-w", folder]
    )
    assert result.exit_code == 0, result.output
    # c07 is in Beijing with only a return: no purchase, so not a member
    assert "not a member of bj_buyers" in result.stdout
    assert "✗ count(orders) = 0  (needs >= 1)" in result.stdout
    assert "history (run of 2024-06-30 00:00): not a member" in result.stdout
    result = runner.invoke(
        app, ["segment", "why", "bj_buyers", "c01", "--as-of", AS_OF, "-w", folder, "--json"]
    )
    data = json.loads(result.stdout)
    assert data["member"] is True and data["recorded"]["member"] is True
    assert data["trace"]["children"][1]["value"] == 3  # o01, o02, o03 (o04 is after as_of)
    result = runner.invoke(app, ["segment", "why", "bj_buyers", "zz", "-w", folder])
    assert result.exit_code == 2 and "no customer 'zz'" in result.stderr


def test_http_why_diff_and_schedule(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    """The API against a real ``kequn serve``: traces masked by role, a dry run that writes
    nothing, the calendar and the freshness keys of the segment list."""
    from server_util import Server, wait_for

    from kequn.access import create_token

    workspace = copy_workspace(tmp_path_factory, tmp_path)
    rule = "city = '北京' and email ends with '@example.com'"
    apply(workspace, [Segment(name="bj", rule=rule, schedule="1d")], AS_OF)
    tokens = {role: create_token(workspace, f"t-{role}", role) for role in ("analyst", "viewer")}
    workspace.close()
    srv = Server(tmp_path / "ws")
    try:
        url = f"/v1/segments/bj/why/c01?as_of={AS_OF}"
        with srv.client(tokens["analyst"]) as analyst:
            # bj's daily refresh was missed (last run 2024): the service runs it at start
            listed = wait_for(
                lambda: {
                    r["name"]: r for r in analyst.get("/v1/segments").json() if not r["missed"]
                }
            )
            assert listed["bj"]["schedule"] == "1d"
            assert listed["bj"]["evaluated_at"] > "2025"
            body = analyst.get(url).json()
            assert body["member"] is True and body["recorded"]["member"] is True
            email = body["trace"]["children"][1]
            assert (email["operand"], email["value"]) == ("email", "zw@example.com")
            assert analyst.get("/v1/segments/bj/why/nobody").status_code == 404
            assert analyst.get("/v1/segments/bx/why/c01").status_code == 404
            draft = {"name": "bj", "rule": "city = '北京' and channel = 'app'", "schedule": "6h"}
            r = analyst.post("/v1/segments/diff?show=5", json=[draft])
            assert r.status_code == 200, r.text
            seg = r.json()["segments"][0]
            # c07 (web) leaves; c01 and c03 (app) stay
            assert (seg["entering"], seg["leaving"]) == ([], ["c07"])
            # saved through the API, the caller would become the owner (as POST /v1/segments)
            assert seg["changes"] == ["rule", "owner", "schedule"]
            current = analyst.get("/v1/segments/bj/members").json()["members"]
            assert "c07" in {m["customer_id"] for m in current}  # nothing was written
            bad = analyst.post("/v1/segments/diff", json={"name": "bj", "rule": "ctiy = 1"})
            assert bad.status_code == 422 and bad.json()["field"] == "rule"
            odd = analyst.post("/v1/segments/diff", json={"name": "bj", "rule": "true", "x": 1})
            assert odd.status_code == 422
            cal = analyst.get("/v1/schedule?horizon=2d").json()
            assert cal["entries"][0]["name"] == "bj" and cal["entries"][0]["state"] != "missed"
        with srv.client(tokens["viewer"]) as viewer:
            email = viewer.get(url).json()["trace"]["children"][1]
            assert email["value"] != "zw@example.com" and email["value"].endswith("@example.com")
            assert viewer.post("/v1/segments/diff", json=draft).status_code == 403
    finally:
        srv.stop()
