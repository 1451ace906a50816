"""Refresh schedules: an interval (``30m``, ``6h``, ``1d``, ``2w``) or a 5-field cron expression.

A schedule says when a segment (or, later, a tag) should be evaluated again after its last
evaluation. This module only reads schedule text and computes times, with no database, so
definitions can validate a schedule when a file is read and the engine can flag a missed
refresh when it lists segments. :mod:`kequn.segments.refresh` runs them.

* An **interval** ``N`` + ``m``/``h``/``d``/``w``: the next refresh is due that long after
  the last evaluation's ``as_of``.
* A **cron expression** (minute hour day-of-month month day-of-week, in the workspace's time
  zone, read by ``croniter``): the next refresh is due at the first matching minute after the
  last evaluation.

A refresh is **due** once its time has come, and **missed** when it still has not happened
``grace`` later (default :data:`GRACE`): the running service refreshes due segments within
seconds, so a refresh still pending after that means nothing is running it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from kequn.errors import InputError

__all__ = ["GRACE", "Schedule", "parse_schedule", "refresh_state"]

GRACE = timedelta(minutes=5)
_INTERVAL = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``every`` for an interval, else ``cron`` (the expression)."""

    text: str
    every: timedelta | None = None
    cron: str | None = None

    def next_after(self, last: datetime | None) -> datetime | None:
        """When the refresh after an evaluation at ``last`` is due; None: never evaluated,
        due at once."""
        if last is None:
            return None
        if self.every is not None:
            return last + self.every
        from croniter import croniter

        return croniter(self.cron, last).get_next(datetime)

    def after(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The scheduled times in (start, end], at most ``limit``: a calendar's rows."""
        out: list[datetime] = []
        if self.every is not None:
            moment = start + self.every
            while moment <= end and len(out) < limit:
                out.append(moment)
                moment += self.every
            return out
        from croniter import croniter

        it = croniter(self.cron, start)
        while len(out) < limit:
            moment = it.get_next(datetime)
            if moment > end:
                break
            out.append(moment)
        return out


def parse_schedule(text: str, where: str = "schedule") -> Schedule:
    """Read ``30m`` / ``6h`` / ``1d`` / ``2w`` or a 5-field cron expression.

    Raises :class:`~kequn.errors.InputError` quoting the text and showing both forms.
    """
    if not isinstance(text, str):
        raise InputError(f'{where}: {text!r} is not text; write e.g. schedule = "1d"')
    match = _INTERVAL.match(text)
    if match:
        n, unit = int(match.group(1)), match.group(2)
        if n <= 0:
            raise InputError(f"{where}: {text!r} is no interval; use a positive number, e.g. 1d")
        return Schedule(text.strip(), every=timedelta(**{_UNITS[unit]: n}))
    fields = text.split()
    if len(fields) == 5:
        from croniter import croniter

        if croniter.is_valid(" ".join(fields)):
            return Schedule(text.strip(), cron=" ".join(fields))
    raise InputError(
        f"{where}: {text!r} is not a schedule; write an interval (30m, 6h, 1d, 2w) or a "
        "5-field cron expression (minute hour day month weekday, e.g. '0 6 * * *' for 06:00 "
        "every day)"
    )


def refresh_state(
    schedule: Schedule | None,
    last: datetime | None,
    now: datetime,
    grace: timedelta = GRACE,
) -> tuple[datetime | None, str]:
    """(next refresh time, freshness) of one scheduled item at ``now``.

    Freshness: ``unscheduled`` (no schedule), ``never`` (scheduled, never evaluated: due at
    once), ``fresh`` (next refresh still to come), ``due`` (its time has come, within
    ``grace``) or ``missed`` (more than ``grace`` overdue).
    """
    if schedule is None:
        return None, "unscheduled"
    upcoming = schedule.next_after(last)
    if upcoming is None:
        return None, "never"
    if now < upcoming:
        return upcoming, "fresh"
    return upcoming, "due" if now < upcoming + grace else "missed"
