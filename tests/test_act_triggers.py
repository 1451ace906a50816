"""Trigger files: parsing, validation messages, storage, and the ``kequn trigger`` /
``kequn deliveries`` commands."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from test_act_webhook import AT, Receiver, enter
from typer.testing import CliRunner

from kequn.act.experiments import Experiment, assign
from kequn.act.triggers import (
    Trigger,
    apply_triggers,
    load_triggers,
    parse_cap,
    parse_quiet_hours,
    resolve_env,
    stored_triggers,
)
from kequn.cli import app
from kequn.errors import InputError, SourceNotFound

GOOD = """
[defaults]
quiet_hours = "22:00-08:00"

[[trigger]]
name = "vip-welcome"
segment = "vip"
on = "enter"
channel = "webhook"
url = "https://crm.example.com/hooks/kequn"
secret = "${WEBHOOK_SECRET}"
headers = { "X-Team" = "crm" }
cap = "1/7d"
max_attempts = 5

[trigger.experiment]
name = "vip-welcome-2026"
arms = { holdout = 0.1, a = 0.45, b = 0.45 }
outcome = "order"
window_days = 14

[trigger.experiment.variants.b]
url = "https://crm.example.com/hooks/kequn-b"

[[trigger]]
name = "lapsed-mail"
segment = "lapsed"
on = "exit"
channel = "email"
host = "smtp.example.com"
port = 587
security = "starttls"
user = "crm"
password = "${SMTP_PASSWORD}"
from = "crm@example.com"
subject = { zh = "欢迎回来，${name}", en = "Welcome back, ${name}" }
template = { zh = "${name}，好久不见！", en = "Hi ${name}, good to see you again!" }
language = "both"
quiet_hours = "none"
"""


def test_load_a_good_file(write):
    vip, lapsed = load_triggers(write("t.toml", GOOD))
    assert vip == Trigger(
        name="vip-welcome",
        segment="vip",
        on="enter",
        channel="webhook",
        settings={
            "url": "https://crm.example.com/hooks/kequn",
            "secret": "${WEBHOOK_SECRET}",
            "headers": {"X-Team": "crm"},
        },
        cap="1/7d",
        quiet_hours="22:00-08:00",
        max_attempts=5,
        experiment=Experiment(
            name="vip-welcome-2026",
            arms={"holdout": 0.1, "a": 0.45, "b": 0.45},
            outcome="order",
            window_days=14,
            trigger="vip-welcome",
            segment="vip",
            variants={"b": {"url": "https://crm.example.com/hooks/kequn-b"}},
        ),
    )
    assert vip.settings_for("b")["url"].endswith("kequn-b")
    assert vip.settings_for("a")["url"].endswith("/kequn")
    assert lapsed.quiet_hours == "none" and lapsed.cap is None and lapsed.max_attempts == 8
    assert lapsed.settings["subject"] == {"zh": "欢迎回来，${name}", "en": "Welcome back, ${name}"}


def test_apply_and_read_back(ws, write):
    triggers = apply_triggers(ws, write("t.toml", GOOD))
    assert stored_triggers(ws) == sorted(triggers, key=lambda t: t.name)
    row = ws.store.duck.execute(
        "select name, segment, \"on\", channel, config from triggers where name = 'vip-welcome'"
    ).fetchone()
    assert row[:4] == ("vip-welcome", "vip", "enter", "webhook")
    config = json.loads(row[4])
    assert config["experiment"]["arms"] == {"holdout": 0.1, "a": 0.45, "b": 0.45}
    assert config["settings"]["secret"] == "${WEBHOOK_SECRET}"
    # applying again replaces by name
    changed = [t for t in triggers if t.name == "vip-welcome"]
    apply_triggers(ws, [Trigger("vip-welcome", "vip", "exit", "file", {"path": "x.jsonl"})])
    assert {t.name: t.on for t in stored_triggers(ws)} == {
        "vip-welcome": "exit",
        "lapsed-mail": "exit",
    }
    assert changed  # the file's version was the one replaced


def _one(body: str) -> str:
    return "[[trigger]]\n" + body


BAD = [
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="webhok"\nurl="https://x"'),
        "unknown channel 'webhok'; did you mean 'webhook'?",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="webhook"'),
        "a webhook trigger needs `url`",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="webhook"\nurl="https://x"\ncap="1/7x"'),
        "cap '1/7x' is not N/PERIOD",
    ),
    (
        _one('name="t"\nsegment="vip"\non="entr"\nchannel="file"\npath="x"'),
        "on = 'entr'; use 'enter' or 'exit'; did you mean 'enter'?",
    ),
    (
        _one(
            'name="t"\nsegment="vip"\non="enter"\nchannel="webhook"\nurl="https://x"\nsecrett="s"'
        ),
        "'secrett' is not a webhook setting; did you mean 'secret'?",
    ),
    (
        _one(
            'name="t"\nsegment="vip"\non="enter"\nchannel="wecom"\nurl="https://x"\ntemplate="$nmae"'
        ),
        "template uses $nmae, not a payload field; did you mean 'name'?",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="file"\npath="x"\nquiet_hours="22-8"'),
        "quiet hours '22-8' are not HH:MM-HH:MM",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="webhook"\nurl="ftp://x"'),
        "url 'ftp://x' must start with http:// or https://",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="file"\npath="x"\nmax_attempts=0'),
        "max_attempts = 0",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="file"\npath="x"\n')
        + "[trigger.experiment]\narms = {holdout = 0.5, a = 0.6}",
        "arm shares sum to 1.1",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="file"\npath="x"\n')
        + "[trigger.experiment]\narms = {holdout = 0.5, a = 0.5}\n"
        + '[trigger.experiment.variants.c]\npath = "c"',
        "experiment variant 'c' is not an arm",
    ),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="file"\npath="x"\n')
        + _one('name="t"\nsegment="vip"\non="exit"\nchannel="file"\npath="y"'),
        "the name 't' is used twice",
    ),
    (
        _one('segment="vip"\non="enter"\nchannel="file"\npath="x"'),
        "every [[trigger]] needs a `name`",
    ),
    ("[[trigger]\nname=1", "is not valid TOML"),
    ('[[triggers]]\nname="t"', "unknown top-level key 'triggers'; did you mean 'trigger'?"),
    (
        _one('name="t"\nsegment="vip"\non="enter"\nchannel="email"\nhost="h"\nfrom="a@b"\n')
        + 'subject="s"\ntemplate="t"\nsecurity="tls"',
        "security = 'tls'",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_files_say_what_is_wrong(write, text, message):
    path = write("bad.toml", text)
    with pytest.raises(InputError) as info:
        load_triggers(path)
    assert message in str(info.value)
    assert "bad.toml" in str(info.value)


def test_missing_file():
    with pytest.raises(SourceNotFound, match="does not exist"):
        load_triggers("/nonexistent/triggers.toml")


def test_caps_and_quiet_hours_parse():
    assert parse_cap("1/7d").period == timedelta(days=7)
    assert parse_cap("3 / 24h").count == 3
    assert parse_cap("2/w").period == timedelta(weeks=1)
    assert parse_cap("none") is None and parse_cap(None) is None
    for bad in ("0/7d", "1/0d", "x", "1/7"):
        with pytest.raises(InputError):
            parse_cap(bad)
    quiet = parse_quiet_hours("22:00-08:00")
    assert quiet.contains(datetime(2026, 1, 1, 23, 0)) and quiet.contains(datetime(2026, 1, 1, 7))
    assert not quiet.contains(datetime(2026, 1, 1, 8, 0))
    with pytest.raises(InputError, match="start and end at the same time"):
        parse_quiet_hours("08:00-08:00")


def test_resolve_env():
    env = {"A": "1", "B_2": "two"}
    assert resolve_env("x${A}y${B_2}", env) == "x1ytwo"
    assert resolve_env({"h": "${A}"}, env) == {"h": "1"}
    assert resolve_env("$A stays", env) == "$A stays"
    with pytest.raises(InputError, match="'MISSING' is not set"):
        resolve_env("${MISSING}", env)


# --- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def run(folder, *args):
    return runner.invoke(app, [*args, "--workspace", str(folder)])


def test_cli_trigger_apply_list_and_deliveries(ws, write, monkeypatch):
    receiver = Receiver()
    try:
        text = GOOD.replace("https://crm.example.com/hooks/kequn", receiver.url())
        path = write("t.toml", text.replace('quiet_hours = "22:00-08:00"', ""))
        result = run(ws.path, "trigger", "apply", str(path))
        assert result.exit_code == 0, result.output
        assert "stored trigger vip-welcome" in result.output
        assert "segment 'vip' is not stored yet" in result.output
        listed = json.loads(run(ws.path, "trigger", "list", "--json").output)
        assert [t["name"] for t in listed] == ["lapsed-mail", "vip-welcome"]
        table = run(ws.path, "trigger", "list").output
        assert "vip-wel" in table and "1/7d" in table  # 80 columns: names are cut
        customers = [f"c{i}" for i in range(10)]
        now = datetime.now().replace(microsecond=0) - timedelta(minutes=1)
        enter(ws, *customers, at=AT, now=now)
        monkeypatch.setenv("WEBHOOK_SECRET", "k")
        sent = json.loads(run(ws.path, "deliveries", "send", "--json").output)
        holdouts = len(run_json(ws.path, "deliveries", "--status", "holdout", "--limit", "0"))
        assert sent == {"due": 10 - holdouts, "sent": 10 - holdouts, "retrying": 0, "dead": 0}
        assert len(receiver.requests) == 10 - holdouts
        rows = run_json(ws.path, "deliveries", "--segment", "vip", "--trigger", "vip-welcome")
        assert len(rows) == 10 and {r["status"] for r in rows} <= {"sent", "holdout"}
        listing = run(ws.path, "deliveries").output
        assert f"sent {10 - holdouts}" in listing and "vip-wel" in listing
        # a dead one, requeued
        receiver.default = (410, {}, b"gone")
        arms = {"holdout": 0.1, "a": 0.45, "b": 0.45}
        # a new customer (the others are capped at one message a week), not in the holdout
        fresh = (f"x{i}" for i in range(100))
        treated = next(c for c in fresh if assign("vip-welcome-2026", c, arms) != "holdout")
        enter(ws, treated, at=AT + timedelta(hours=1), now=now)
        run(ws.path, "deliveries", "send")
        (dead,) = run_json(ws.path, "deliveries", "--status", "dead")
        assert dead["customer_id"] == treated
        dead = [dead]
        assert dead[0]["last_error"] == "HTTP 410: gone"
        result = run(ws.path, "deliveries", "retry", dead[0]["delivery_id"])
        assert result.exit_code == 0 and "requeued 1" in result.output
        assert run_json(ws.path, "deliveries", "retry", "--dead") == {"requeued": 0}
        result = run(ws.path, "deliveries", "retry")
        assert result.exit_code == 2 and "--dead" in result.output
    finally:
        receiver.stop()


def run_json(folder, *args):
    result = run(folder, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_bad_file_exit_code(ws, write):
    path = write("bad.toml", BAD[0][0])
    result = run(ws.path, "trigger", "apply", str(path))
    assert result.exit_code == 2
    assert "did you mean 'webhook'" in result.output
    result = run(ws.path, "deliveries", "--status", "sent2")
    assert result.exit_code == 2 and "unknown delivery status 'sent2'" in result.output
