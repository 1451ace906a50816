"""Webhook deliveries against a real HTTP receiver on 127.0.0.1: signature, retries, dead letters.

Times are injected (``now``), never slept: backoff is checked on the stored
``next_attempt_at`` and the next dispatch runs at that instant.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections import deque
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest

from kequn.act.outbox import Transition, deliveries, dispatch_once, due, enqueue
from kequn.act.triggers import Trigger, apply_triggers, stored_triggers
from kequn.store import TABLES

NOW = datetime(2026, 3, 2, 10, 0, 0)
AT = datetime(2026, 3, 2, 9, 30, 0)


class Receiver:
    """A real HTTP server that records requests and answers from a script."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict] = []
        self.script: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.default = (200, {}, b'{"ok": true}')
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                receiver.requests.append(
                    {
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                status, headers, answer = (
                    receiver.script.popleft() if receiver.script else receiver.default
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def add_customers(ws, rows: list[dict]) -> None:
    names = TABLES["customers"].names
    ws.store.append("customers", pa.table({n: [r.get(n) for r in rows] for n in names}))


CUSTOMERS = [
    {"customer_id": "c1", "name": "张三", "city": "北京", "email": "zs@example.com",
     "phone": "13800000001", "channel": "app"},
    {"customer_id": "c2", "name": "Li Si", "city": "上海", "email": "ls@example.com",
     "phone": None, "channel": "web"},
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webhook(url: str, **extra) -> Trigger:
    settings = {"url": url, "secret": "${KQ_TEST_SECRET}", **extra.pop("settings", {})}
    return Trigger(
        name=extra.pop("name", "vip-hook"),
        segment="vip",
        on="enter",
        channel="webhook",
        settings=settings,
        **extra,
    )


def enter(ws, *customers: str, at: datetime = AT, now: datetime = NOW) -> int:
    with ws.store.transaction():
        return enqueue(ws, [Transition("vip", c, "enter", at) for c in customers], now)


def one(ws, **filters) -> dict:
    rows = deliveries(ws, **filters)
    assert len(rows) == 1, rows
    return rows[0]


def test_signed_json_with_idempotency_key(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "s3cret-值")
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [webhook(receiver.url(), settings={"headers": {"X-Team": "crm"}})])
    # the secret is stored as the reference, never its value
    stored = ws.store.duck.execute("select config from triggers").fetchone()[0]
    assert "${KQ_TEST_SECRET}" in stored and "s3cret" not in stored
    assert enter(ws, "c1") == 1
    assert dispatch_once(ws, NOW) == {"due": 1, "sent": 1, "retrying": 0, "dead": 0}
    (req,) = receiver.requests
    body = req["body"]
    expected = hmac.new("s3cret-值".encode(), body, hashlib.sha256).hexdigest()
    assert req["headers"]["x-kequn-signature"] == "sha256=" + expected
    assert req["headers"]["x-team"] == "crm"
    assert req["headers"]["content-type"].startswith("application/json")
    assert abs(int(req["headers"]["x-kequn-timestamp"]) - datetime.now().timestamp()) < 120
    payload = json.loads(body)
    key_text = "\x1f".join(["vip-hook", "vip", "c1", "enter", "2026-03-02 09:30:00.000000"])
    key = hashlib.sha256(key_text.encode()).hexdigest()
    assert req["headers"]["idempotency-key"] == key
    assert payload == {
        "event": "segment.enter",
        "kind": "enter",
        "segment": "vip",
        "customer_id": "c1",
        "at": "2026-03-02T09:30:00",
        "trigger": "vip-hook",
        "variant": None,
        "idempotency_key": key,
        "customer": {
            "name": "张三",
            "city": "北京",
            "email": "zs@example.com",
            "phone": "13800000001",
            "channel": "app",
        },
    }
    row = one(ws)
    assert (row["status"], row["attempts"], row["sent_at"]) == ("sent", 1, NOW)
    assert row["idempotency_key"] == key
    assert dispatch_once(ws, NOW + timedelta(hours=1))["due"] == 0
    assert len(receiver.requests) == 1


def test_retries_after_503_with_backoff_then_sent(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1")
    receiver.script.extend([(503, {}, b"busy"), (503, {}, b"busy")])
    assert dispatch_once(ws, NOW)["retrying"] == 1
    row = one(ws)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "HTTP 503: busy")
    # first retry after 2 s ± 20 %
    first = row["next_attempt_at"]
    assert NOW + timedelta(seconds=1.6) <= first <= NOW + timedelta(seconds=2.4)
    assert dispatch_once(ws, NOW + timedelta(seconds=1.5))["due"] == 0
    assert dispatch_once(ws, first)["retrying"] == 1
    second = one(ws)["next_attempt_at"]
    assert first + timedelta(seconds=3.2) <= second <= first + timedelta(seconds=4.8)
    assert dispatch_once(ws, second)["sent"] == 1
    row = one(ws)
    assert (row["status"], row["attempts"], row["sent_at"]) == ("sent", 3, second)
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    bodies = {r["body"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(keys) == 1 and len(bodies) == 1


def test_400_is_dead_at_once_with_the_reason(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1")
    receiver.script.append((400, {}, b'{"error": "unknown customer"}'))
    assert dispatch_once(ws, NOW)["dead"] == 1
    row = one(ws)
    assert row["status"] == "dead" and row["attempts"] == 1
    assert row["last_error"] == 'HTTP 400: {"error": "unknown customer"}'
    assert dispatch_once(ws, NOW + timedelta(days=1))["due"] == 0


def test_429_waits_for_retry_after_and_408_retries(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1")
    receiver.script.append((429, {"Retry-After": "120"}, b""))
    dispatch_once(ws, NOW)
    row = one(ws)
    assert row["status"] == "pending" and row["next_attempt_at"] >= NOW + timedelta(seconds=120)
    receiver.script.append((408, {}, b""))
    dispatch_once(ws, row["next_attempt_at"])
    assert one(ws)["status"] == "pending" and one(ws)["attempts"] == 2


def test_gives_up_after_max_attempts(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url(), max_attempts=2)])
    enter(ws, "c1")
    receiver.default = (500, {}, b"boom")
    dispatch_once(ws, NOW)
    dispatch_once(ws, NOW + timedelta(minutes=1))
    row = one(ws)
    assert row["status"] == "dead" and row["attempts"] == 2
    assert row["last_error"] == "gave up after 2 attempts: HTTP 500: boom"


def test_receiver_down_then_back(ws, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    port = free_port()
    apply_triggers(ws, [webhook(f"http://127.0.0.1:{port}/hook")])
    enter(ws, "c1", "c2")
    # nothing listens: connection refused, retried with backoff
    assert dispatch_once(ws, NOW) == {"due": 2, "sent": 0, "retrying": 2, "dead": 0}
    rows = deliveries(ws)
    assert all(r["status"] == "pending" and r["attempts"] == 1 for r in rows)
    assert all("Connect" in r["last_error"] for r in rows)
    later = max(r["next_attempt_at"] for r in rows)
    assert later <= NOW + timedelta(seconds=2.4)
    receiver = Receiver(port)
    try:
        assert dispatch_once(ws, later) == {"due": 2, "sent": 2, "retrying": 0, "dead": 0}
        got = sorted(json.loads(r["body"])["customer_id"] for r in receiver.requests)
        assert got == ["c1", "c2"]
    finally:
        receiver.stop()
    assert {r["status"] for r in deliveries(ws)} == {"sent"}


def test_missing_env_secret_is_dead_with_its_name(ws, receiver, monkeypatch):
    monkeypatch.delenv("KQ_TEST_SECRET", raising=False)
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1")
    dispatch_once(ws, NOW)
    row = one(ws)
    assert row["status"] == "dead"
    assert "environment variable 'KQ_TEST_SECRET' is not set" in row["last_error"]
    assert receiver.requests == []


def test_due_with_lease_hides_taken_rows(ws, receiver, monkeypatch):
    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1", "c2")
    taken = due(ws, NOW, limit=10, lease=30)
    assert sorted(d.customer_id for d in taken) == ["c1", "c2"]
    assert all(d.definition == stored_triggers(ws)[0] for d in taken)
    assert due(ws, NOW) == []  # a second dispatcher does not take them
    # a dispatcher that died: the rows come back when the lease runs out
    assert len(due(ws, NOW + timedelta(seconds=30))) == 2


def test_removed_trigger_goes_dead(ws, receiver, monkeypatch):
    from kequn.act.triggers import remove_triggers

    monkeypatch.setenv("KQ_TEST_SECRET", "k")
    apply_triggers(ws, [webhook(receiver.url())])
    enter(ws, "c1")
    remove_triggers(ws, ["vip-hook"])
    dispatch_once(ws, NOW)
    row = one(ws)
    assert row["status"] == "dead" and "no longer defined" in row["last_error"]
