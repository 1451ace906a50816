"""kill -9 of ``kequn serve`` under load: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import threading
import time

import httpx
from server_util import Server, wait_for

from kequn import init_workspace, open_workspace
from kequn.segments import engine

RULE = "count(events where type = 'add_to_cart', last 30 days) >= 2"


def batches(n: int, size: int = 20) -> list[list[dict]]:
    return [
        [
            {
                "event_id": f"b{b}-{i}",
                "customer_id": f"C{(b * size + i) % 37}",
                "type": "add_to_cart" if i % 3 else "view",
            }
            for i in range(size)
        ]
        for b in range(n)
    ]


def test_kill_9_during_load_then_restart(tmp_path):
    init_workspace(tmp_path / "ws").close()
    server = Server(tmp_path / "ws")
    with server.client() as c:
        assert c.post("/v1/segments", json={"name": "carts", "rule": RULE}).status_code == 200
    work = batches(400)
    acked: list[int] = []

    def load() -> None:
        with server.client() as c:
            for i, batch in enumerate(work):
                try:
                    r = c.post("/v1/events", json=batch)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acked.append(i)

    thread = threading.Thread(target=load)
    thread.start()
    wait_for(lambda: len(acked) >= 30, timeout=60)
    server.kill()
    thread.join(timeout=60)
    assert 30 <= len(acked) < len(work)

    # restart; the producer retries everything (it cannot know what the last request did)
    server = Server(tmp_path / "ws")
    try:
        with server.client() as c:
            dup = 0
            for batch in work:
                dup += c.post("/v1/events", json=batch).json()["duplicates"]
            assert dup >= len(acked) * 20  # every acknowledged event was already there
            wait_for(
                lambda: (s := c.get("/v1/status").json())["processed_seq"] == s["accepted_seq"]
            )
    finally:
        server.stop()
    time.sleep(0.2)
    with open_workspace(tmp_path / "ws") as ws:
        counts = ws.store.duck.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchall()[0]
        assert counts == (400 * 20, 400 * 20)
        # processing resumed where it stopped: live membership equals a batch evaluation
        m = ws.table("memberships")
        live = m.filter((m.segment == "carts") & m.exited_at.isnull()).customer_id
        assert sorted(live.to_pyarrow().to_pylist()) == engine.evaluate(ws, RULE)
