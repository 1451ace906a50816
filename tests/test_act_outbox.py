"""The outbox: idempotent enqueue, caps, quiet hours, experiments with holdouts, requeue."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from test_act_webhook import AT, CUSTOMERS, NOW, Receiver, add_customers, enter, one

from kequn import open_workspace
from kequn.act.outbox import (
    Outcome,
    Transition,
    backoff,
    deliveries,
    delivery_counts,
    dispatch_once,
    due,
    enqueue,
    record,
    requeue,
)
from kequn.act.triggers import Trigger, apply_triggers
from kequn.errors import InputError
from kequn.store import TABLES


def file_trigger(path: str = "out/vip.jsonl", **extra) -> Trigger:
    name = extra.pop("name", "vip-file")
    return Trigger(name, "vip", "enter", "file", {"path": path}, **extra)


def count(ws, table: str) -> int:
    return ws.store.duck.execute(f"select count(*) from {table}").fetchone()[0]


def test_enqueue_twice_makes_one_delivery(ws):
    apply_triggers(ws, [file_trigger()])
    assert enter(ws, "c1", "c2") == 2
    assert enter(ws, "c1", "c2") == 0  # a replay after a crash
    # the same transition listed twice in one call
    same = Transition("vip", "c3", "enter", AT)
    with ws.store.transaction():
        assert enqueue(ws, [same, same], NOW) == 1
    assert count(ws, "deliveries") == 3
    # a later entry of the same customer is a new event
    assert enter(ws, "c1", at=AT + timedelta(days=1)) == 1


def test_enqueue_joins_the_callers_transaction(ws):
    apply_triggers(ws, [file_trigger()])
    with pytest.raises(RuntimeError), ws.store.transaction():
        assert enqueue(ws, [Transition("vip", "c1", "enter", AT)], NOW) == 1
        raise RuntimeError("the membership write failed")
    assert count(ws, "deliveries") == 0


def test_only_matching_triggers(ws):
    exit_trigger = Trigger("vip-left", "vip", "exit", "file", {"path": "left.jsonl"})
    other = Trigger("new-file", "new", "enter", "file", {"path": "new.jsonl"})
    apply_triggers(ws, [file_trigger(), exit_trigger, other])
    with ws.store.transaction():
        n = enqueue(
            ws,
            [
                Transition("vip", "c1", "enter", AT),
                Transition("vip", "c2", "exit", AT),
                Transition("lapsed", "c3", "enter", AT),
            ],
            NOW,
        )
    assert n == 2
    got = {(r["trigger"], r["customer_id"], r["kind"]) for r in deliveries(ws)}
    assert got == {("vip-file", "c1", "enter"), ("vip-left", "c2", "exit")}
    left = one(ws, trigger="vip-left")
    assert left["payload"]["event"] == "segment.exit"


def test_cap_per_customer_and_period(ws):
    apply_triggers(ws, [file_trigger(cap="1/7d")])
    enter(ws, "c1", "c2")
    # c1 enters again 2 days later (after leaving): over the cap of one per 7 days
    enter(ws, "c1", at=AT + timedelta(days=2), now=NOW + timedelta(days=2))
    capped = one(ws, status="capped")
    assert capped["customer_id"] == "c1" and capped["next_attempt_at"] is None
    assert capped["last_error"] == (
        "capped: cap '1/7d' allows 1 message(s) per customer per 7d; 1 already in that period"
    )
    # 8 days after the first message the period has passed
    enter(ws, "c1", at=AT + timedelta(days=8), now=NOW + timedelta(days=8))
    assert [r["status"] for r in deliveries(ws, segment="vip") if r["customer_id"] == "c1"] == [
        "pending",
        "capped",
        "pending",
    ]
    # a capped delivery is never sent
    tally = dispatch_once(ws, NOW + timedelta(days=8))
    assert tally["sent"] == 3
    lines = (ws.path / "out" / "vip.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["customer_id"] for x in lines) == ["c1", "c1", "c2"]


def test_cap_within_one_batch_keeps_the_earliest(ws):
    apply_triggers(ws, [file_trigger(cap="2/1d")])
    with ws.store.transaction():
        enqueue(
            ws,
            [Transition("vip", "c1", "enter", AT + timedelta(minutes=m)) for m in (30, 10, 20)],
            NOW,
        )
    rows = sorted(deliveries(ws), key=lambda r: r["payload"]["at"])
    assert [r["status"] for r in rows] == ["pending", "pending", "capped"]
    assert rows[2]["payload"]["at"] == "2026-03-02T10:00:00"


def test_workspace_default_cap(tmp_path):
    from kequn import init_workspace

    init_workspace(tmp_path / "w").close()
    config = tmp_path / "w" / "kequn.toml"
    config.write_text(config.read_text() + '\n[triggers]\ncap = "1/1d"\n')
    with open_workspace(tmp_path / "w") as ws:
        apply_triggers(ws, [file_trigger(), file_trigger(name="no-cap", cap="none")])
        enter(ws, "c1")
        enter(ws, "c1", at=AT + timedelta(hours=1))
        statuses = {(r["trigger"], r["payload"]["at"]): r["status"] for r in deliveries(ws)}
    assert statuses == {
        ("vip-file", "2026-03-02T09:30:00"): "pending",
        ("vip-file", "2026-03-02T10:30:00"): "capped",
        ("no-cap", "2026-03-02T09:30:00"): "pending",
        ("no-cap", "2026-03-02T10:30:00"): "pending",
    }


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 2, 23, 30), datetime(2026, 3, 3, 8, 0)),
        (datetime(2026, 3, 2, 7, 0), datetime(2026, 3, 2, 8, 0)),
        (datetime(2026, 3, 2, 22, 0), datetime(2026, 3, 3, 8, 0)),
        (datetime(2026, 3, 2, 8, 0), datetime(2026, 3, 2, 8, 0)),
        (datetime(2026, 3, 2, 12, 0), datetime(2026, 3, 2, 12, 0)),
        # an aware instant is read in the workspace zone: 15:30 UTC is 23:30 in Shanghai
        (datetime(2026, 3, 2, 15, 30, tzinfo=UTC), datetime(2026, 3, 3, 8, 0)),
    ],
)
def test_quiet_hours_postpone_to_their_end(ws, now, expected):
    apply_triggers(ws, [file_trigger(quiet_hours="22:00-08:00")])
    enter(ws, "c1", now=now)
    assert one(ws)["next_attempt_at"] == expected
    assert due(ws, expected - timedelta(seconds=1)) == []
    assert len(due(ws, expected)) == 1


def test_quiet_hours_within_a_day(ws):
    apply_triggers(ws, [file_trigger(quiet_hours="12:00-14:00")])
    enter(ws, "c1", now=datetime(2026, 3, 2, 13, 0))
    enter(ws, "c2", now=datetime(2026, 3, 2, 23, 0))
    nexts = {r["customer_id"]: r["next_attempt_at"] for r in deliveries(ws)}
    assert nexts == {"c1": datetime(2026, 3, 2, 14, 0), "c2": datetime(2026, 3, 2, 23, 0)}


def test_a_retry_falling_in_quiet_hours_waits_for_the_end(ws):
    receiver = Receiver()
    try:
        receiver.default = (503, {}, b"")
        trig = Trigger(
            "vip-hook",
            "vip",
            "enter",
            "webhook",
            {"url": receiver.url()},
            quiet_hours="22:00-08:00",
        )
        apply_triggers(ws, [trig])
        evening = datetime(2026, 3, 2, 21, 59, 59)
        enter(ws, "c1", now=evening)
        dispatch_once(ws, evening)  # fails; the retry (~2 s later) falls after 22:00
    finally:
        receiver.stop()
    assert one(ws)["next_attempt_at"] == datetime(2026, 3, 3, 8, 0)


def _arm(experiment: str, customer: str, arms: dict[str, float]) -> str:
    """The assignment rule, written out independently of kequn.act.experiments."""
    digest = hashlib.sha256(f"{experiment}\x1f{customer}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    acc = 0.0
    for name in sorted(arms):
        acc += arms[name]
        if u < acc:
            return name
    return sorted(arms)[-1]


def test_experiment_holdout_is_recorded_never_sent(ws):
    from kequn.act.experiments import Experiment

    arms = {"holdout": 0.2, "a": 0.4, "b": 0.4}
    experiment = Experiment(
        "welcome-test",
        arms,
        variants={"a": {"path": "out/a.jsonl"}, "b": {"path": "out/b.jsonl"}},
    )
    apply_triggers(ws, [file_trigger("out/base.jsonl", experiment=experiment)])
    customers = [f"c{i:02d}" for i in range(40)]
    add_customers(ws, [{"customer_id": c, "name": f"n{c}"} for c in customers])
    enter(ws, *customers)
    expected = {c: _arm("welcome-test", c, arms) for c in customers}
    assert set(expected.values()) == {"holdout", "a", "b"}  # the sample covers every arm
    rows = {r["customer_id"]: r for r in deliveries(ws, limit=0)}
    assert {c: r["variant"] for c, r in rows.items()} == expected
    for c, r in rows.items():
        assert r["status"] == ("holdout" if expected[c] == "holdout" else "pending")
        assert r["payload"]["variant"] == expected[c]
    assignments = ws.store.duck.execute(
        "select customer_id, variant, trigger, segment, assigned_at from experiment_assignments"
    ).fetchall()
    assert sorted(assignments) == sorted((c, v, "vip-file", "vip", AT) for c, v in expected.items())
    # a later transition keeps the first assignment
    enter(ws, *customers[:5], at=AT + timedelta(days=30), now=NOW + timedelta(days=30))
    assert count(ws, "experiment_assignments") == 40
    dispatch_once(ws, NOW + timedelta(days=30), limit=1000)
    out = ws.path / "out"
    sent = {
        arm: sorted(
            {json.loads(x)["customer_id"] for x in (out / f"{arm}.jsonl").read_text().splitlines()}
        )
        for arm in ("a", "b")
    }
    assert sent == {arm: sorted(c for c, v in expected.items() if v == arm) for arm in ("a", "b")}
    assert not (out / "base.jsonl").exists()
    holdouts = deliveries(ws, status="holdout", limit=0)
    assert len(holdouts) == sum(
        v == "holdout" for v in [*expected.values(), *(expected[c] for c in customers[:5])]
    )
    assert all(r["attempts"] == 0 and r["sent_at"] is None for r in holdouts)


def test_backoff_schedule():
    import random

    rng = random.Random(7)
    for attempts, base in [(1, 2), (2, 4), (3, 8), (8, 256), (12, 3600), (30, 3600)]:
        waits = [backoff(attempts, rng) for _ in range(200)]
        assert min(waits) >= base * 0.8 - 1e-9
        assert max(waits) <= min(3600, base * 1.2) + 1e-9
        assert max(waits) - min(waits) > base * 0.1  # jittered


def test_record_does_not_undo_a_sent_delivery(ws):
    apply_triggers(ws, [file_trigger()])
    enter(ws, "c1")
    (delivery,) = due(ws, NOW)
    record(ws, delivery, Outcome(True), NOW)
    record(ws, delivery, Outcome(False, "late dispatcher"), NOW)  # a stale copy
    row = one(ws)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)


def test_record_many_in_one_transaction(ws):
    from kequn.act.outbox import record_many

    apply_triggers(ws, [file_trigger(max_attempts=2)])
    enter(ws, "c1", "c2", "c3")
    batch = {d.customer_id: d for d in due(ws, NOW)}
    outcomes = [
        (batch["c1"], Outcome(True)),
        (batch["c2"], Outcome(False, "HTTP 503")),
        (batch["c3"], Outcome(False, "HTTP 401", permanent=True)),
    ]
    record_many(ws, outcomes, NOW)
    rows = {r["customer_id"]: r for r in deliveries(ws)}
    assert {c: (r["status"], r["attempts"]) for c, r in rows.items()} == {
        "c1": ("sent", 1),
        "c2": ("pending", 1),
        "c3": ("dead", 1),
    }
    (retry,) = due(ws, NOW + timedelta(seconds=3))
    record_many(ws, [(retry, Outcome(False, "HTTP 503"))], NOW + timedelta(seconds=3))
    c2 = next(r for r in deliveries(ws) if r["customer_id"] == "c2")
    assert (c2["status"], c2["last_error"]) == ("dead", "gave up after 2 attempts: HTTP 503")


def test_aware_transition_time_is_workspace_time(ws):
    apply_triggers(ws, [file_trigger()])
    with ws.store.transaction():
        enqueue(
            ws, [Transition("vip", "c1", "enter", datetime(2026, 3, 2, 1, 30, tzinfo=UTC))], NOW
        )
    assert enter(ws, "c1") == 0  # 01:30 UTC is 09:30 in Shanghai: the same event
    assert one(ws)["payload"]["at"] == "2026-03-02T09:30:00"


def test_requeue_dead(ws):
    apply_triggers(
        ws, [Trigger("vip-hook", "vip", "enter", "webhook", {"url": "http://127.0.0.1:9/x"})]
    )
    enter(ws, "c1", "c2")
    for delivery in due(ws, NOW):
        record(ws, delivery, Outcome(False, "HTTP 404", permanent=True), NOW)
    assert delivery_counts(ws)["dead"] == 2
    first = deliveries(ws)[0]
    with pytest.raises(InputError, match="no delivery 'nope'"):
        requeue(ws, ["nope"])
    assert requeue(ws, [first["delivery_id"]], now=NOW) == 1
    row = one(ws, status="pending")
    assert (row["attempts"], row["next_attempt_at"], row["last_error"]) == (0, NOW, "HTTP 404")
    with pytest.raises(InputError, match="is pending, not dead"):
        requeue(ws, [row["idempotency_key"]])
    assert requeue(ws, dead=True, now=NOW) == 1
    assert delivery_counts(ws) == {"pending": 2, "sent": 0, "dead": 0, "holdout": 0, "capped": 0}


def test_listing_filters_and_bad_status(ws):
    apply_triggers(
        ws, [file_trigger(), Trigger("lapsed-file", "lapsed", "enter", "file", {"path": "l.jsonl"})]
    )
    enter(ws, "c1", "c2")
    with ws.store.transaction():
        enqueue(ws, [Transition("lapsed", "c3", "enter", AT)], NOW)
    assert len(deliveries(ws)) == 3
    assert [r["customer_id"] for r in deliveries(ws, segment="lapsed")] == ["c3"]
    assert len(deliveries(ws, trigger="vip-file")) == 2
    assert len(deliveries(ws, limit=1)) == 1
    with pytest.raises(InputError, match="did you mean 'pending'"):
        deliveries(ws, status="pendng")


def test_enqueue_thousands_is_fast(ws):
    apply_triggers(ws, [file_trigger(cap="1/7d"), file_trigger(name="second", path="b.jsonl")])
    add_customers(ws, [{"customer_id": f"c{i}", "name": f"n{i}"} for i in range(5000)])
    transitions = [Transition("vip", f"c{i}", "enter", AT) for i in range(5000)]
    start = time.perf_counter()
    with ws.store.transaction():
        assert enqueue(ws, transitions, NOW) == 10000
    elapsed = time.perf_counter() - start
    assert elapsed < 15, elapsed  # measured about 1 s; generous for shared CI machines
    assert count(ws, "deliveries") == 10000
    with ws.store.transaction():
        assert enqueue(ws, transitions, NOW) == 0


def test_schema_has_the_contract_columns():
    assert list(TABLES["deliveries"].names) == [
        "delivery_id", "idempotency_key", "trigger", "segment", "customer_id", "kind", "channel",
        "variant", "payload", "status", "attempts", "next_attempt_at", "last_error", "created_at",
        "sent_at", "updated_at",
    ]  # fmt: skip
    assert list(TABLES["triggers"].names) == [
        "name", "segment", "on", "channel", "config", "updated_at"
    ]  # fmt: skip


def test_customers_profile_in_payload(ws):
    add_customers(ws, CUSTOMERS)
    apply_triggers(ws, [file_trigger()])
    enter(ws, "c2", "c9")
    payloads = {r["customer_id"]: r["payload"]["customer"] for r in deliveries(ws)}
    assert payloads["c2"] == {
        "name": "Li Si", "city": "上海", "email": "ls@example.com", "phone": None, "channel": "web"
    }  # fmt: skip
    assert payloads["c9"] == dict.fromkeys(("name", "city", "email", "phone", "channel"))
