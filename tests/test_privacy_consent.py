"""Consent: recorded per customer × channel, read by rules, obeyed by triggers."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from typer.testing import CliRunner

from kequn.act.outbox import Transition, deliveries, dispatch_once, enqueue
from kequn.act.triggers import Trigger, apply_triggers, load_triggers
from kequn.cli import app
from kequn.errors import InputError
from kequn.privacy import allowed_customers, consents_of, import_consents, record_consents
from kequn.segments.engine import evaluate

AT = datetime(2025, 3, 1, 10, 0)
NOW = datetime(2025, 3, 1, 10, 0, 5)
runner = CliRunner()


def add_customers(ws, *ids: str) -> None:
    rows = ", ".join(
        f"('{c}', 'Name {c}', '{c.lower()}@example.com', '1380000000{i}', 'SH')"
        for i, c in enumerate(ids)
    )
    ws.store.duck.execute(
        f"INSERT INTO customers (customer_id, name, email, phone, city) VALUES {rows}"
    )
    ws.store.duck.execute(
        "INSERT INTO identities SELECT 'default', customer_id, customer_id, 'new', email, phone, "
        "now()::TIMESTAMP FROM customers"
    )


def consent(cid: str, channel: str, status: str, at: str, source: str = "crm") -> dict:
    return {"customer_id": cid, "channel": channel, "status": status, "at": at, "source": source}


def test_latest_consent_wins_and_is_audited(ws):
    add_customers(ws, "C1", "C2")
    n = record_consents(
        ws,
        [
            consent("C1", "email", "opt_in", "2025-01-01T09:00"),
            consent("C1", "email", "opt_out", "2025-02-01T09:00", "unsubscribe-link"),
            consent("C1", "短信", "同意", "2025-01-05T09:00"),
            consent("C2", "e-mail", "yes", "2025-01-01T09:00"),
        ],
    )
    assert n == 4
    mine = {r["channel"]: (r["status"], r["source"]) for r in consents_of(ws, "C1")}
    assert mine == {"email": ("opt_out", "unsubscribe-link"), "sms": ("opt_in", "crm")}
    log = ws.store.duck.execute("select action, detail from audit_log").fetchall()
    assert log == [("consent.set", '{"rows": 4}')]
    with pytest.raises(InputError, match="channel 'fax'"):
        record_consents(ws, [consent("C1", "fax", "opt_in", "2025-01-01")])
    with pytest.raises(InputError, match="status 'maybe'"):
        record_consents(ws, [consent("C1", "email", "maybe", "2025-01-01")])


def test_rules_read_consent_at_as_of(ws):
    add_customers(ws, "C1", "C2", "C3")
    record_consents(
        ws,
        [
            consent("C1", "email", "opt_in", "2025-01-01T09:00"),
            consent("C1", "email", "opt_out", "2025-02-01T09:00"),
            consent("C2", "email", "opt_in", "2025-01-10T09:00"),
        ],
    )
    rule = "consent.email = 'opt_in'"
    assert evaluate(ws, rule, "2025-01-15") == ["C1", "C2"]
    assert evaluate(ws, rule, "2025-03-01") == ["C2"]  # C1 opted out in February
    assert evaluate(ws, "consent.email is null", "2025-03-01") == ["C3"]
    assert evaluate(ws, "consent.sms is null", "2025-03-01") == ["C1", "C2", "C3"]


def test_consent_rule_without_any_consents_and_bad_channel(ws):
    add_customers(ws, "C1")
    assert evaluate(ws, "consent.email = 'opt_in'") == []
    assert evaluate(ws, "consent.email is null") == ["C1"]
    with pytest.raises(InputError, match="consent.fax.*channels: email, sms, im, phone"):
        evaluate(ws, "consent.fax = 'opt_in'")


def _file_trigger(**extra) -> Trigger:
    return Trigger("welcome", "vip", "enter", "file", {"path": "exports/welcome.jsonl"}, **extra)


def test_trigger_skips_opted_out_customer_and_records_why(ws):
    add_customers(ws, "C1", "C2", "C3")
    record_consents(ws, [consent("C2", "email", "opt_out", "2025-02-01T09:00", "crm")])
    apply_triggers(ws, [_file_trigger(consent="email")])
    with ws.store.transaction():
        enqueue(ws, [Transition("vip", c, "enter", AT) for c in ("C1", "C2", "C3")], NOW)
    rows = {r["customer_id"]: r for r in deliveries(ws)}
    assert rows["C1"]["status"] == rows["C3"]["status"] == "pending"
    assert rows["C2"]["status"] == "no_consent"
    assert rows["C2"]["last_error"] == (
        "no_consent: opted out of email on 2025-02-01 09:00 (source 'crm')"
    )
    assert [r["customer_id"] for r in deliveries(ws, status="no_consent")] == ["C2"]
    assert dispatch_once(ws, NOW)["sent"] == 2  # the skipped one is never sent
    sent = (ws.path / "exports" / "welcome.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["customer_id"] for line in sent) == ["C1", "C3"]


def test_opt_in_mode_needs_a_recorded_opt_in(ws):
    config = ws.path / "kequn.toml"
    config.write_text(
        config.read_text().replace('consent = "opt_out"', 'consent = "opt_in"'), encoding="utf-8"
    )
    from kequn import open_workspace

    ws.close()
    ws2 = open_workspace(ws.path)
    try:
        add_customers(ws2, "C1", "C2")
        record_consents(ws2, [consent("C1", "email", "opt_in", "2025-01-01T09:00")])
        verdict = allowed_customers(ws2, ["C1", "C2"], "email")
        assert verdict["C1"] is None
        assert "no opt-in for email recorded" in verdict["C2"]
        # an e-mail trigger checks e-mail consent without being told; `consent = "none"` not
        triggers = [
            Trigger("mail", "vip", "enter", "email", _EMAIL),
            _file_trigger(consent="none"),
        ]
        with ws2.store.transaction():
            enqueue(ws2, [Transition("vip", c, "enter", AT) for c in ("C1", "C2")], NOW, triggers)
        got = {(r["trigger"], r["customer_id"]): r["status"] for r in deliveries(ws2)}
        assert got == {
            ("mail", "C1"): "pending",
            ("mail", "C2"): "no_consent",
            ("welcome", "C1"): "pending",
            ("welcome", "C2"): "pending",
        }
    finally:
        ws2.close()


_EMAIL = {
    "host": "127.0.0.1",
    "from": "shop@example.com",
    "subject": "hi",
    "template": "hello ${name}",
}


def test_trigger_file_consent_and_owner_settings(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        '[[trigger]]\nname = "w"\nsegment = "vip"\non = "enter"\nchannel = "webhook"\n'
        'url = "http://127.0.0.1:9/x"\nconsent = "sms"\nowner = "crm-bot"\n',
        encoding="utf-8",
    )
    [trig] = load_triggers(path)
    assert (trig.consent, trig.owner) == ("sms", "crm-bot")
    assert Trigger.from_config(trig.as_config()) == trig
    path.write_text(path.read_text().replace('"sms"', '"fax"'), encoding="utf-8")
    with pytest.raises(InputError, match="consent = 'fax'"):
        load_triggers(path)


def test_consent_file_import_and_cli(ws, write):
    add_customers(ws, "C1", "C2")
    f = write(
        "consents.csv",
        "客户ID,渠道,状态,授权时间\n"
        "C1,邮件,同意,2025-01-01 09:00:00\n"
        "c2@example.com,短信,退订,2025-01-02 09:00:00\n"
        "C9,email,opt_in,2025-01-01 09:00:00\n"
        "C2,fax,opt_in,2025-01-01 09:00:00\n",
        encoding="gbk",
    )
    report = import_consents(ws, f)
    assert (report.rows_read, report.written) == (4, 2)
    assert [r["row"] for r in report.rejected] == [3, 4]
    assert "no customer 'C9'" in report.rejected[0]["reason"]
    assert "channel 'fax'" in report.rejected[1]["reason"]
    assert [(r["channel"], r["status"]) for r in consents_of(ws, "C2")] == [("sms", "opt_out")]
    ws.close()
    result = runner.invoke(app, ["consent", "set", "C2", "im", "opt_in", "-w", str(ws.path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["consent", "show", "C2", "--json", "-w", str(ws.path)])
    shown = {r["channel"]: r["status"] for r in json.loads(result.output)}
    assert shown == {"im": "opt_in", "sms": "opt_out"}
