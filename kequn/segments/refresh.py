"""Scheduled refreshes: which are due, running them, and the calendar of upcoming and missed ones.

Each stored segment may carry a ``schedule`` (see :mod:`kequn.segments.schedule`). The
running service calls :func:`due_refreshes` and :func:`refresh` on its clock; tests and
``kequn schedule`` pass ``now`` explicitly. A refresh is an ordinary
:func:`~kequn.segments.engine.apply` of the stored definitions at ``now``, so its entries and
exits fire triggers like any other evaluation.

The calendar is open to other kinds of scheduled things (tags, later): a **provider** is a
function ``(ws) -> list[Scheduled]`` registered under a kind with
:func:`register_provider`; :func:`schedule_calendar` lists the items of every provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kequn.errors import InputError
from kequn.segments.engine import ApplyReport, Notify, apply, stored_segments
from kequn.segments.schedule import GRACE, Schedule, parse_schedule, refresh_state
from kequn.segments.timing import resolve_as_of
from kequn.workspace import Workspace, WorkspaceLike, opened

__all__ = [
    "PROVIDERS",
    "Scheduled",
    "due_refreshes",
    "missed_refreshes",
    "parse_horizon",
    "refresh",
    "register_provider",
    "schedule_calendar",
    "scheduled_items",
]


@dataclass(frozen=True)
class Scheduled:
    """One scheduled item: its kind (``segment``, ``tag``, …), name, schedule and the as_of
    of its last evaluation (None: never)."""

    kind: str
    name: str
    schedule: Schedule
    last: datetime | None


Provider = Callable[[Workspace], list[Scheduled]]


def _segments(ws: Workspace) -> list[Scheduled]:
    defs = ws.table("segments")
    defs = defs.filter(defs.schedule.notnull() & (defs.schedule != ""))
    runs = ws.table("segment_runs")
    last = runs.group_by("segment").aggregate(last=runs.as_of.max())
    rows = (
        defs.left_join(last, defs.name == last.segment)
        .select("name", "schedule", "last")
        .order_by("name")
        .to_pyarrow()
        .to_pylist()
    )
    return [
        Scheduled(
            "segment", r["name"], parse_schedule(r["schedule"], f"segment {r['name']!r}"), r["last"]
        )  # fmt: skip
        for r in rows
    ]


def _tags(ws: Workspace) -> list[Scheduled]:
    """Scheduled tags (kequn/tags), with the as_of of their last full refresh."""
    from kequn.tags.catalog import stored_tags
    from kequn.tags.values import _last_runs

    last = _last_runs(ws)
    return [
        Scheduled(
            "tag",
            t.name,
            parse_schedule(t.schedule, f"tag {t.name!r}"),
            last[t.name]["as_of"] if t.name in last else None,
        )
        for t in stored_tags(ws)
        if t.schedule and t.source != "import"
    ]


PROVIDERS: dict[str, Provider] = {"segment": _segments, "tag": _tags}


def register_provider(kind: str, provider: Provider) -> None:
    """Add a kind of scheduled item to the calendar (e.g. ``"tag"``); replaces one of the
    same kind."""
    PROVIDERS[kind] = provider


def scheduled_items(
    workspace: WorkspaceLike, kinds: Iterable[str] | None = None
) -> list[Scheduled]:
    """Every scheduled item of the registered kinds (default: all)."""
    with opened(workspace) as ws:
        chosen = list(PROVIDERS) if kinds is None else list(kinds)
        out: list[Scheduled] = []
        for kind in chosen:
            out.extend(PROVIDERS[kind](ws))
        return out


def _now(ws: Workspace, now: object) -> datetime:
    return resolve_as_of(now, ws.config.timezone).end


def due_refreshes(workspace: WorkspaceLike, now: object = None) -> list[str]:
    """Segments whose next scheduled refresh time has passed at ``now`` (or that were never
    evaluated), by name: what the service should :func:`refresh`."""
    with opened(workspace) as ws:
        moment = _now(ws, now)
        return [
            item.name
            for item in PROVIDERS["segment"](ws)
            if refresh_state(item.schedule, item.last, moment)[1] in ("never", "due", "missed")
        ]


def missed_refreshes(
    workspace: WorkspaceLike, now: object = None, grace: timedelta = GRACE
) -> dict[str, dict[str, Any]]:
    """Segments whose scheduled refresh is more than ``grace`` overdue at ``now``:
    name → ``schedule``, ``last`` (as_of of the last evaluation) and ``due`` (when the
    missed refresh was due)."""
    with opened(workspace) as ws:
        moment = _now(ws, now)
        out = {}
        for item in PROVIDERS["segment"](ws):
            due, state = refresh_state(item.schedule, item.last, moment, grace)
            if state == "missed":
                out[item.name] = {"schedule": item.schedule.text, "last": item.last, "due": due}
        return out


def _queue_deliveries(ws: Workspace, changes: Any) -> int:
    from kequn.act import enqueue_changes

    return enqueue_changes(ws, changes)


def refresh(
    workspace: WorkspaceLike,
    names: Iterable[str],
    now: object = None,
    *,
    notify: Notify | None = _queue_deliveries,
) -> ApplyReport | None:
    """Evaluate stored segments again at ``now`` (one query for all of them), recording
    entries and exits; returns None when ``names`` is empty.

    ``notify`` defaults to queueing trigger deliveries (:func:`kequn.act.enqueue_changes`,
    in apply's transaction); pass None to record without sending.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return None
    with opened(workspace) as ws:
        stored = {s.name: s for s in stored_segments(ws)}
        unknown = [n for n in wanted if n not in stored]
        if unknown:
            raise InputError(
                f"unknown segment {unknown[0]!r}; stored: " + (", ".join(sorted(stored)) or "none")
            )
        moment = _now(ws, now)
        return apply(ws, [stored[n] for n in wanted], moment, notify=notify)


def parse_horizon(value: object) -> timedelta:
    """``7d``, ``12h``, ``2w`` or a timedelta: how far ahead the calendar looks."""
    if isinstance(value, timedelta):
        return value
    text = str(value)
    try:
        every = parse_schedule(text, "horizon").every
    except InputError:
        every = None
    if every is None:
        raise InputError(f"horizon {text!r}: write a length such as 7d, 12h or 2w")
    return every


def schedule_calendar(
    workspace: WorkspaceLike,
    now: object = None,
    horizon: object = "7d",
    *,
    limit: int = 20,
    grace: timedelta = GRACE,
) -> dict[str, Any]:
    """Upcoming and missed refreshes of every scheduled item, within ``horizon`` of ``now``.

    ``items``: one per scheduled item (``kind``, ``name``, ``schedule``, ``last``,
    ``next_refresh``, ``freshness``, ``missed`` and ``upcoming``: at most ``limit`` times in
    the horizon). An overdue item's upcoming times assume it is refreshed now. ``entries``:
    the same as a calendar, one row per refresh, overdue ones first, then by time, with
    ``state`` missed / due / upcoming.
    """
    span = parse_horizon(horizon)
    with opened(workspace) as ws:
        moment = _now(ws, now)
        end = moment + span
        items = []
        entries = []
        for item in scheduled_items(ws):
            upcoming_at, state = refresh_state(item.schedule, item.last, moment, grace)
            if state == "fresh":
                assert upcoming_at is not None
                times = [upcoming_at] if upcoming_at <= end else []
                times += item.schedule.after(upcoming_at, end, limit - 1) if times else []
            else:
                times = item.schedule.after(moment, end, limit)
                entries.append(
                    {
                        "at": upcoming_at or moment,
                        "kind": item.kind,
                        "name": item.name,
                        "schedule": item.schedule.text,
                        "state": "due" if state == "never" else state,
                    }
                )
            items.append(
                {
                    "kind": item.kind,
                    "name": item.name,
                    "schedule": item.schedule.text,
                    "last": item.last,
                    "next_refresh": upcoming_at,
                    "freshness": state,
                    "missed": state == "missed",
                    "upcoming": times,
                }
            )
            entries.extend(
                {
                    "at": at,
                    "kind": item.kind,
                    "name": item.name,
                    "schedule": item.schedule.text,
                    "state": "upcoming",
                }
                for at in times
            )
        order = {"missed": 0, "due": 1, "upcoming": 2}
        entries.sort(key=lambda e: (order[e["state"]], e["at"], e["kind"], e["name"]))
        return {"now": moment, "until": end, "items": items, "entries": entries}
