"""Live membership: the batch engine's compiled rules, run for the few customers that changed.

One semantics: a segment's rule is checked and compiled by :mod:`kequn.segments` exactly as
``kequn segment apply`` does, over the same tables restricted (by a semi-join) to the
customers in a small id table. Compiling 50 rules costs ~0.1 s and running them for a handful
of customers ~10 ms, so the SQL is compiled once per set of segments, with ``as_of`` as a
query parameter (windows are computed in SQL from it), and reused for every evaluation.

Which segments run for a customer depends on what changed (:mod:`kequn.segments.deps`): an
event of a type no rule counts re-evaluates nothing. Time alone moves windows: :meth:`due`
finds the customers with a row on a window's edge between two ticks.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from kequn.asof import resolve_as_of
from kequn.segments.compile import compile_rules
from kequn.segments.definitions import Segment
from kequn.segments.deps import Dependencies, dependencies
from kequn.segments.engine import _Context, stored_segments
from kequn.workspace import Workspace

__all__ = ["LiveSegments", "Transition"]

_IDS = "_kequn_live_ids"


@dataclass(frozen=True)
class Transition:
    """A customer entering or leaving a segment at an instant (naive, workspace time)."""

    segment: str
    customer_id: str
    kind: str  # enter or exit
    at: datetime


class LiveSegments:
    """The stored segments, checked and ready to evaluate for a set of customers."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        ws.store.duck.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_IDS} (customer_id VARCHAR)")
        self.reload()

    def reload(self) -> None:
        """Re-read the stored segments and the tables' shape (after a rule change)."""
        self.segments: list[Segment] = stored_segments(self.ws)
        self.context = _Context(self.ws, self.segments)
        self.checked = {s.name: self.context.check(s) for s in self.segments}
        self.deps: dict[str, Dependencies] = {n: dependencies(r) for n, r in self.checked.items()}
        ids = self.ws.table(_IDS)
        self.tables = {
            name: t.filter(t.customer_id.isin(ids.customer_id))
            for name, t in self.context.tables.items()
        }
        self._reasons: dict[tuple[str, str], frozenset[str]] = {}
        self._affected: dict[frozenset[tuple[str, str]], frozenset[str]] = {}
        self._sql.cache_clear()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def affected(self, reasons: Iterable[tuple[str, str]]) -> frozenset[str]:
        """The segments whose result can change for a customer with these changes."""
        key = frozenset(reasons)
        found = self._affected.get(key)
        if found is None:
            found = frozenset().union(*(self._affected_by(r) for r in key))
            self._affected[key] = found
        return found

    def _affected_by(self, reason: tuple[str, str]) -> frozenset[str]:
        hit = self._reasons.get(reason)
        if hit is None:
            kind, detail = reason
            hit = self._reasons[reason] = frozenset(
                name
                for name, deps in self.deps.items()
                if (kind == "event" and deps.reads_event(detail))
                or (kind == "order" and deps.orders)
                or (kind == "customer" and deps.customers)
                or kind == "all"
            )
        return hit

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one instance per service, cleared on reload
    def _sql(self, names: tuple[str, ...]) -> str:
        """The compiled query for these segments, with ``$kequn_as_of`` for the instant."""
        param = ibis.param("timestamp")
        # any instant: the query takes as_of as a parameter; this one only shapes it
        moment = resolve_as_of(datetime(2000, 1, 1), self.ws.config.timezone)
        rules = {f"_s{i}": self.checked[n] for i, n in enumerate(names)}
        expr = compile_rules(
            rules,
            self.tables,
            moment,
            self.context.catalog,
            rfm_scheme=self.context.scheme,
            as_of_param=param,
        )
        return self.ws.store.with_parameter(expr, param, "kequn_as_of")

    def evaluate(
        self, customers: Mapping[str, set[str]] | Iterable[str], at: datetime, names=None
    ) -> list[Transition]:
        """Entries and exits of these customers at ``at``; nothing is written.

        ``customers`` maps each customer to the segments to re-evaluate, or is a plain
        collection of ids (then ``names``, default every segment, applies to all).
        """
        if isinstance(customers, Mapping):
            wanted = {c: s for c, s in customers.items() if s}
        else:
            every = frozenset(self.names if names is None else names)
            wanted = {c: every for c in customers}
        if not wanted:
            return []
        segs = tuple(sorted(set().union(*set(map(frozenset, wanted.values()))) & set(self.checked)))
        if not segs:
            return []
        duck = self.ws.store.duck
        duck.execute(f"DELETE FROM {_IDS}")
        duck.register("_kequn_ids_in", pa.table({"customer_id": sorted(wanted)}))
        try:
            duck.execute(f"INSERT INTO {_IDS} SELECT customer_id FROM _kequn_ids_in")
        finally:
            duck.unregister("_kequn_ids_in")
        sql = self._sql(segs)
        params = {"kequn_as_of": at} if "$kequn_as_of" in sql else None
        flags = self.ws.store.query_arrow(sql, params)
        ids = flags.column("customer_id")
        now_in: set[tuple[str, str]] = set()
        for i, name in enumerate(segs):
            members = pc.filter(ids, flags.column(f"_s{i}")).to_pylist()
            now_in.update((name, cid) for cid in members)
        open_rows = self.ws.store.query_arrow(
            "SELECT m.segment, m.customer_id FROM memberships m "
            f"JOIN {_IDS} i USING (customer_id) WHERE m.exited_at IS NULL"
        ).to_pydict()
        was_in = set(zip(open_rows["segment"], open_rows["customer_id"], strict=True))
        # only the segments asked for, per customer (others were not re-evaluated)
        now_in = {(s, c) for s, c in now_in if s in wanted[c]}
        was_in = {(s, c) for s, c in was_in if s in wanted[c]}
        enters = [Transition(s, c, "enter", at) for s, c in sorted(now_in - was_in)]
        exits = [Transition(s, c, "exit", at) for s, c in sorted(was_in - now_in)]
        return enters + exits

    def record(self, transitions: list[Transition]) -> None:
        """Open and close membership intervals; call inside the caller's transaction."""
        if not transitions:
            return
        enters = [t for t in transitions if t.kind == "enter"]
        exits = [t for t in transitions if t.kind == "exit"]
        store = self.ws.store
        if exits:
            store.close_intervals(
                pa.table(
                    {
                        "segment": [t.segment for t in exits],
                        "customer_id": [t.customer_id for t in exits],
                        "exited_at": pa.array([t.at for t in exits], pa.timestamp("us")),
                    }
                )
            )
        if enters:
            store.append(
                "memberships",
                pa.table(
                    {
                        "segment": [t.segment for t in enters],
                        "customer_id": [t.customer_id for t in enters],
                        "entered_at": pa.array([t.at for t in enters], pa.timestamp("us")),
                        "exited_at": pa.array([None] * len(enters), pa.timestamp("us")),
                    }
                ),
            )

    # --- time ---------------------------------------------------------------------------------

    def due(self, since: datetime, until: datetime) -> dict[str, set[str]]:
        """Customers whose time-relative segments may have flipped in (since, until].

        A row dated exactly a window's length before ``as_of`` sits on the window's edge;
        every row whose edge passed in the interval is found with one filter per table.
        ``days_since_*`` fields change at midnight only, so they count when a day ends.
        """
        timed = {n: d for n, d in self.deps.items() if d.time_dependent}
        if not timed:
            return {}
        horizons = set().union(*(d.horizons for d in timed.values()))
        offsets = set().union(*(d.day_offsets for d in timed.values()))
        found: set[str] = set()
        for table, column in (("orders", "ordered_at"), ("events", "occurred_at")):
            t = self.ws.table(table)
            ts = t[column]
            conds = [ts.between(h.edge(since), h.edge(until)) for h in horizons if h.table == table]
            if table == "orders" and offsets and until.date() > since.date():
                for k in offsets:
                    first = since.date() + timedelta(days=1 - k)
                    last = until.date() - timedelta(days=k)
                    conds.append((ts >= _start(first)) & (ts < _start(last + timedelta(days=1))))
            if not conds:
                continue
            cond = functools.reduce(operator.or_, conds)
            ids = t.filter(cond).select("customer_id").distinct()
            found.update(ids.to_pyarrow()["customer_id"].to_pylist())
        names = set(timed)
        return {c: set(names) for c in found if c is not None}

    def everyone_in(self, names: Iterable[str]) -> dict[str, set[str]]:
        """All customers, for segments evaluated for the first time."""
        ids = self.ws.table("customers").customer_id.to_pyarrow().to_pylist()
        chosen = set(names)
        return {c: set(chosen) for c in ids}


def _start(day: date) -> datetime:
    return datetime.combine(day, time())
