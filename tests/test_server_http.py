"""The HTTP API of ``kequn serve``: a real server process on 127.0.0.1, real requests."""

from __future__ import annotations

import csv
import io

import pytest
from server_util import Server, wait_for

from kequn import init_workspace, open_workspace
from kequn.access import audit_entries, create_token

CART = "count(events where type = 'add_to_cart', last 30 days) > 0 and count(orders, ever) = 0"


@pytest.fixture
def server(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    ws.close()
    srv = Server(tmp_path / "ws")
    yield srv
    srv.stop()


@pytest.fixture
def secured(tmp_path):
    """A server with tokens: one per role."""
    ws = init_workspace(tmp_path / "ws")
    tokens = {role: create_token(ws, f"t-{role}", role) for role in ROLES}
    ws.close()
    srv = Server(tmp_path / "ws")
    yield srv, tokens
    srv.stop()


ROLES = ("admin", "analyst", "viewer", "ingest")


def members(client, name: str) -> set[str]:
    body = client.get(f"/v1/segments/{name}/members").json()
    return {m["customer_id"] for m in body["members"]}


def test_event_to_membership_over_http(server):
    with server.client() as c:
        r = c.post("/v1/segments", json={"name": "cart", "rule": CART, "label_zh": "加购未下单"})
        assert r.status_code == 200, r.text
        assert r.json()["size"] == 0
        r = c.post(
            "/v1/events",
            json={
                "events": [
                    {"event_id": "e1", "customer_id": "C1", "type": "add_to_cart"},
                    {"event_id": "e2", "customer_id": "C2", "type": "view"},
                ]
            },
        )
        assert r.json() == {"accepted": 2, "duplicates": 0, "duplicate_ids": [], "erased_ids": []}
        assert wait_for(lambda: members(c, "cart") == {"C1"})
        r = c.post("/v1/orders", json={"order_id": "o1", "customer_id": "C1", "amount": 99.5})
        assert r.status_code == 200, r.text
        assert wait_for(lambda: members(c, "cart") == set())
        listed = {s["name"]: s for s in c.get("/v1/segments").json()}
        assert listed["cart"]["live_size"] == 0 and listed["cart"]["label_zh"] == "加购未下单"
        profile = c.get("/v1/customers/C1").json()
        assert profile["customer_id"] == "C1"
        assert c.get("/openapi.json").json()["paths"]["/v1/events"]


def test_retried_request_is_accepted_once(server):
    batch = [{"event_id": f"e{i}", "customer_id": "C1", "type": "view"} for i in range(3)]
    with server.client() as c:
        assert c.post("/v1/events", json=batch).json()["accepted"] == 3
        again = c.post("/v1/events", json=batch).json()
        assert again == {
            "accepted": 0,
            "duplicates": 3,
            "duplicate_ids": ["e0", "e1", "e2"],
            "erased_ids": [],
        }


def test_bad_requests_say_what_and_where(server):
    with server.client() as c:
        r = c.post(
            "/v1/events",
            content=b'{"event_id": "e1", ',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = c.post(
            "/v1/events",
            json=[{"event_id": "e1", "customer_id": "C1", "type": "view", "occured_at": "x"}],
        )
        assert r.status_code == 422
        assert r.json()["field"] == "events.0.occured_at"
        r = c.post("/v1/events", json=[{"event_id": "e1", "customer_id": "C1"}])
        assert r.status_code == 422 and r.json()["field"] == "events.0.type"
        big = [{"event_id": f"e{i}", "customer_id": "C", "type": "v"} for i in range(1001)]
        r = c.post("/v1/events", json=big)
        assert r.status_code == 413 and "at most 1000" in r.json()["error"]
        r = c.post("/v1/segments", json={"name": "bad", "rule": "cty = '北京'"})
        assert r.status_code == 422
        body = r.json()
        assert body["field"] == "rule" and "city" in body["error"] and "^" in body["error"]
        assert c.get("/v1/segments/nope").status_code == 404
        assert c.get("/v1/segments/nope/members").status_code == 404
        # nothing half-written: the rejected requests left no events behind
        assert c.get("/v1/status").json()["accepted_seq"] == 0


def test_roles_and_masking(secured):
    srv, tokens = secured
    with srv.client() as anonymous:
        assert anonymous.get("/v1/segments").status_code == 401
    with srv.client("kq_not-a-token") as wrong:
        assert wrong.get("/v1/segments").status_code == 401
    with srv.client(tokens["ingest"]) as ingest:
        r = ingest.post(
            "/v1/customers",
            json={"customer_id": "C1", "city": "北京", "phone": "13812341234", "email": "li@x.cn"},
        )
        assert r.status_code == 200, r.text
        assert ingest.get("/v1/segments").status_code == 403
    with srv.client(tokens["viewer"]) as viewer:
        r = viewer.post("/v1/segments", json={"name": "bj", "rule": "city = '北京'"})
        assert r.status_code == 403 and "viewer" in r.json()["error"]
    with srv.client(tokens["analyst"]) as analyst:
        assert (
            analyst.post("/v1/segments", json={"name": "bj", "rule": "city = '北京'"}).json()[
                "size"
            ]
            == 1
        )
        page = analyst.get("/v1/segments/bj/members").json()
        assert page["members"][0]["phone"] == "13812341234"
        r = analyst.post("/v1/segments/bj/export", json={"format": "csv"})
        assert r.status_code == 200 and r.headers["x-kequn-rows"] == "1"
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0]["customer_id"] == "C1" and rows[0]["city"] == "北京"
    with srv.client(tokens["viewer"]) as viewer:
        page = viewer.get("/v1/segments/bj/members").json()
        assert page["total"] == 1
        assert page["members"][0]["phone"] == "138****1234"
        assert page["members"][0]["email"].startswith("l") and "***" in page["members"][0]["email"]
        profile = viewer.get("/v1/customers/C1").json()
        assert profile["attributes"]["phone"] == "138****1234"
        assert "13812341234" not in str(profile)
        r = viewer.post("/v1/segments/bj/export", json={"format": "csv"})
        assert r.status_code == 403
    srv.stop()
    with open_workspace(srv.workspace) as ws:
        done = {(e["actor"], e["action"], e["target"]) for e in audit_entries(ws)}
    assert ("token:t-analyst", "rule.create", "bj") in done
    assert ("token:t-analyst", "export", "bj") in done
    assert not any(a == "token:t-viewer" and act == "export" for a, act, _ in done)
