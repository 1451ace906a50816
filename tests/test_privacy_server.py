"""Privacy over HTTP, against real `kequn serve` processes on 127.0.0.1: roles and grants
reading one profile, sensitive fields in rules, refused exports, consent, erasure, and
tokens that do not cross workspaces."""

from __future__ import annotations

import json

import pytest
from server_util import Server
from typer.testing import CliRunner

from kequn import init_workspace, open_workspace
from kequn.access import audit_entries, create_token
from kequn.cli import app
from kequn.ingest import import_files

CSV = (
    "客户ID,姓名,邮箱,手机号,城市,身份证号,health_condition\n"
    "C1,欧阳子轩,ouyang@example.com,13800138000,上海,110101199003071234,糖尿病\n"
    "C2,司马懿然,sima@example.com,13900139000,北京,110101198805051111,\n"
)


def _workspace(path, write):
    ws = init_workspace(path)
    config = path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('# health_condition = "sensitive"', 'health_condition = "sensitive"'),
        encoding="utf-8",
    )
    ws.close()
    ws = open_workspace(path)
    import_files(ws, "customers", [write("c.csv", CSV)])
    return ws


@pytest.fixture
def served(tmp_path, write):
    ws = _workspace(tmp_path / "ws", write)
    tokens = {
        "viewer": create_token(ws, "dash", "viewer"),
        "analyst": create_token(ws, "bi", "analyst"),
        "analyst+s": create_token(ws, "care", "analyst", grants=["sensitive"]),
        "admin": create_token(ws, "root", "admin"),
        "ingest": create_token(ws, "shop", "ingest"),
    }
    ws.close()
    srv = Server(tmp_path / "ws")
    yield srv, tokens
    srv.stop()


def test_viewer_analyst_admin_read_one_profile(served):
    srv, tokens = served
    seen = {}
    for who in ("viewer", "analyst", "analyst+s", "admin"):
        with srv.client(tokens[who]) as c:
            r = c.get("/v1/customers/C1")
            assert r.status_code == 200, r.text
            seen[who] = r.json()["attributes"]
    # viewer: personal masked, sensitive hidden
    assert seen["viewer"]["phone"] == "138****8000"
    assert seen["viewer"]["email"] == "o***@example.com"
    assert seen["viewer"]["name"] == "欧***"
    assert seen["viewer"]["身份证号"] == "110***********1234"
    assert "health_condition" not in seen["viewer"]
    # analyst without the grant: personal clear, sensitive hidden
    assert seen["analyst"]["phone"] == "13800138000" and seen["analyst"]["name"] == "欧阳子轩"
    assert seen["analyst"]["身份证号"] == "110101199003071234"
    assert "health_condition" not in seen["analyst"]
    assert "糖尿病" not in json.dumps(seen["analyst"], ensure_ascii=False)
    # the grant, and admin: everything in clear
    assert seen["analyst+s"]["health_condition"] == "糖尿病"
    assert seen["admin"] == seen["analyst+s"]
    srv.stop()
    with open_workspace(srv.workspace) as ws:
        reads = audit_entries(ws, action="sensitive.read")
    assert sorted(e["actor"] for e in reads) == ["token:care", "token:root"]
    assert all(e["target"] == "C1" and e["detail"]["fields"] == ["health_condition"] for e in reads)


def test_sensitive_field_in_rule_needs_the_grant(served):
    srv, tokens = served
    rule = "attributes.health_condition = '糖尿病'"
    with srv.client(tokens["analyst"]) as c:
        r = c.post("/v1/segments", json={"name": "diabetic", "rule": rule})
        assert r.status_code == 422
        body = r.json()
        assert body["field"] == "rule"
        assert (
            "attributes.health_condition" in body["error"] and "'sensitive' grant" in body["error"]
        )
        assert "token 'bi'" in body["error"]
        # through another segment too
        assert (
            c.post("/v1/segments", json={"name": "sh", "rule": "city = '上海'"}).status_code == 200
        )
    with srv.client(tokens["analyst+s"]) as c:
        r = c.post("/v1/segments", json={"name": "diabetic", "rule": rule})
        assert r.status_code == 200, r.text
        assert r.json()["size"] == 1
    with srv.client(tokens["analyst"]) as c:
        r = c.post("/v1/segments", json={"name": "x", "rule": "in segment 'diabetic'"})
        assert r.status_code == 422 and "health_condition" in r.json()["error"]


