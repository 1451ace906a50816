"""From an HTTP event to a signed webhook at a real receiver, through the running server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from server_util import Server, wait_for

from kequn import init_workspace
from kequn.act.triggers import Trigger, apply_triggers
from kequn.segments import Segment, apply

SECRET = "s3cret"


@pytest.fixture
def receiver():
    hits: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            hits.append(
                {
                    "payload": json.loads(body),
                    "signed": hmac.compare_digest(self.headers["X-Kequn-Signature"], want),
                    "key": self.headers["Idempotency-Key"],
                }
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def test_event_fires_webhook_once(tmp_path, receiver):
    port, hits = receiver
    ws = init_workspace(tmp_path / "ws")
    apply(ws, [Segment("cart", "count(events where type = 'add_to_cart', last 1 days) > 0")])
    apply_triggers(
        ws,
        [
            Trigger(
                "cart-hook",
                "cart",
                "enter",
                "webhook",
                {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET},
            )
        ],
    )
    ws.close()
    server = Server(tmp_path / "ws")
    try:
        with server.client() as c:
            event = {"event_id": "e1", "customer_id": "C7", "type": "add_to_cart"}
            assert c.post("/v1/events", json=event).json()["accepted"] == 1
            wait_for(lambda: hits)
            assert c.post("/v1/events", json=event).json()["duplicates"] == 1
            # a view is read by no rule: no evaluation, no delivery
            c.post("/v1/events", json={"event_id": "v1", "customer_id": "C7", "type": "view"})
            sent = wait_for(lambda: c.get("/v1/deliveries", params={"status": "sent"}).json())
        assert len(hits) == 1
        hit = hits[0]
        assert hit["signed"]
        assert hit["payload"]["customer_id"] == "C7"
        assert hit["payload"]["segment"] == "cart"
        assert hit["payload"]["event"] == "segment.enter"
        assert [d["idempotency_key"] for d in sent] == [hit["key"]]
        assert sent[0]["attempts"] == 1
    finally:
        server.stop()
