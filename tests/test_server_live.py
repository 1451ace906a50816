"""The live path, driven step by step with an injected clock (no threads, no HTTP).

Every expectation is checked twice: against hand-written membership, and against the batch
engine evaluating the same rule at the same instant (one semantics).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from kequn.segments import engine
from kequn.segments.definitions import Segment
from kequn.server.service import Service

START = datetime(2026, 1, 10, 12, 0, 0)

SEGMENTS = [
    Segment(
        "cart_no_order",
        "count(events where type = 'add_to_cart', last 30 days) > 0 "
        "and count(orders, last 30 days) = 0",
    ),
    Segment("beijing", "city = '北京'"),
    Segment("recent_buyer", "count(orders, last 7 days) >= 1"),
    Segment("lapsed", "count(orders, ever) > 0 and days_since_last_order >= 3"),
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def live(ws):
    clock = Clock(START)
    service = Service(ws, clock=clock)
    for seg in SEGMENTS:
        service.save_segment(seg)
    service.submit(customers=[{"customer_id": "C1"}, {"customer_id": "C2"}])
    service.process()
    return service, clock


def open_members(ws, segment: str) -> set[str]:
    m = ws.table("memberships")
    rows = m.filter((m.segment == segment) & m.exited_at.isnull()).customer_id.to_pyarrow()
    return set(rows.to_pylist())


def assert_same_as_batch(service: Service, at: datetime) -> None:
    for seg in SEGMENTS:
        batch = set(engine.evaluate(service.ws, seg.rule, at))
        assert open_members(service.ws, seg.name) == batch, seg.name


def event(eid: str, cid: str, kind: str, at: datetime) -> dict:
    return {"event_id": eid, "customer_id": cid, "type": kind, "occurred_at": at}


def order(oid: str, cid: str, at: datetime, amount: float = 100.0) -> dict:
    return {
        "order_id": oid,
        "customer_id": cid,
        "ordered_at": at,
        "amount": amount,
        "is_return": False,
    }


def test_event_enters_and_order_moves_customer(live):
    service, clock = live
    service.submit(events=[event("e1", "C1", "add_to_cart", clock.now)])
    moves = service.process()
    assert [(t.segment, t.customer_id, t.kind) for t in moves] == [("cart_no_order", "C1", "enter")]
    assert moves[0].at == clock.now
    clock.now += timedelta(hours=1)
    service.submit(orders=[order("o1", "C1", clock.now)])
    moves = {(t.segment, t.kind) for t in service.process()}
    assert moves == {("cart_no_order", "exit"), ("recent_buyer", "enter")}
    assert_same_as_batch(service, clock.now)


def test_event_no_rule_reads_changes_nothing(live):
    service, clock = live
    assert service.live.affected({("event", "view")}) == set()
    assert service.live.affected({("event", "add_to_cart")}) == {"cart_no_order"}
    assert service.live.affected({("order", "")}) == {"cart_no_order", "recent_buyer", "lapsed"}
    before = service.stats["evaluated"]
    service.submit(events=[event("v1", "C2", "view", clock.now)])
    assert service.process() == []
    assert service.stats["evaluated"] == before + 1  # the customer, with no segment to run
    assert_same_as_batch(service, clock.now)


def test_retried_event_is_stored_once(live):
    service, clock = live
    first = service.submit(events=[event("e1", "C1", "add_to_cart", clock.now)])
    again = service.submit(
        events=[event("e1", "C1", "add_to_cart", clock.now), event("e2", "C1", "view", clock.now)]
    )
    assert (len(first.new), len(first.duplicates)) == (1, 0)
    assert again.new == ["event:e2"] and again.duplicates == ["event:e1"]
    ids = service.ws.table("events").event_id.to_pyarrow().to_pylist()
    assert sorted(ids) == ["e1", "e2"]


def test_customer_upsert_keeps_fields_not_given(live):
    service, clock = live
    service.submit(
        customers=[{"customer_id": "C1", "city": "北京", "attributes": {"vip": True, "level": 2}}]
    )
    assert {(t.segment, t.kind) for t in service.process()} == {("beijing", "enter")}
    service.submit(customers=[{"customer_id": "C1", "name": "张三", "attributes": {"level": 3}}])
    service.process()
    c = service.ws.table("customers")
    row = c.filter(c.customer_id == "C1").to_pyarrow().to_pylist()
    assert len(row) == 1
    assert (row[0]["name"], row[0]["city"]) == ("张三", "北京")
    assert row[0]["attributes"] == '{"vip": true, "level": 3}'
    assert open_members(service.ws, "beijing") == {"C1"}


def test_unknown_customer_in_event_is_created(live):
    service, clock = live
    service.submit(events=[event("e9", "NEW", "add_to_cart", clock.now)])
    service.process()
    assert open_members(service.ws, "cart_no_order") == {"NEW"}


def test_time_alone_moves_customers_out_and_in(live):
    service, clock = live
    service.submit(orders=[order("o1", "C1", clock.now)])
    service.process()
    service.tick()  # baseline
    assert open_members(service.ws, "recent_buyer") == {"C1"}
    # days_since_last_order >= 3 flips at the midnight three days after the order
    clock.now = datetime(2026, 1, 12, 23, 59, 59)
    assert service.tick() == []
    clock.now = datetime(2026, 1, 13, 0, 0, 1)
    assert [(t.segment, t.kind) for t in service.tick()] == [("lapsed", "enter")]
    # one second before the 7 days are over: still a member
    clock.now = START + timedelta(days=7) - timedelta(seconds=1)
    assert service.tick() == []
    # the window passes the order: exit without any event, at the tick's time
    clock.now = START + timedelta(days=7, seconds=1)
    moves = service.tick()
    assert [(t.segment, t.customer_id, t.kind) for t in moves] == [("recent_buyer", "C1", "exit")]
    assert moves[0].at == clock.now
    assert open_members(service.ws, "lapsed") == {"C1"}
    assert_same_as_batch(service, clock.now)


def test_tick_looks_only_at_customers_on_a_window_edge(live):
    service, clock = live
    service.submit(orders=[order("o1", "C1", START - timedelta(days=7)), order("o2", "C2", START)])
    service.process()
    due = service.live.due(START - timedelta(seconds=5), START + timedelta(seconds=5))
    assert set(due) == {"C1"}
    assert due["C1"] >= {"recent_buyer"}
    assert "beijing" not in due["C1"]  # attribute rules do not move with time


def test_crash_before_recording_is_replayed(ws):
    clock = Clock(START)
    service = Service(ws, clock=clock)
    service.save_segment(SEGMENTS[0])
    service.submit(events=[event("e1", "C1", "add_to_cart", clock.now)])
    # the process dies here: accepted, not evaluated; a new service resumes
    again = Service(ws, clock=clock)
    moves = again.process()
    assert [(t.customer_id, t.kind) for t in moves] == [("C1", "enter")]
    assert again.journal.processed() == again.journal.seq
    assert Service(ws, clock=clock).process() == []


def test_scheduled_refresh_runs_in_the_service(ws):
    clock = Clock(START)
    service = Service(ws, clock=clock)
    service.save_segment(Segment("hourly", "count(orders, ever) > 0", schedule="1h"))
    assert service.refresh_scheduled() == []  # just evaluated
    clock.now = START + timedelta(minutes=59)
    assert service.refresh_scheduled() == []
    clock.now = START + timedelta(hours=1, seconds=1)
    assert service.refresh_scheduled() == ["hourly"]
    runs = ws.table("segment_runs").as_of.to_pyarrow().to_pylist()
    assert runs == [START, START + timedelta(hours=1, seconds=1)]


def test_live_interest_tag_moves_a_segment_reading_it(ws, tmp_path):
    from kequn.tags.catalog import apply_tags, load_tags

    path = tmp_path / "tags.toml"
    path.write_text(
        '[[tags]]\nname = "interests"\nsource = "interest"\n'
        "interest = { events = { add_to_cart = 3 }, threshold = 7 }\n",
        encoding="utf-8",
    )
    apply_tags(ws, load_tags(path))
    clock = Clock(START)
    service = Service(ws, clock=clock)

    def cart(eid: str, cid: str) -> dict:
        return {**event(eid, cid, "add_to_cart", START), "properties": '{"category": "美妆"}'}

    service.submit(events=[cart(f"b{i}", "C2") for i in range(3)])  # 9 >= 7: an interest
    from kequn.tags.values import refresh_tags

    refresh_tags(ws, ["interests"], START)  # the tag's first values
    service.save_segment(Segment("beauty_fans", "tag.interests contains '美妆'"))
    assert open_members(ws, "beauty_fans") == {"C2"}
    service.process()
    carts = [cart(f"c{i}", "C1") for i in range(2)]
    service.submit(events=carts)  # weight 6 < 7: not yet an interest
    assert service.process() == []
    service.submit(events=[cart("c9", "C1")])  # 9 >= 7
    moves = service.process()
    assert [(t.segment, t.customer_id, t.kind) for t in moves] == [("beauty_fans", "C1", "enter")]
