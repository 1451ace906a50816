"""A dispatcher killed with SIGKILL between sending and recording: nothing is lost on restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime

from test_act_webhook import Receiver

from kequn import init_workspace, open_workspace
from kequn.act.outbox import Transition, deliveries, dispatch_once, enqueue
from kequn.act.triggers import Trigger, apply_triggers

NOW = datetime(2026, 3, 2, 10, 0)

DIE_AFTER_FIFTH_SEND = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from kequn import open_workspace
    from kequn.act import outbox

    real_send = outbox.send
    sent = 0

    def send_then_die(delivery, **kwargs):
        global sent
        outcome = real_send(delivery, **kwargs)
        sent += 1
        if sent == 5:  # the receiver has it; the 'sent' status is not recorded yet
            os.kill(os.getpid(), signal.SIGKILL)
        return outcome

    outbox.send = send_then_die
    outbox.dispatch_once(open_workspace(sys.argv[1]), datetime(2026, 3, 2, 10, 0), limit=100)
    """
)


def test_kill_9_between_send_and_record(tmp_path):
    receiver = Receiver()
    try:
        ws = init_workspace(tmp_path / "ws")
        apply_triggers(
            ws, [Trigger("vip-hook", "vip", "enter", "webhook", {"url": receiver.url()})]
        )
        with ws.store.transaction():
            enqueue(ws, [Transition("vip", f"c{i}", "enter", NOW) for i in range(20)], NOW)
        keys = {r["idempotency_key"] for r in deliveries(ws, limit=0)}
        ws.close()  # DuckDB allows one writing process at a time

        proc = subprocess.run(
            [sys.executable, "-c", DIE_AFTER_FIFTH_SEND, str(tmp_path / "ws")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert len(receiver.requests) == 5

        ws = open_workspace(tmp_path / "ws")
        statuses = Counter(r["status"] for r in deliveries(ws, limit=0))
        assert statuses == {"sent": 4, "pending": 16}  # the fifth was sent, not recorded
        assert dispatch_once(ws, NOW, limit=100) == {
            "due": 16,
            "sent": 16,
            "retrying": 0,
            "dead": 0,
        }
        assert {r["status"] for r in deliveries(ws, limit=0)} == {"sent"}
        ws.close()
    finally:
        receiver.stop()
    received = Counter(r["headers"]["idempotency-key"] for r in receiver.requests)
    assert set(received) == keys  # every delivery arrived at least once
    assert sorted(received.values()) == [1] * 19 + [2]  # the fifth twice, with the same key
    bodies = {}
    for r in receiver.requests:
        key = r["headers"]["idempotency-key"]
        assert bodies.setdefault(key, r["body"]) == r["body"]
        assert json.loads(r["body"])["idempotency_key"] == key
