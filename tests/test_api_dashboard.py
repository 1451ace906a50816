"""The dashboard's API (``kequn/server/api_dashboard.py``, ``jobs.py``) against a real server.

One workspace is built from the sample data with the same commands a user types
(:func:`build_workspace`, also used by the browser tests and ``scripts/screenshots.py``);
expected figures are computed independently with DuckDB SQL on the file before the server
holds it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from server_util import Server, wait_for

from kequn import access
from kequn.cli import app as cli_app
from kequn.workspace import open_workspace

TRIGGERS = """
[[trigger]]
name = "welcome-vip"
segment = "high_value"
on = "enter"
channel = "file"
path = "exports/high-value.jsonl"
cap = "none"

[trigger.experiment]
name = "vip-welcome"
arms = { holdout = 0.2, a = 0.8 }
outcome = "order"
window_days = 30
"""


def kequn(*args: str) -> None:
    """Run one CLI command in this process (as ``kequn.demo`` does)."""
    try:
        cli_app(list(args), standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise


def build_workspace(root: Path, customers: int = 600) -> Path:
    """A workspace with every page's data: scores, two evaluations, a cluster run, a trigger
    with an experiment and its deliveries. Returns the workspace folder (closed)."""
    data, ws = root / "sample", root / "ws"
    w = ("-w", str(ws))
    kequn("sample", "--customers", str(customers), "--no-cdnow", "--out", str(data))
    kequn("init", str(ws))
    kequn("import", "customers", str(data / "customers.csv"), "--source", "crm", *w)
    kequn("import", "customers", str(data / "members.csv"), "--source", "shop", *w)
    kequn("import", "orders", str(data / "orders.csv"), *w)
    kequn("import", "events", str(data / "events.csv"), *w)
    kequn("rfm", "--as-of", "2025-12-31", *w)
    kequn("clv", "predict", "--as-of", "2025-12-31", "--horizon", "90d", *w)
    kequn("lifecycle", "--as-of", "2025-09-30", *w)
    kequn("lifecycle", "--as-of", "2025-12-31", *w)
    segments = Path(__file__).parents[1] / "kequn" / "sample" / "data" / "segments.toml"
    kequn("segment", "apply", str(segments), "--as-of", "2025-09-30", *w)
    (root / "triggers.toml").write_text(TRIGGERS, encoding="utf-8")
    kequn("trigger", "apply", str(root / "triggers.toml"), *w)
    kequn("segment", "apply", str(segments), "--as-of", "2025-12-31", *w)
    kequn("cluster", "--as-of", "2025-12-31", "--k", "3", *w)
    return ws


# --- the routes against SQL ----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = build_workspace(tmp_path_factory.mktemp("api-dashboard"), customers=300)
    ws = open_workspace(folder)
    tokens = {r: access.create_token(ws, f"t-{r}", r) for r in ("admin", "viewer")}
    ws.close()
    con = duckdb.connect(str(folder / "kequn.duckdb"), read_only=True)

    def sql(query: str, *args):
        return con.execute(query, list(args)).fetchall()

    expected = {
        "customers": sql("SELECT count(*) FROM customers")[0][0],
        "revenue": sql("SELECT sum(amount) FROM orders WHERE NOT is_return")[0][0],
        "active": sql(
            "SELECT count(DISTINCT customer_id) FROM orders WHERE NOT is_return AND ordered_at > "
            "(SELECT max(ordered_at) FROM orders WHERE NOT is_return) - INTERVAL 90 DAY"
        )[0][0],
        "rfm": {
            (r, f): n
            for r, f, n in sql(
                "SELECT r_score, f_score, count(*) FROM rfm_scores WHERE scheme = 'intl' "
                "AND as_of = (SELECT max(as_of) FROM rfm_scores) GROUP BY ALL"
            )
        },
        "funnel": dict(
            sql(
                "SELECT funnel_stage, count(*) FROM lifecycle_stages "
                "WHERE as_of = (SELECT max(as_of) FROM lifecycle_stages) GROUP BY ALL"
            )
        ),
        "shanghai": sql("SELECT count(*) FROM customers WHERE city = '上海'")[0][0],
        "high_value": sorted(
            r[0]
            for r in sql(
                "SELECT customer_id FROM memberships WHERE segment = 'high_value' "
                "AND exited_at IS NULL"
            )
        ),
        "timeline": sql(
            "SELECT (SELECT count(*) FROM orders WHERE customer_id = 'C000001') + "
            "(SELECT count(*) FROM events WHERE customer_id = 'C000001')"
        )[0][0],
    }
    con.close()
    server = Server(folder)
    try:
        yield server, tokens, expected
    finally:
        server.stop()


def test_overview_figures_match_sql(served):
    server, tokens, want = served
    with server.client(tokens["admin"]) as c:
        d = c.get("/v1/dashboard/overview").json()
    assert d["customers"] == want["customers"]
    assert d["revenue"] == pytest.approx(want["revenue"])
    assert d["active"] == want["active"]
    assert {(x["r_score"], x["f_score"]): x["customers"] for x in d["rfm"]["cells"]} == want["rfm"]
    funnel = {s["stage"]: s["customers"] for s in d["lifecycle"]["funnel"]}
    assert {k: v for k, v in funnel.items() if v} == want["funnel"]
    assert sum(r["revenue"] for r in d["trends"]) <= want["revenue"] + 1e-6


def test_rule_check_reports_position_then_counts(served):
    server, tokens, want = served
    with server.client(tokens["viewer"]) as c:
        bad = c.post("/v1/dashboard/rule", json={"rule": "count(orders) > 1 and\n  citty = 'x'"})
        good = c.post("/v1/dashboard/rule", json={"rule": "city = '上海'", "sample": 3})
    assert bad.status_code == 200
    error = bad.json()["error"]
    assert bad.json()["valid"] is False
    assert (error["line"], error["column"]) == (2, 3)
    assert "'city'" in error["message"]
    body = good.json()
    assert body["valid"] and body["count"] == want["shanghai"]
    assert len(body["sample"]) == min(3, want["shanghai"])
    shown = [r["phone"] for r in body["sample"] if r["phone"]]
    assert all("****" in p for p in shown)  # a viewer's sample is masked


def test_members_search_and_pages_cover_the_segment(served):
    server, tokens, want = served
    seen: list[str] = []
    with server.client(tokens["admin"]) as c:
        offset = 0
        while True:
            page = c.get(
                "/v1/dashboard/segments/high_value/members", params={"offset": offset, "limit": 7}
            ).json()
            assert page["total"] == len(want["high_value"])
            seen += [m["customer_id"] for m in page["members"]]
            offset += 7
            if offset >= page["total"]:
                break
        one = want["high_value"][0]
        found = c.get("/v1/dashboard/segments/high_value/members", params={"q": one}).json()
        timeline = c.get("/v1/dashboard/customers/C000001/timeline", params={"limit": 5}).json()
    assert seen == want["high_value"]
    assert [m["customer_id"] for m in found["members"]] == [one]
    assert timeline["total"] == want["timeline"]
    times = [i["at"] for i in timeline["items"]]
    assert times == sorted(times, reverse=True)


def test_jobs_run_in_the_background_and_roles_hold(served):
    server, tokens, _ = served
    with server.client(tokens["admin"]) as c:
        job = c.post("/v1/jobs/evaluate", json={"segments": ["high_value"]}).json()
        done = wait_for(
            lambda: (j := c.get(f"/v1/jobs/{job['job_id']}").json())["status"] != "running" and j,
            timeout=60,
        )
        assert done["status"] == "done", done["error"]
        assert set(done["result"]["segments"]) == {"high_value"}
        assert c.get("/v1/dashboard/tokens").status_code == 200
        assert c.get("/v1/jobs/nope").status_code == 404
    with server.client(tokens["viewer"]) as c:
        assert c.get("/v1/dashboard/session").json()["role"] == "viewer"
        assert c.get("/v1/dashboard/tokens").status_code == 403
        assert c.post("/v1/jobs/evaluate", json={}).status_code == 403
        upload = c.post("/v1/dashboard/uploads?filename=a.csv&kind=orders", content=b"x,y\n1,2\n")
        assert upload.status_code == 403
    with server.client() as c:
        assert c.get("/v1/dashboard/session").json() == {"authenticated": False, "error": None}
        assert c.get("/v1/dashboard/overview").status_code == 401
        page = c.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert c.get("/static/vendor/echarts.min.js").status_code == 200
