"""``as_of`` and time windows: where "the last 30 days" starts and ends.

Timestamps are stored as naive wall time in the workspace time zone, so every bound here is
a naive datetime in that zone, computed in Python and passed to the query as a literal.

* ``as_of`` a **day** D means the end of that day: everything dated D counts.
* ``as_of`` an **instant** T counts everything up to and including T.
* ``last N days`` is the N days up to ``as_of``: with a day D, the calendar days D-N+1 … D;
  with an instant T, from T minus N×24 hours (included) to T. So an order exactly 30
  calendar days before the as_of day is *outside* ``last 30 days`` — the same boundary as
  ``days_since_last_order < 30``.
* ``last N weeks`` is 7N days; ``last N months`` / ``years`` step back whole calendar months
  (the 31st steps back to the last day of a shorter month).
* ``between 'A' and 'B'`` is from the start of day A to the end of day B, capped at as_of;
  ``ever`` is everything up to as_of. Nothing after as_of is ever seen.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from kequn.asof import AsOf, resolve_as_of
from kequn.segments.nodes import Ever, Last, Window, WindowBetween

__all__ = ["AsOf", "Bounds", "resolve_as_of", "window_bounds"]


@dataclass(frozen=True)
class Bounds:
    start: datetime | None  # included; None: no lower bound
    end: datetime
    end_inclusive: bool


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months later (negative: earlier), clamping the day to the month's length."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def window_bounds(window: Window, as_of: AsOf) -> Bounds:
    """The [start, end] of a window at ``as_of``; dispatch fails loudly on an unknown window."""
    if isinstance(window, Ever):
        return Bounds(None, as_of.end, as_of.inclusive)
    if isinstance(window, Last):
        if window.unit == "day":
            start = as_of.end - timedelta(days=window.n)
        elif window.unit == "week":
            start = as_of.end - timedelta(days=7 * window.n)
        elif window.unit == "month":
            start = add_months(as_of.end, -window.n)
        elif window.unit == "year":
            start = add_months(as_of.end, -12 * window.n)
        else:
            raise TypeError(f"unknown window unit {window.unit!r}")
        return Bounds(start, as_of.end, as_of.inclusive)
    if isinstance(window, WindowBetween):
        start = datetime.combine(window.start, time())
        end = datetime.combine(window.end + timedelta(days=1), time())
        if as_of.end < end or (as_of.end == end and not as_of.inclusive):
            return Bounds(start, as_of.end, as_of.inclusive)
        return Bounds(start, end, False)
    raise TypeError(f"cannot compute the bounds of {type(window).__name__}")
