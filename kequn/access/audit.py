"""The audit log: who changed rules, exported data or used a token, and when.

Append-only by construction: this module writes with :func:`audit` and reads with
:func:`audit_entries`; there is no function that updates or deletes an entry. Every entry
has a sequence number, so entries written in the same instant keep their order.
"""

from __future__ import annotations

import getpass
import json
import threading
from datetime import date, datetime, time
from typing import Any

import ibis
import pyarrow as pa

from kequn.config import zone_info
from kequn.errors import InputError
from kequn.workspace import Workspace

__all__ = ["audit", "audit_entries", "local_actor"]

# One writer at a time per process, so ``max(seq) + 1`` is never handed out twice (a
# DuckDB file has a single writing process).
_write_lock = threading.Lock()


def local_actor() -> str:
    """The actor for commands run on this machine: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        user = "unknown"
    return f"cli:{user}"


def _now(ws: Workspace) -> datetime:
    return datetime.now(zone_info(ws.config.timezone)).replace(tzinfo=None)


def _local(ws: Workspace, value: datetime) -> datetime:
    """Stored wall time in the workspace zone (aware datetimes converted)."""
    if value.tzinfo is not None:
        value = value.astimezone(zone_info(ws.config.timezone)).replace(tzinfo=None)
    return value


def audit(
    ws: Workspace,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> int:
    """Append one entry and return its sequence number.

    ``action`` names what happened as ``noun.verb`` (``token.create``, ``token.use``,
    ``rule.update``, ``export``); ``target`` what it happened to (a token or segment name,
    a file). ``detail`` is stored as JSON; never put a secret in it.
    """
    for label, value in (("actor", actor), ("action", action)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"audit entry: {label} {value!r} must be a non-empty string")
    when = _now(ws) if at is None else _local(ws, at)
    text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
    log = ws.table("audit_log")
    with _write_lock:
        last = log.seq.max().execute()
        seq = 1 if last is None or last != last else int(last) + 1
        ws.store.append(
            "audit_log",
            pa.table(
                {
                    "seq": pa.array([seq], pa.int64()),
                    "at": pa.array([when], pa.timestamp("us")),
                    "actor": [actor],
                    "action": [action],
                    "target": [str(target)],
                    "detail": [text],
                }
            ),
        )
    return seq


def _bound(ws: Workspace, value: object, *, end: bool) -> tuple[datetime, bool]:
    """A ``since``/``until`` bound: a day means its start (since) or its whole day (until).

    Returns the instant and whether an entry exactly at it is inside the range.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                which = "until" if end else "since"
                raise InputError(
                    f"{which} {text!r} is not a date or time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
                ) from None
    if isinstance(value, datetime):
        return _local(ws, value), True
    if isinstance(value, date):
        if end:
            return datetime.combine(date.fromordinal(value.toordinal() + 1), time()), False
        return datetime.combine(value, time()), True
    raise InputError(f"{value!r} is not a date or time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM")


def audit_entries(
    ws: Workspace,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
    limit: int = 100,
    *,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """Entries newest first, filtered; ``limit=0`` returns all that match.

    ``action`` matches exactly or as a prefix before a dot (``token`` matches
    ``token.create``, ``token.revoke`` and ``token.use``). A day in ``since`` means its
    start, in ``until`` its end.
    """
    if limit < 0:
        raise InputError(f"limit {limit!r} must be 0 (all) or a positive number")
    log = ws.table("audit_log")
    if actor is not None:
        log = log.filter(log.actor == actor)
    if target is not None:
        log = log.filter(log.target == target)
    if action is not None:
        log = log.filter((log.action == action) | log.action.startswith(action + "."))
    if since is not None:
        start, _ = _bound(ws, since, end=False)
        log = log.filter(log.at >= ibis.literal(start, "timestamp"))
    if until is not None:
        stop, inclusive = _bound(ws, until, end=True)
        stop_lit = ibis.literal(stop, "timestamp")
        log = log.filter(log.at <= stop_lit if inclusive else log.at < stop_lit)
    log = log.order_by(ibis.desc("seq"))
    if limit:
        log = log.limit(limit)
    rows = log.to_pyarrow().to_pylist()
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return rows
