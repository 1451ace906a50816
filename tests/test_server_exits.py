"""Exits at the moment a time-relative condition flips: across midnight and DST changes.

The service's clock is injected (wall time in the workspace zone, as stored); each test
steps it a second at a time around the flip and checks that the exit is recorded at the
first tick at or after the flip, never before, and that batch evaluation agrees.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kequn import init_workspace
from kequn.segments import engine
from kequn.segments.definitions import Segment
from kequn.server.service import Service


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def exits(ws, segment: str) -> list[tuple[str, datetime]]:
    m = ws.table("memberships")
    rows = m.filter((m.segment == segment) & m.exited_at.notnull()).to_pyarrow().to_pylist()
    return [(r["customer_id"], r["exited_at"]) for r in rows]


def step_through(service: Service, clock: Clock, start: datetime, seconds: int) -> None:
    for i in range(seconds):
        clock.now = start + timedelta(seconds=i)
        service.tick()


def order(cid: str, at: datetime) -> dict:
    return {"order_id": f"o-{cid}", "customer_id": cid, "ordered_at": at, "amount": 10.0}


def test_days_since_flips_at_midnight_in_shanghai(tmp_path):
    ws = init_workspace(tmp_path / "ws", timezone="Asia/Shanghai")
    clock = Clock(datetime(2026, 5, 1, 9, 0))
    service = Service(ws, clock=clock)
    service.save_segment(Segment("fresh", "count(orders, ever) > 0 and days_since_last_order < 2"))
    service.submit(orders=[order("C1", datetime(2026, 5, 1, 8, 0))])
    service.process()
    service.tick()
    # 1 May: day 0, 2 May: day 1, 3 May 00:00: day 2 -> leaves at local midnight
    step_through(service, clock, datetime(2026, 5, 2, 23, 59, 57), 6)
    [(cid, at)] = exits(ws, "fresh")
    assert cid == "C1"
    assert at == datetime(2026, 5, 3, 0, 0, 0)
    for moment, member in ((at - timedelta(seconds=1), True), (at, False)):
        assert (engine.evaluate(ws, "days_since_last_order < 2", moment) == ["C1"]) is member
    ws.close()


def test_last_1_days_across_spring_forward_in_london(tmp_path):
    """29 March 2026: 01:00 GMT becomes 02:00 BST. Windows are wall-clock days, as stored."""
    ws = init_workspace(tmp_path / "ws", timezone="Europe/London")
    clock = Clock(datetime(2026, 3, 28, 12, 0, 5))
    service = Service(ws, clock=clock)
    service.save_segment(Segment("recent", "count(orders, last 1 days) > 0"))
    service.submit(orders=[order("C1", datetime(2026, 3, 28, 12, 0, 0))])
    service.process()
    service.tick()
    # the wall clock skips 01:00-02:00; ticks jump with it
    clock.now = datetime(2026, 3, 29, 0, 59, 59)
    service.tick()
    clock.now = datetime(2026, 3, 29, 2, 0, 0)
    service.tick()
    assert exits(ws, "recent") == []
    step_through(service, clock, datetime(2026, 3, 29, 11, 59, 58), 5)
    # the order left "the last 1 day" when its wall time plus one day passed
    [(cid, at)] = exits(ws, "recent")
    assert at == datetime(2026, 3, 29, 12, 0, 1)
    assert engine.evaluate(ws, "count(orders, last 1 days) > 0", at) == []
    assert engine.evaluate(ws, "count(orders, last 1 days) > 0", at - timedelta(seconds=1))
    ws.close()


def test_fall_back_hour_is_not_skipped(tmp_path):
    """25 October 2026: 02:00 BST becomes 01:00 GMT; the wall clock repeats an hour."""
    ws = init_workspace(tmp_path / "ws", timezone="Europe/London")
    clock = Clock(datetime(2026, 10, 24, 1, 30, 0))
    service = Service(ws, clock=clock)
    service.save_segment(Segment("recent", "count(orders, last 1 days) > 0"))
    service.submit(orders=[order("C1", datetime(2026, 10, 24, 1, 30, 0))])
    service.process()
    service.tick()
    clock.now = datetime(2026, 10, 25, 1, 59, 59)  # first pass through 01:xx (BST)
    service.tick()
    [(_, first)] = exits(ws, "recent")  # 01:30 + 1 day passed on the first pass
    assert first == datetime(2026, 10, 25, 1, 59, 59)
    # the clock goes back an hour; a new order's window edge falls in the repeated hour
    service.submit(orders=[{**order("C2", datetime(2026, 10, 24, 1, 40, 0))}])
    clock.now = datetime(2026, 10, 25, 1, 0, 0)
    service.process()
    service.tick()  # the clock went back: the next ticks re-examine the hour
    step_through(service, clock, datetime(2026, 10, 25, 1, 39, 58), 4)
    found = dict(exits(ws, "recent"))
    assert found["C2"] == datetime(2026, 10, 25, 1, 40, 1)
    ws.close()
