"""Access control: tokens, roles, masking and the audit log, on a real workspace."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime

import pytest
from typer.testing import CliRunner

from kequn.access import (
    ACTIONS,
    AuthError,
    PermissionDenied,
    Principal,
    allowed,
    audit,
    audit_entries,
    authenticate,
    create_token,
    list_tokens,
    local_actor,
    mask_email,
    mask_id_number,
    mask_phone,
    mask_record,
    require,
    revoke_token,
)
from kequn.cli import app
from kequn.errors import InputError, KequnError

runner = CliRunner()

EXPECTED = {
    # role: the actions it may do (everything else refused)
    "admin": {"read", "read_personal", "ingest", "write_rules", "export", "admin"},
    "analyst": {"read", "read_personal", "write_rules", "export"},
    "viewer": {"read"},
    "ingest": {"ingest"},
}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_each_roles_permissions(role):
    who = Principal("t", role)
    for action in ACTIONS:
        assert allowed(who, action) == (action in EXPECTED[role]), (role, action)
        if action in EXPECTED[role]:
            require(who, action)
        else:
            with pytest.raises(PermissionDenied, match=f"role '{role}'.*'{action}'"):
                require(who, action)


def test_viewer_export_is_refused_with_403():
    with pytest.raises(PermissionDenied) as info:
        require(Principal("dash", "viewer"), "export")
    assert info.value.status_code == 403 and isinstance(info.value, PermissionError)
    assert isinstance(info.value, KequnError)
    assert "roles that may: admin, analyst" in str(info.value)


def test_unknown_action_and_role():
    with pytest.raises(InputError, match="'exprot'.*did you mean 'export'"):
        allowed(Principal("t", "admin"), "exprot")
    assert not allowed(Principal("t", "superuser"), "read")


def test_mask_functions():
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("+86 138-1234-1234") == "138****1234"
    assert mask_phone(13812341234) == "138****1234"
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email("Bob.Smith@mail.example.cn") == "B***@mail.example.cn"
    assert mask_id_number("110101199003071234") == "110***********1234"
    assert mask_id_number("11010119900307123X") == "110***********123X"
    assert len(mask_id_number("110101199003071234")) == 18
    for fn in (mask_phone, mask_email, mask_id_number):
        assert fn(None) is None and fn("") == ""
    # too short to keep both ends: only the last two characters stay
    assert mask_phone("12345") == "***45"


RECORD = {
    "customer_id": "c1",
    "name": "张三",
    "city": "北京",
    "phone": "13812341234",
    "email": "alice@example.com",
    "attributes": json.dumps(
        {"身份证号": "110101199003071234", "手机号": "13900001111", "会员等级": "gold"},
        ensure_ascii=False,
    ),
}


def test_viewer_sees_masked_fields():
    seen = mask_record(RECORD, Principal("dash", "viewer"))
    assert seen["phone"] == "138****1234"
    assert seen["email"] == "a***@example.com"
    assert (seen["customer_id"], seen["name"], seen["city"]) == ("c1", "张三", "北京")
    attrs = json.loads(seen["attributes"])
    assert attrs == {"身份证号": "110***********1234", "手机号": "139****1111", "会员等级": "gold"}
    assert list(seen) == list(RECORD)
    assert RECORD["phone"] == "13812341234"  # the input is not changed
    # nested and dict-valued attributes too
    nested = mask_record({"attributes": {"contact": {"mobile": "13812341234"}}}, None)
    assert nested["attributes"]["contact"]["mobile"] == "138****1234"


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_roles_with_read_personal_see_everything(role):
    assert mask_record(RECORD, Principal("x", role)) == RECORD


def test_token_hash_stored_not_the_token(ws):
    token = create_token(ws, "crm-sync", "analyst")
    assert token.startswith("kq_") and len(token) > 40
    [row] = ws.store.duck.execute("SELECT token_hash, prefix FROM api_tokens").fetchall()
    assert row[0] == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(row[1]) and len(row[1]) == 8
    ws.close()
    secret = token.encode()
    for path in ws.path.iterdir():  # the database and any write-ahead log
        if path.is_file():
            assert secret not in path.read_bytes(), path.name
            assert token[3:].encode() not in path.read_bytes(), path.name


def test_authenticate_and_revoke(ws):
    token = create_token(ws, "bot", "ingest")
    assert authenticate(ws, token) == Principal("bot", "ingest")
    assert authenticate(ws, f"Bearer {token}") == Principal("bot", "ingest")
    with pytest.raises(AuthError) as info:
        authenticate(ws, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert info.value.status_code == 401 and token not in str(info.value)
    with pytest.raises(AuthError, match="no API token"):
        authenticate(ws, None)
    with pytest.raises(AuthError, match="no API token"):
        authenticate(ws, "")
    revoke_token(ws, "bot")
    with pytest.raises(AuthError, match="unknown or revoked"):
        authenticate(ws, token)  # refused at once, although it was cached
    with pytest.raises(InputError, match="no active token named 'bot'"):
        revoke_token(ws, "bot")


def test_revoked_token_refused_by_a_new_process(ws, tmp_path):
    """Another process (no cache) refuses it too: revocation is in the database."""
    import subprocess
    import sys

    token = create_token(ws, "old", "viewer")
    revoke_token(ws, "old")
    ws.close()
    code = (
        "import sys; from kequn import open_workspace; from kequn.access import authenticate\n"
        "from kequn.errors import AuthError\n"
        "ws = open_workspace(sys.argv[1])\n"
        "try:\n    authenticate(ws, sys.argv[2]); print('accepted')\n"
        "except AuthError: print('refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ws.path), token], capture_output=True, text=True
    )
    assert out.stdout.strip() == "refused", out.stderr


def test_token_names_and_roles_are_checked(ws):
    with pytest.raises(InputError, match="'owner'.*roles: admin, analyst, viewer, ingest"):
        create_token(ws, "x", "owner")
    with pytest.raises(InputError, match="token name 'a b'"):
        create_token(ws, "a b", "viewer")
    create_token(ws, "x", "viewer")
    with pytest.raises(InputError, match="an active token named 'x' exists"):
        create_token(ws, "x", "admin")
    revoke_token(ws, "x")
    create_token(ws, "x", "admin")  # the name is free again
    tokens = list_tokens(ws)
    assert [(t["name"], t["role"], t["active"]) for t in tokens] == [
        ("x", "viewer", False),
        ("x", "admin", True),
    ]
    assert [t["role"] for t in list_tokens(ws, include_revoked=False)] == ["admin"]


def test_audit_entries_for_create_use_revoke(ws):
    token = create_token(ws, "bot", "viewer", actor="token:root")
    for _ in range(50):  # many requests in a minute: one audit entry
        authenticate(ws, token)
    revoke_token(ws, "bot")
    entries = audit_entries(ws, limit=0)
    assert [(e["action"], e["target"], e["actor"]) for e in entries] == [
        ("token.revoke", "bot", local_actor()),
        ("token.use", "bot", "token:bot"),
        ("token.create", "bot", "token:root"),
    ]
    assert [e["seq"] for e in entries] == [3, 2, 1]
    assert entries[2]["detail"]["role"] == "viewer"
    assert all(token not in json.dumps(e, default=str) for e in entries)
    used = next(t for t in list_tokens(ws) if t["name"] == "bot")["last_used_at"]
    assert used == entries[1]["at"]


def test_concurrent_authentication_writes_one_use_entry(ws):
    token = create_token(ws, "hot", "ingest")
    errors: list[BaseException] = []

    def hammer():
        try:
            for _ in range(200):
                authenticate(ws, token)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(audit_entries(ws, action="token.use", limit=0)) == 1


def test_audit_filters(ws):
    audit(ws, "token:alice", "rule.update", "vip", {"rule": "x"}, at=datetime(2024, 1, 1, 9))
    audit(ws, "token:bob", "export", "vip.csv", at=datetime(2024, 1, 2, 9))
    audit(ws, "token:alice", "export", "new.csv", at=datetime(2024, 1, 3, 23, 59))
    audit(ws, "cli:root", "rule.delete", "old", at=datetime(2024, 1, 4, 0, 0))
    targets = lambda rows: [r["target"] for r in rows]  # noqa: E731
    assert targets(audit_entries(ws, actor="token:alice")) == ["new.csv", "vip"]
    assert targets(audit_entries(ws, action="export")) == ["new.csv", "vip.csv"]
    assert targets(audit_entries(ws, action="rule")) == ["old", "vip"]
    assert targets(audit_entries(ws, since="2024-01-02", until="2024-01-03")) == [
        "new.csv",
        "vip.csv",
    ]
    assert targets(audit_entries(ws, until="2024-01-03T12:00")) == ["vip.csv", "vip"]
    assert targets(audit_entries(ws, limit=1)) == ["old"]
    with pytest.raises(InputError, match="'yesterday'"):
        audit_entries(ws, since="yesterday")
    assert audit_entries(ws, actor="token:alice", action="rule")[0]["detail"] == {"rule": "x"}


def test_audit_log_is_append_only():
    import kequn.access as access
    from kequn.access import audit as audit_module

    names = set(dir(access)) | set(dir(audit_module))
    assert not [n for n in names if any(w in n.lower() for w in ("delete", "update", "clear"))]


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def wsdir(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    return str(tmp_path / "ws")


def test_cli_token_create_list_revoke_and_audit(wsdir):
    from kequn import open_workspace

    result = runner.invoke(app, ["token", "create", "dash", "--role", "viewer", "-w", wsdir])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("kq_") and "\n" not in token
    assert "shown only this once" in result.stderr
    with open_workspace(wsdir) as ws:
        assert authenticate(ws, token).role == "viewer"

    result = runner.invoke(app, ["token", "list", "-w", wsdir, "--json"])
    [row] = json.loads(result.stdout)
    assert (row["name"], row["role"], row["active"]) == ("dash", "viewer", True)
    assert token not in result.stdout and row["last_used_at"] is not None
    result = runner.invoke(app, ["token", "list", "-w", wsdir])
    assert "dash" in result.output and token[:8] in result.output

    result = runner.invoke(app, ["token", "create", "x", "--role", "boss", "-w", wsdir])
    assert result.exit_code == 2 and "unknown role 'boss'" in result.output

    result = runner.invoke(app, ["token", "revoke", "dash", "-w", wsdir])
    assert result.exit_code == 0 and "revoked" in result.output
    result = runner.invoke(app, ["token", "list", "-w", wsdir, "--json"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(app, ["token", "list", "--all", "-w", wsdir, "--json"])
    assert json.loads(result.stdout)[0]["revoked_at"] is not None
    result = runner.invoke(app, ["token", "revoke", "dash", "-w", wsdir])
    assert result.exit_code == 2 and "no active token named 'dash'" in result.output

    result = runner.invoke(app, ["audit", "-w", wsdir, "--json"])
    actions = [e["action"] for e in json.loads(result.stdout)]
    assert actions == ["token.revoke", "token.use", "token.create"]
    result = runner.invoke(
        app, ["audit", "-w", wsdir, "--json", "--actor", local_actor(), "--action", "token"]
    )
    assert [e["action"] for e in json.loads(result.stdout)] == ["token.revoke", "token.create"]
    result = runner.invoke(app, ["audit", "-w", wsdir, "--json", "--limit", "1"])
    assert [e["action"] for e in json.loads(result.stdout)] == ["token.revoke"]
    result = runner.invoke(
        app, ["audit", "-w", wsdir, "--json", "--since", "2000-01-01", "--until", "2000-01-02"]
    )
    assert json.loads(result.stdout) == []
    result = runner.invoke(app, ["audit", "-w", wsdir])
    assert result.exit_code == 0 and "token.use" in result.output
    result = runner.invoke(app, ["audit", "-w", wsdir, "--since", "soon"])
    assert result.exit_code == 2 and "'soon'" in result.output
