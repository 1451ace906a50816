"""``as_of``: the instant every computation is made at (architecture principle 4).

One definition for RFM, segments, models and insight, so "as of 2024-06-30" means the same
everywhere: a **day** D is the end of that day (everything dated D counts); an **instant** T
counts everything up to and including T; ``None`` is now in the workspace time zone. Aware
datetimes are converted to that zone, since timestamps are stored as its wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from kequn.config import zone_info
from kequn.errors import InputError

__all__ = ["AsOf", "resolve_as_of"]


@dataclass(frozen=True)
class AsOf:
    """The evaluation instant: its day, the end bound and whether the bound is included."""

    day: date
    end: datetime
    inclusive: bool

    @property
    def label(self) -> datetime:
        """The instant recorded in history: a day D is recorded as D 00:00."""
        return datetime.combine(self.day, time()) if not self.inclusive else self.end


def resolve_as_of(value: object, timezone: str) -> AsOf:
    """A date, a datetime (aware ones are converted to the workspace zone), ISO text or None.

    None means now in the workspace time zone; pass as_of explicitly for reproducible results.
    """
    if isinstance(value, AsOf):
        return value
    if value is None:
        now = datetime.now(zone_info(timezone)).replace(tzinfo=None)
        return AsOf(now.date(), now, True)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise InputError(
                    f"as_of {text!r} is not a date or time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
                ) from None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(zone_info(timezone)).replace(tzinfo=None)
        return AsOf(value.date(), value, True)
    if isinstance(value, date):
        return AsOf(value, datetime.combine(value + timedelta(days=1), time()), False)
    raise InputError(f"as_of {value!r} is not a date or time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM")
