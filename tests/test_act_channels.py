"""Group robots (WeCom, DingTalk, Feishu), e-mail over a real SMTP server, and export files."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from test_act_webhook import AT, CUSTOMERS, NOW, Receiver, add_customers, enter, free_port, one

from kequn.act.outbox import deliveries, dispatch_once
from kequn.act.triggers import Trigger, apply_triggers

ZH_EN = "客户 张三（c1）进入客群 vip\nCustomer 张三 (c1) entered segment vip"


@pytest.fixture
def receiver():
    r = Receiver()
    r.default = (200, {}, b'{"errcode": 0, "errmsg": "ok"}')
    yield r
    r.stop()


def robot(channel: str, url: str, **settings) -> Trigger:
    return Trigger(f"vip-{channel}", "vip", "enter", channel, {"url": url, **settings})


def sent_json(receiver: Receiver) -> dict:
    (req,) = receiver.requests
    assert req["headers"]["content-type"].startswith("application/json")
    return json.loads(req["body"])


def test_wecom_text(ws, receiver):
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [robot("wecom", receiver.url("/cgi-bin/webhook/send?key=K1"))])
    enter(ws, "c1")
    assert dispatch_once(ws, NOW)["sent"] == 1
    assert receiver.requests[0]["query"] == {"key": ["K1"]}
    assert sent_json(receiver) == {"msgtype": "text", "text": {"content": ZH_EN}}


def test_wecom_markdown_with_template_and_an_error_code(ws, receiver):
    add_customers(ws, CUSTOMERS)
    template = {"zh": "**${name}** 来自 ${city}", "en": "**${name}** from ${city}"}
    trig = robot("wecom", receiver.url(), msgtype="markdown", template=template, language="en")
    apply_triggers(ws, [trig])
    enter(ws, "c1")
    receiver.script.append((200, {}, b'{"errcode": 93000, "errmsg": "invalid webhook url"}'))
    assert dispatch_once(ws, NOW)["dead"] == 1
    assert sent_json(receiver) == {
        "msgtype": "markdown",
        "markdown": {"content": "**张三** from 北京"},
    }
    assert one(ws)["last_error"] == "wecom error 93000: invalid webhook url"


def test_dingtalk_signed_text(ws, receiver):
    add_customers(ws, CUSTOMERS)
    secret = "SEC0123abc"
    apply_triggers(
        ws, [robot("dingtalk", receiver.url("/robot/send?access_token=T1"), secret=secret)]
    )
    enter(ws, "c1")
    before = int(time.time() * 1000)
    assert dispatch_once(ws, NOW)["sent"] == 1
    after = int(time.time() * 1000)
    query = receiver.requests[0]["query"]
    assert query["access_token"] == ["T1"]
    ts = int(query["timestamp"][0])
    assert before <= ts <= after
    string_to_sign = f"{ts}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]
    assert sent_json(receiver) == {"msgtype": "text", "text": {"content": ZH_EN}}


def test_dingtalk_markdown_and_rate_limit_retries(ws, receiver):
    add_customers(ws, CUSTOMERS)
    trig = robot("dingtalk", receiver.url(), msgtype="markdown", title="新客 ${segment}")
    apply_triggers(ws, [trig])
    enter(ws, "c1")
    receiver.script.append((200, {}, b'{"errcode": 130101, "errmsg": "send too fast"}'))
    assert dispatch_once(ws, NOW)["retrying"] == 1
    assert one(ws)["last_error"] == "dingtalk error 130101: send too fast"
    assert dispatch_once(ws, NOW + timedelta(seconds=3))["sent"] == 1
    body = json.loads(receiver.requests[1]["body"])
    assert body == {"msgtype": "markdown", "markdown": {"title": "新客 vip", "text": ZH_EN}}
    assert "sign" not in receiver.requests[1]["query"]


def test_feishu_signed_text(ws, receiver):
    add_customers(ws, CUSTOMERS)
    receiver.default = (200, {}, b'{"code": 0, "msg": "success", "data": {}}')
    secret = "fs-secret"
    apply_triggers(ws, [robot("feishu", receiver.url("/open-apis/bot/v2/hook/H1"), secret=secret)])
    enter(ws, "c1")
    before = int(time.time())
    assert dispatch_once(ws, NOW)["sent"] == 1
    body = sent_json(receiver)
    ts = body.pop("timestamp")
    assert before <= int(ts) <= int(time.time())
    key = f"{ts}\n{secret}".encode()
    assert (
        body.pop("sign") == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    )
    assert body == {"msg_type": "text", "content": {"text": ZH_EN}}


def test_feishu_markdown_card_and_sign_error(ws, receiver):
    add_customers(ws, CUSTOMERS)
    trig = robot("feishu", receiver.url(), msgtype="markdown", language="zh")
    apply_triggers(ws, [trig])
    enter(ws, "c1")
    answer = {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
    receiver.script.append((200, {}, json.dumps(answer).encode()))
    assert dispatch_once(ws, NOW)["dead"] == 1
    assert sent_json(receiver) == {
        "msg_type": "interactive",
        "card": {
            "header": {"title": {"tag": "plain_text", "content": "kequn · vip"}},
            "elements": [{"tag": "markdown", "content": "客户 张三（c1）进入客群 vip"}],
        },
    }
    assert one(ws)["last_error"].startswith("feishu error 19021: sign match fail")


# --- e-mail ----------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"pw-from-env", handled=False)


@pytest.fixture
def smtp():
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=box.authenticate,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],  # smtplib would retry a failed PLAIN with LOGIN
    )
    controller.start()
    box.port = port
    yield box
    controller.stop()


def mail_trigger(port: int, **settings) -> Trigger:
    base = {
        "host": "127.0.0.1",
        "port": port,
        "from": "crm@shop.example",
        "user": "crm",
        "password": "${KQ_SMTP_PASSWORD}",
        "subject": {"zh": "欢迎，${name}", "en": "Welcome, ${name}"},
        "template": {
            "zh": "${name}，您已成为 ${segment} 会员。",
            "en": "Hi ${name}, you are now ${segment}.",
        },
    }
    return Trigger("vip-mail", "vip", "enter", "email", {**base, **settings})


def test_bilingual_mail(ws, smtp, monkeypatch):
    monkeypatch.setenv("KQ_SMTP_PASSWORD", "pw-from-env")
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [mail_trigger(smtp.port)])
    enter(ws, "c1")
    assert dispatch_once(ws, NOW)["sent"] == 1
    assert smtp.logins == [(b"crm", b"pw-from-env")]
    (envelope,) = smtp.messages
    assert envelope.mail_from == "crm@shop.example"
    assert envelope.rcpt_tos == ["zs@example.com"]
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg["Subject"] == "欢迎，张三 / Welcome, 张三"
    assert msg["To"] == "zs@example.com"
    key = one(ws)["idempotency_key"]
    assert msg["X-Kequn-Idempotency-Key"] == key
    assert msg["Message-ID"] == f"<{key}@kequn>"
    body = msg.get_content().replace("\r\n", "\n")  # SMTP sends CRLF
    assert body == "张三，您已成为 vip 会员。\n\n---\n\nHi 张三, you are now vip.\n"


def test_english_only_mail_to_a_fixed_address(ws, smtp, monkeypatch):
    monkeypatch.setenv("KQ_SMTP_PASSWORD", "pw-from-env")
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [mail_trigger(smtp.port, language="en", to="team@shop.example")])
    enter(ws, "c2")
    assert dispatch_once(ws, NOW)["sent"] == 1
    (envelope,) = smtp.messages
    assert envelope.rcpt_tos == ["team@shop.example"]
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg["Subject"] == "Welcome, Li Si"
    assert msg.get_content().replace("\r\n", "\n") == "Hi Li Si, you are now vip.\n"


def test_mail_failures(ws, smtp, monkeypatch):
    add_customers(ws, [*CUSTOMERS, {"customer_id": "c3", "name": "无邮箱"}])
    apply_triggers(ws, [mail_trigger(smtp.port, to="${email}, nobody@shop.example")])
    monkeypatch.setenv("KQ_SMTP_PASSWORD", "wrong")
    enter(ws, "c1")
    dispatch_once(ws, NOW)
    row = one(ws)
    assert row["status"] == "dead", row["last_error"]
    assert row["last_error"].startswith("SMTP 535")
    monkeypatch.setenv("KQ_SMTP_PASSWORD", "pw-from-env")
    enter(ws, "c2", "c3", at=AT + timedelta(hours=1))
    dispatch_once(ws, NOW)
    c2 = one(ws, status="sent")
    assert c2["customer_id"] == "c2"  # one of two recipients refused: still sent to the other
    assert smtp.messages[0].rcpt_tos == ["ls@example.com"]
    dead = {r["customer_id"]: r["last_error"] for r in deliveries(ws, status="dead")}
    assert dead["c3"].startswith("recipients refused: nobody@shop.example: 550")


def test_mail_server_down_is_retried(ws, monkeypatch):
    monkeypatch.setenv("KQ_SMTP_PASSWORD", "pw-from-env")
    apply_triggers(ws, [mail_trigger(free_port())])
    add_customers(ws, CUSTOMERS)
    enter(ws, "c1")
    assert dispatch_once(ws, NOW)["retrying"] == 1
    assert "ConnectionRefusedError" in one(ws)["last_error"]


# --- export file -----------------------------------------------------------------------------


def test_jsonl_file_relative_to_workspace(ws):
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [Trigger("vip-file", "vip", "enter", "file", {"path": "exports/vip.jsonl"})])
    enter(ws, "c1", "c2")
    assert dispatch_once(ws, NOW)["sent"] == 2
    lines = (ws.path / "exports" / "vip.jsonl").read_text(encoding="utf-8").splitlines()
    payloads = sorted((json.loads(line) for line in lines), key=lambda p: p["customer_id"])
    assert [p["customer_id"] for p in payloads] == ["c1", "c2"]
    assert payloads[0]["customer"]["name"] == "张三"
    stored = {r["customer_id"]: r["payload"] for r in deliveries(ws)}
    assert payloads[0] == stored["c1"]


def test_csv_file_with_header_and_fields(ws, tmp_path):
    add_customers(ws, CUSTOMERS)
    path = tmp_path / "out" / "vip.csv"
    fields = ["customer_id", "name", "city", "event", "at"]
    trig = Trigger(
        "vip-csv", "vip", "enter", "file", {"path": str(path), "format": "csv", "fields": fields}
    )
    apply_triggers(ws, [trig])
    enter(ws, "c1")
    enter(ws, "c2", at=AT + timedelta(minutes=5))
    dispatch_once(ws, NOW)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == fields
    assert sorted(rows[1:]) == [
        ["c1", "张三", "北京", "segment.enter", "2026-03-02T09:30:00"],
        ["c2", "Li Si", "上海", "segment.enter", "2026-03-02T09:35:00"],
    ]


def test_unwritable_file_is_dead(ws, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    apply_triggers(ws, [Trigger("vip-file", "vip", "enter", "file", {"path": str(folder)})])
    enter(ws, "c1")
    assert dispatch_once(ws, NOW)["dead"] == 1
    assert "cannot write" in one(ws)["last_error"]
