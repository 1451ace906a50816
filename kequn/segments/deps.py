"""What a checked rule depends on: which data can change its result, and when time alone can.

The real-time service re-evaluates a segment for a customer only when something the rule
reads has changed: an event of a type the rule counts, an order, an attribute. Rules with
windows relative to ``as_of`` ("last 30 days", ``days_since_last_order >= 60``, "then no
order within 1 day") also change as the clock moves; :class:`Dependencies` lists the
distances in time at which a row can cross such a boundary, so the service finds the few
customers whose result may have flipped between two ticks instead of recomputing everyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kequn.segments.check import COMPUTED, PREDICTED, RFM_FIELDS, SOURCE_TABLE
from kequn.segments.nodes import (
    Aggregate,
    And,
    Between,
    Compare,
    Field,
    InList,
    Last,
    Literal,
    Node,
)
from kequn.segments.timing import add_months

__all__ = ["ALL_TYPES", "Dependencies", "Horizon", "dependencies"]

ALL_TYPES = "*"
_UNIT = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_UNIT["week"] = timedelta(days=7)


@dataclass(frozen=True)
class Horizon:
    """Rows of ``table`` dated ``distance`` before ``as_of`` sit on a window's edge.

    ``months`` is used instead of ``distance`` for calendar-month windows.
    """

    table: str  # orders or events
    distance: timedelta = timedelta(0)
    months: int = 0

    def edge(self, moment: datetime) -> datetime:
        if self.months:
            return add_months(moment, -self.months)
        return moment - self.distance


@dataclass(frozen=True)
class Dependencies:
    """The inputs whose change can change a rule's result for a customer."""

    event_types: frozenset[str] = frozenset()  # ALL_TYPES when any event type counts
    orders: bool = False
    customers: bool = False
    scores: frozenset[str] = frozenset()  # stored score tables the rule reads
    horizons: frozenset[Horizon] = frozenset()
    day_offsets: frozenset[int] = field(default_factory=frozenset)  # days_since_* flips

    @property
    def time_dependent(self) -> bool:
        return bool(self.horizons or self.day_offsets)

    def reads_event(self, event_type: str) -> bool:
        return ALL_TYPES in self.event_types or event_type in self.event_types

    def __or__(self, other: Dependencies) -> Dependencies:
        return Dependencies(
            self.event_types | other.event_types,
            self.orders or other.orders,
            self.customers or other.customers,
            self.scores | other.scores,
            self.horizons | other.horizons,
            self.day_offsets | other.day_offsets,
        )


def _walk(node: object) -> Iterable[Node]:
    if isinstance(node, Node):
        yield node
        for value in vars(node).values():
            if isinstance(value, tuple):
                for item in value:
                    yield from _walk(item)
            else:
                yield from _walk(value)


def _event_types(where: Node | None) -> frozenset[str]:
    """The event types a ``where`` filter pins down (``type = 'x'`` / ``type in (…)``).

    Anything it cannot pin down (``or`` with other fields, ``not``, no filter) counts as
    every type: over-including only costs a re-evaluation, missing one would be a bug.
    """
    if where is None:
        return frozenset({ALL_TYPES})
    parts = where.items if isinstance(where, And) else (where,)
    for part in parts:
        if isinstance(part, Compare) and part.op == "=" and _is_type(part.left):
            return frozenset({str(part.right.value)})
        if isinstance(part, InList) and not part.negated and _is_type(part.left):
            return frozenset(str(v.value) for v in part.values)
    return frozenset({ALL_TYPES})


def _is_type(value: object) -> bool:
    return isinstance(value, Field) and value.path == ("type",)


def _horizons(agg: Aggregate) -> set[Horizon]:
    table = SOURCE_TABLE[agg.source]
    found: set[Horizon] = set()
    if isinstance(agg.window, Last):
        if agg.window.unit in ("month", "year"):
            months = agg.window.n * (12 if agg.window.unit == "year" else 1)
            found.add(Horizon(table, months=months))
        else:
            found.add(Horizon(table, agg.window.n * _UNIT[agg.window.unit]))
    if agg.then is not None:
        gap = agg.then.n * _UNIT[agg.then.unit]
        # "A then no B within N": true once N has passed after A with no B
        found.add(Horizon(table, gap))
        found.add(Horizon(SOURCE_TABLE[agg.then.source], gap))
    return found


def dependencies(rule: Node) -> Dependencies:
    """The dependencies of a *checked* rule (``in segment`` references already expanded)."""
    event_types: set[str] = set()
    orders = customers = False
    scores: set[str] = set()
    horizons: set[Horizon] = set()
    offsets: set[int] = set()
    aggregated: set[int] = set()  # ids of fields inside aggregates (row fields, not customer)
    for node in _walk(rule):
        if isinstance(node, Aggregate):
            for inner in _walk(node.where):
                aggregated.add(id(inner))
            if node.field is not None:
                aggregated.add(id(node.field))
            if node.then is not None:
                for inner in _walk(node.then.where):
                    aggregated.add(id(inner))
            sources = [node.source] + ([node.then.source] if node.then else [])
            wheres = [node.where] + ([node.then.where] if node.then else [])
            for source, where in zip(sources, wheres, strict=True):
                if SOURCE_TABLE[source] == "events":
                    event_types |= _event_types(where)
                else:
                    orders = True
            horizons |= _horizons(node)
    for node in _walk(rule):
        if isinstance(node, Field) and id(node) not in aggregated and len(node.path) >= 1:
            head = node.path[0]
            if head in COMPUTED:
                orders = True
            elif head in RFM_FIELDS:
                scores.add("rfm_scores")
            elif head in PREDICTED:
                scores.add(PREDICTED[head][0])
            else:
                customers = True
        if isinstance(node, Compare | InList) and _days_since(node.left):
            values = [node.right] if isinstance(node, Compare) else list(node.values)
            for lit in values:
                offsets |= _offsets(lit)
    for node in _walk(rule):
        if isinstance(node, Between) and _days_since(node.left):
            offsets |= _offsets(node.low) | _offsets(node.high)
    return Dependencies(
        frozenset(event_types),
        orders,
        customers,
        frozenset(scores),
        frozenset(horizons),
        frozenset(offsets),
    )


def _days_since(value: object) -> bool:
    return isinstance(value, Field) and len(value.path) == 1 and value.path[0] in COMPUTED


def _offsets(lit: Literal) -> set[int]:
    """Days-since values at which a comparison can flip: the constant and its neighbours."""
    if not isinstance(lit.value, int | float) or isinstance(lit.value, bool):
        return set()
    n = int(lit.value)
    return {n - 1, n, n + 1}