def test_exports_refused_and_audited(served):
    srv, tokens = served
    with srv.client(tokens["admin"]) as c:
        assert (
            c.post("/v1/segments", json={"name": "sh", "rule": "city = '上海'"}).status_code == 200
        )
    with srv.client(tokens["viewer"]) as c:
        assert c.post("/v1/segments/sh/export", json={"format": "csv"}).status_code == 403
    with srv.client(tokens["analyst"]) as c:
        r = c.get("/v1/customers/C1/export")
        assert r.status_code == 403 and "admin" in r.json()["error"]
    with srv.client(tokens["admin"]) as c:
        r = c.get("/v1/customers/C1/export")
        assert r.status_code == 200
        assert r.json()["tables"]["customers"][0]["attributes"]["health_condition"] == "糖尿病"
    srv.stop()
    with open_workspace(srv.workspace) as ws:
        refused = {(e["actor"], e["target"]) for e in audit_entries(ws, action="export.refused")}
        done = {(e["actor"], e["target"]) for e in audit_entries(ws, action="person.export")}
    assert refused == {("token:dash", "sh"), ("token:bi", "C1")}
    assert done == {("token:root", "C1")}


def test_consent_and_erasure_over_http(served):
    srv, tokens = served
    consent = {"customer_id": "C1", "channel": "sms", "status": "opt_out", "source": "app"}
    with srv.client(tokens["viewer"]) as c:
        assert c.post("/v1/consents", json=consent).status_code == 403
    with srv.client(tokens["ingest"]) as c:
        r = c.post("/v1/consents", json={"consents": [consent]})
        assert r.status_code == 200 and r.json() == {"written": 1}
        r = c.post("/v1/consents", json={**consent, "channel": "fax"})
        assert r.status_code == 422 and "fax" in r.json()["error"]
    with srv.client(tokens["analyst"]) as c:
        [row] = c.get("/v1/customers/C1/consents").json()
        assert (row["channel"], row["status"], row["source"]) == ("sms", "opt_out", "app")
        assert c.delete("/v1/customers/C2").status_code == 403
    with srv.client(tokens["admin"]) as c:
        r = c.delete("/v1/customers/C2")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tables"]["customers"] == 1 and "customer_id" not in body
        assert c.get("/v1/customers/C2").status_code == 422
        # the erased person's events are not taken again through the API
        events = [
            {"event_id": "after-1", "customer_id": "C2", "type": "view"},
            {"event_id": "after-2", "customer_id": "C1", "type": "view"},
        ]
        r = c.post("/v1/events", json=events)
        assert r.json()["accepted"] == 1 and r.json()["erased_ids"] == ["after-1"]
        assert c.get("/v1/customers/C2").status_code == 422
    srv.stop()
    with open_workspace(srv.workspace) as ws:
        assert [e["actor"] for e in audit_entries(ws, action="erasure.refused")] == ["token:bi"]
        erasures = audit_entries(ws, action="erasure")  # erasure and erasure.* (refused)
        assert [(e["action"], e["actor"]) for e in erasures] == [
            ("erasure", "token:root"),
            ("erasure.refused", "token:bi"),
        ]
    # the server could not rewrite the file it holds open; `kequn compact` does
    db = srv.workspace / "kequn.duckdb"
    result = CliRunner().invoke(app, ["compact", "-w", str(srv.workspace)])
    assert result.exit_code == 0, result.output
    assert b"sima@example.com" not in db.read_bytes()
    assert b"ouyang@example.com" in db.read_bytes()


def test_tokens_do_not_cross_workspaces(tmp_path, write):
    tokens = {}
    servers = {}
    for name in ("a", "b"):
        ws = _workspace(tmp_path / name, write)
        tokens[name] = create_token(ws, "root", "admin")  # same name, different secret
        ws.close()
    try:
        for name in ("a", "b"):
            servers[name] = Server(tmp_path / name)
        with servers["b"].client(tokens["a"]) as c:
            r = c.get("/v1/customers/C1")
            assert r.status_code == 401 and "unknown or revoked" in r.json()["error"]
        with servers["b"].client(tokens["b"]) as c:
            assert c.get("/v1/customers/C1").status_code == 200
        with servers["a"].client(tokens["a"]) as c:
            assert c.get("/v1/customers/C1").status_code == 200
    finally:
        for srv in servers.values():
            srv.stop()


def test_public_address_needs_a_token(tmp_path):
    init_workspace(tmp_path / "open").close()
    result = CliRunner().invoke(
        app, ["serve", "--host", "0.0.0.0", "--port", "9", "-w", str(tmp_path / "open")]
    )
    assert result.exit_code != 0
    assert "refusing to serve on '0.0.0.0' without an API token" in result.output
