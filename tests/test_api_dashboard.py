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
        "buyers": sql("SELECT count(DISTINCT customer_id) FROM orders WHERE NOT is_return")[0][0],
        "monthly": {
            str(m)[:7]: (n, orders, new)
            for m, n, orders, new in sql(
                "WITH b AS (SELECT * FROM orders WHERE NOT is_return), "
                "s AS (SELECT date_trunc('month', max(ordered_at)) - INTERVAL 2 YEAR AS s FROM b), "
                "n AS (SELECT m, count(*) AS n FROM (SELECT date_trunc('month', min(ordered_at)) "
                "AS m FROM b GROUP BY customer_id) GROUP BY m), "
                "w AS (SELECT date_trunc('month', ordered_at) AS m, count(DISTINCT customer_id) "
                "AS buyers, count(*) AS orders FROM b, s WHERE ordered_at >= s.s GROUP BY 1) "
                "SELECT w.m, w.buyers, w.orders, coalesce(n.n, 0) FROM w LEFT JOIN n USING (m)"
            )
        },
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


def ready(client, path: str, timeout: float = 60.0) -> dict:
    """Ask a background figure's route until it is computed."""

    def answer():
        got = client.get(path).json()
        assert got["status"] in ("ready", "computing"), got
        return got if got["status"] == "ready" else None

    return wait_for(answer, timeout=timeout, interval=0.2)


def test_overview_figures_match_sql(served):
    server, tokens, want = served
    with server.client(tokens["admin"]) as c:
        d = c.get("/v1/dashboard/overview").json()
        orders = ready(c, "/v1/dashboard/overview/orders?wait=1")
        buyers = ready(c, "/v1/dashboard/overview/buyers?wait=1")
        again = c.get("/v1/dashboard/overview").json()
    assert d["customers"] == want["customers"]
    assert d["buyers"]["status"] in ("ready", "computing")
    o, b = orders["value"], buyers["value"]
    assert o["revenue"] == pytest.approx(want["revenue"])
    assert (b["active"], b["buyers"]) == (want["active"], want["buyers"])
    months = {
        str(r["month"])[:7]: (m["buyers"], r["orders"], m["new_buyers"])
        for r, m in zip(o["trends"], b["months"], strict=True)
    }
    assert months == want["monthly"]
    # kept: the same figures at once while nothing changed
    for part, first in (("orders", orders), ("buyers", buyers)):
        assert again[part]["status"] == "ready"
        assert again[part]["computed_at"] == first["computed_at"]
    assert {(x["r_score"], x["f_score"]): x["customers"] for x in d["rfm"]["cells"]} == want["rfm"]
    funnel = {s["stage"]: s["customers"] for s in d["lifecycle"]["funnel"]}
    assert {k: v for k, v in funnel.items() if v} == want["funnel"]
    assert sum(r["revenue"] for r in o["trends"]) <= want["revenue"] + 1e-6


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


def test_segment_head_and_one_customer_profile_match_the_core_routes(served):
    server, tokens, want = served
    with server.client(tokens["admin"]) as c:
        head = c.get("/v1/dashboard/segments/high_value").json()
        core = c.get("/v1/segments/high_value").json()
        profiles = [
            (c.get(f"/v1/dashboard/customers/{cid}/profile?recent=5").json(),
             c.get(f"/v1/customers/{cid}?recent=5").json())
            for cid in ("C000001", want["high_value"][0])
        ]  # fmt: skip
    with server.client(tokens["viewer"]) as c:
        masked = c.get("/v1/dashboard/customers/C000001/profile").json()
        masked_core = c.get("/v1/customers/C000001?recent=5").json()
    assert head["live_size"] == len(want["high_value"]) == core["live_size"]
    for key in ("rule", "as_of", "size", "previous", "change", "share", "label_en"):
        assert head[key] == core[key], key
    for mine, theirs in profiles:
        assert mine == theirs
        assert mine["recent_orders"]  # a customer with orders: the copies were read
    assert masked == masked_core


def test_persona_and_health_come_from_the_background_and_follow_evaluations(served):
    server, tokens, want = served
    with server.client(tokens["admin"]) as c:
        persona = ready(c, "/v1/dashboard/segments/high_value/persona")
        health = ready(c, "/v1/dashboard/health")
        assert c.get("/v1/dashboard/health").json()["computed_at"] == health["computed_at"]
        names = [s["name"] for s in c.get("/v1/segments").json()]
        job = c.post("/v1/jobs/evaluate", json={"segments": ["dormant"]}).json()
        wait_for(lambda: c.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "done", 60)
        after = ready(c, "/v1/dashboard/health")
    assert persona["persona"]["size"] == len(want["high_value"])
    assert persona["persona"]["target"] == "high_value"
    assert set(health["segments"]) == set(names)
    indexes = [x for x in health["segments"].values() if x is not None]
    assert indexes and all(0 <= x <= 100 for x in indexes)
    assert after["computed_at"] > health["computed_at"]  # a new evaluation: computed again


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


def test_background_figures_wait_keep_renew_fail_and_retry(tmp_path):
    from kequn.errors import InputError
    from kequn.server.jobs import Background
    from kequn.workspace import init_workspace

    init_workspace(tmp_path / "ws").close()
    figures = Background(tmp_path / "ws", workers=1)
    calls: list[str] = []

    def customers(ws) -> int:  # a real query on the worker's own connection
        calls.append("customers")
        return int(ws.table("customers").count().execute()) + len(calls)

    def broken(ws):
        calls.append("broken")
        raise InputError("no such thing")

    try:
        first = figures.get("n", 1, customers, wait=30)
        kept = figures.get("n", 1, customers)
        renewing = figures.get("n", 2, customers)
        renewed = wait_for(lambda: (a := figures.get("n", 2, customers))["status"] == "ready" and a)
        failed = figures.get("bad", 1, broken, wait=30)
        retried = figures.get("bad", 1, broken, wait=30)
    finally:
        figures.close()
    assert (first["status"], first["value"], first["stale"]) == ("ready", 1, False)
    assert (kept["status"], kept["value"], kept["computed_at"]) == (
        "ready", 1, first["computed_at"])  # fmt: skip
    assert (renewing["status"], renewing["value"], renewing["stale"]) == ("computing", 1, True)
    assert renewed["value"] == 2
    assert (failed["status"], failed["error"]) == ("failed", "no such thing")
    assert retried["status"] == "failed"
    assert calls == ["customers", "customers", "broken", "broken"]
