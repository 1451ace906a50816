"""Schedules and freshness with an injected clock: due, missed (flagged in the list, the
health index and the calendar), refreshed; and workspaces from before the columns existed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_segments_fixtures import copy_workspace
from typer.testing import CliRunner

from kequn import open_workspace
from kequn.act.triggers import Trigger, apply_triggers
from kequn.errors import InputError
from kequn.insight.health import health
from kequn.segments import Segment, apply, list_segments, load_segments, stored_segments
from kequn.segments.refresh import (
    PROVIDERS,
    Scheduled,
    due_refreshes,
    missed_refreshes,
    refresh,
    register_provider,
    schedule_calendar,
)
from kequn.segments.schedule import parse_schedule, refresh_state

T0 = datetime(2024, 7, 1, 6, 0)  # the first evaluation
SEGMENTS = [
    Segment(name="daily", rule="count(orders, last 30 days) >= 1", schedule="1d"),
    Segment(name="at_six", rule="city = '北京'", schedule="0 6 * * *"),
    Segment(name="halfhour", rule="gender = '女'", schedule="30m"),
    Segment(name="manual", rule="channel = 'app'"),
]


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    workspace = copy_workspace(tmp_path_factory, tmp_path)
    apply(workspace, SEGMENTS, T0)
    yield workspace
    workspace.close()


def test_parse_schedule() -> None:
    assert parse_schedule("30m").every == timedelta(minutes=30)
    assert parse_schedule(" 6h ").every == timedelta(hours=6)
    assert parse_schedule("1d").every == timedelta(days=1)
    assert parse_schedule("2w").every == timedelta(weeks=2)
    cron = parse_schedule("0 6 * * 1-5")
    assert cron.cron == "0 6 * * 1-5" and cron.every is None
    # Friday 2024-07-05 06:00 → next weekday 06:00 is Monday 07-08
    assert cron.next_after(datetime(2024, 7, 5, 6, 0)) == datetime(2024, 7, 8, 6, 0)
    for bad in ("daily", "0d", "1y", "0 6 * *", "61 * * * *", "0 0 6 * * *"):
        with pytest.raises(InputError, match=repr(bad).replace("*", r"\*")):
            parse_schedule(bad)


def test_refresh_state_edges() -> None:
    plan = parse_schedule("1h")
    last = datetime(2024, 7, 1, 6, 0)
    assert refresh_state(None, last, last) == (None, "unscheduled")
    assert refresh_state(plan, None, last) == (None, "never")
    due = datetime(2024, 7, 1, 7, 0)
    assert refresh_state(plan, last, due - timedelta(seconds=1)) == (due, "fresh")
    assert refresh_state(plan, last, due) == (due, "due")
    assert refresh_state(plan, last, due + timedelta(minutes=4, seconds=59)) == (due, "due")
    assert refresh_state(plan, last, due + timedelta(minutes=5)) == (due, "missed")


def test_schedule_in_files_is_checked_and_stored(ws, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[segments]]\nname = "x"\nrule = "true"\nschedule = "hourly"\n')
    with pytest.raises(InputError, match="segment 'x': schedule: 'hourly' is not a schedule"):
        load_segments(bad)
    good = tmp_path / "good.toml"
    good.write_text('[[segments]]\nname = "x"\nrule = "true"\nschedule = "0 */4 * * *"\n')
    assert load_segments(good)[0].schedule == "0 */4 * * *"
    stored = {s.name: s.schedule for s in stored_segments(ws)}
    assert stored == {"daily": "1d", "at_six": "0 6 * * *", "halfhour": "30m", "manual": ""}


def test_due_then_missed_then_refreshed(ws) -> None:
    assert due_refreshes(ws, T0 + timedelta(minutes=29)) == []
    assert due_refreshes(ws, T0 + timedelta(minutes=30)) == ["halfhour"]
    day = T0 + timedelta(days=1)  # 07-02 06:00: the daily and the 06:00 cron are due
    assert due_refreshes(ws, day - timedelta(seconds=1)) == ["halfhour"]
    assert due_refreshes(ws, day) == ["at_six", "daily", "halfhour"]
    rows = {r["name"]: r for r in list_segments(ws, now=day + timedelta(minutes=1))}
    assert rows["daily"]["freshness"] == "due" and rows["daily"]["missed"] is False
    assert rows["daily"]["next_refresh"] == day
    assert rows["halfhour"]["freshness"] == "missed"  # due at 06:30 the day before
    assert rows["manual"]["freshness"] == "unscheduled" and rows["manual"]["next_refresh"] is None
    late = day + timedelta(hours=1)
    assert set(missed_refreshes(ws, late)) == {"at_six", "daily", "halfhour"}
    assert missed_refreshes(ws, late)["daily"] == {"schedule": "1d", "last": T0, "due": day}
    report = refresh(ws, due_refreshes(ws, late), late, notify=None)
    assert report is not None and [r.segment for r in report.runs] == [
        "at_six",
        "daily",
        "halfhour",
    ]
    assert due_refreshes(ws, late) == []
    rows = {r["name"]: r for r in list_segments(ws, now=late)}
    assert rows["daily"]["as_of"] == late and rows["daily"]["next_refresh"] == late + timedelta(1)
    assert rows["at_six"]["next_refresh"] == datetime(2024, 7, 3, 6, 0)
    assert not any(r["missed"] for r in rows.values())
    assert refresh(ws, [], late) is None
    with pytest.raises(InputError, match="unknown segment 'nope'"):
        refresh(ws, ["nope"], late)


def test_refresh_fires_triggers(ws, tmp_path: Path) -> None:
    trigger = Trigger("f", "daily", "exit", "file", {"path": str(tmp_path / "out.jsonl")})
    apply_triggers(ws, [trigger])
    # at T0 the last 30 days began 06-01 06:00: members c01, c02 (06-10) and c04 (06-29);
    # at 07-20 06:00 they begin 06-20 06:00: c02 leaves, c01 (06-20 10:00) stays
    refresh(ws, ["daily"], datetime(2024, 7, 20, 6, 0))
    d = ws.table("deliveries")
    assert d.select("customer_id", "kind").to_pyarrow().to_pylist() == [
        {"customer_id": "c02", "kind": "exit"}
    ]


def test_freshness_columns(ws) -> None:
    rows = {r["name"]: r for r in list_segments(ws, now=T0)}
    # the newest row up to 07-01 06:00: event e07 at 00:00 (order o04 of 07-01 is at 10:00)
    assert rows["daily"]["data_as_of"] == datetime(2024, 7, 1, 0, 0)
    assert rows["daily"]["evaluated_at"] is not None
    assert rows["daily"]["as_of"] == T0
    assert rows["daily"]["schedule"] == "1d"


def test_missed_refresh_is_flagged_in_health(ws) -> None:
    late = T0 + timedelta(days=1, hours=1)
    report = health(ws, "daily", as_of=late).as_dict()
    seg = report["segments"][0]
    assert seg["components"]["timeliness"]["score"] == 0.0
    assert (
        "missed its 1d refresh due at 2024-07-02 06:00"
        in (seg["components"]["timeliness"]["summary"])
    )
    assert "missed_refresh" in [w["kind"] for w in seg["warnings"]]
    fresh = health(ws, "manual", as_of=late).as_dict()["segments"][0]
    assert "missed_refresh" not in [w["kind"] for w in fresh["warnings"]]


def test_calendar_lists_missed_then_upcoming(ws) -> None:
    now = T0 + timedelta(hours=6)  # 12:00: halfhour is missed since 06:30
    cal = schedule_calendar(ws, now, "2d", limit=3)
    items = {i["name"]: i for i in cal["items"]}
    assert set(items) == {"daily", "at_six", "halfhour"}
    assert items["daily"]["upcoming"] == [datetime(2024, 7, 2, 6, 0), datetime(2024, 7, 3, 6, 0)]
    assert items["at_six"]["upcoming"] == items["daily"]["upcoming"]
    # overdue: the upcoming times assume it is refreshed now, capped at the limit
    assert items["halfhour"]["upcoming"] == [
        datetime(2024, 7, 1, 12, 30),
        datetime(2024, 7, 1, 13, 0),
        datetime(2024, 7, 1, 13, 30),
    ]
    first = cal["entries"][0]
    assert (first["name"], first["state"], first["at"]) == (
        "halfhour",
        "missed",
        datetime(2024, 7, 1, 6, 30),
    )
    assert [e["state"] for e in cal["entries"][1:]] == ["upcoming"] * 7
    with pytest.raises(InputError, match="horizon '0 6 \\* \\* \\*'"):
        schedule_calendar(ws, now, "0 6 * * *")


def test_other_kinds_join_the_calendar(ws) -> None:
    def tags(_ws) -> list[Scheduled]:
        return [Scheduled("tag", "vip", parse_schedule("6h"), T0)]

    register_provider("tag", tags)
    try:
        cal = schedule_calendar(ws, T0 + timedelta(minutes=1), "7h")
        tag = [e for e in cal["entries"] if e["kind"] == "tag"]
        assert tag == [
            {
                "at": T0 + timedelta(hours=6),
                "kind": "tag",
                "name": "vip",
                "schedule": "6h",
                "state": "upcoming",
            }
        ]
        assert due_refreshes(ws, T0 + timedelta(minutes=1)) == []  # segments only
    finally:
        del PROVIDERS["tag"]


def test_workspace_from_before_the_columns(tmp_path_factory, tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path_factory, tmp_path)
    apply(ws, [Segment(name="old", rule="true")], "2024-06-30")
    ws.store.duck.execute("ALTER TABLE segments DROP COLUMN schedule")
    ws.store.duck.execute("ALTER TABLE segment_runs DROP COLUMN data_as_of")
    ws.close()
    ws = open_workspace(tmp_path / "ws")
    try:
        rows = list_segments(ws, now=T0)
        assert rows[0]["schedule"] is None and rows[0]["data_as_of"] is None
        assert rows[0]["freshness"] == "unscheduled"
        apply(ws, [Segment(name="old", rule="true", schedule="1d")], T0)
        rows = list_segments(ws, now=T0)
        assert rows[0]["schedule"] == "1d" and rows[0]["data_as_of"] is not None
    finally:
        ws.close()


def test_cli_list_and_schedule_flag_missed(ws) -> None:
    from kequn.cli import app

    runner = CliRunner()
    folder = str(ws.path)
    # the wall clock is long past 2024-07-01: every scheduled segment has missed a refresh
    result = runner.invoke(app, ["segment", "list", "-w", folder])
    assert result.exit_code == 0, result.output
    assert "MISSED" in result.stdout
    assert "3 segment(s) missed a scheduled refresh: at_six, daily, halfhour" in result.stdout
    data = json.loads(runner.invoke(app, ["segment", "list", "--json", "-w", folder]).stdout)
    assert {r["name"]: r["missed"] for r in data} == {
        "at_six": True,
        "daily": True,
        "halfhour": True,
        "manual": False,
    }
    result = runner.invoke(app, ["schedule", "--horizon", "1d", "-w", folder])
    assert result.exit_code == 0, result.output
    assert "MISSED" in result.stdout and "3 missed" in result.stdout
    data = json.loads(runner.invoke(app, ["schedule", "--json", "-w", folder]).stdout)
    assert [e["state"] for e in data["entries"][:3]] == ["missed"] * 3
    result = runner.invoke(app, ["schedule", "--horizon", "soon", "-w", folder])
    assert result.exit_code == 2 and "horizon 'soon'" in result.stderr
