"""The tables the segment engine keeps: definitions, runs and membership intervals.

They are canonical tables defined in :mod:`kequn.store` (created with the workspace);
:func:`ensure_tables` also creates them in a store opened before they existed.

* ``segments`` — one row per segment definition (``tags`` is a JSON list as text, like
  ``customers.attributes``, so every backend can hold it).
* ``segment_runs`` — one row per segment × evaluation: size, entries and exits.
* ``memberships`` — one row per interval a customer spent in a segment; ``exited_at`` is
  NULL while the customer is still a member. ``entered_at`` / ``exited_at`` are the as_of
  instants of the evaluations that saw the change (a day as_of is recorded as 00:00).
"""

from __future__ import annotations

import ibis

from kequn.store import MEMBERSHIPS, SEGMENT_RUNS, SEGMENTS

__all__ = ["MEMBERSHIPS", "SEGMENTS", "SEGMENT_RUNS", "SEGMENT_TABLES", "ensure_tables"]

SEGMENT_TABLES: dict[str, ibis.Schema] = {
    "segments": SEGMENTS,
    "segment_runs": SEGMENT_RUNS,
    "memberships": MEMBERSHIPS,
}


def ensure_tables(con: ibis.BaseBackend) -> None:
    """Create the segment tables that do not exist yet."""
    existing = set(con.list_tables())
    for name, schema in SEGMENT_TABLES.items():
        if name not in existing:
            con.create_table(name, schema=schema)
