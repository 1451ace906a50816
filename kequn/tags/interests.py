"""Decayed interest tags (兴趣标签衰减): interest weight per customer × category, in SQL.

Each event of a weighted type (a view, a cart add, ...) that names a category, and each
purchased order line with a category, adds its weight to the customer's interest in that
category; interest fades by a factor α per period. Periods are whole days counted back from
the as_of day: an event ``age`` days before it lies in period ``k = age // period_days``
(``k = 0`` is the current period), and

    weight = Σ event_weight · α^k

which is the recursion ``w_t = α · w_{t−1} + (weights of the events in period t)`` run
forward to the current period. A category is an active interest once its weight reaches
the threshold N; the tag's value is the customer's top-k active categories, strongest first.

One query computes every customer; :func:`update_interests` runs the same query restricted
to a few customers, for the real-time path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from kequn.asof import AsOf
    from kequn.workspace import Workspace

__all__ = ["DEFAULTS", "InterestSpec", "interest_values", "interest_weights", "update_interests"]

DEFAULTS: dict[str, Any] = {
    "events": {"product_view": 1.0, "add_to_cart": 3.0},
    "orders": 5.0,
    "category": "category",
    "alpha": 0.85,
    "period_days": 7,
    "threshold": 7.0,
    "top_k": 3,
}
_KEYS = tuple(DEFAULTS)


def _number(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class InterestSpec:
    """Event weights, decay α per period, period length, threshold N and top-k.

    Unset fields take ``[tags.interest]`` in kequn.toml, then :data:`DEFAULTS`.
    """

    events: Mapping[str, float] | None = None
    orders: float | None = None
    category: str | None = None
    alpha: float | None = None
    period_days: int | None = None
    threshold: float | None = None
    top_k: int | None = None
    given: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, data: object, where: str) -> InterestSpec:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a table of settings, not {data!r}")
        unknown = [k for k in data if k not in _KEYS]
        if unknown:
            raise InputError(
                f"{where}: unknown setting {unknown[0]!r}; allowed: {', '.join(_KEYS)}"
            )
        values: dict[str, Any] = {}
        if "events" in data:
            events = data["events"]
            if not isinstance(events, Mapping) or not events:
                raise InputError(
                    f"{where}: events maps event types to weights, e.g. "
                    "{{ product_view = 1, add_to_cart = 3 }}, not {events!r}"
                )
            values["events"] = {str(k): _number(v, where, f"events.{k}") for k, v in events.items()}
        if "orders" in data:
            values["orders"] = _number(data["orders"], where, "orders")
        if "category" in data:
            if not isinstance(data["category"], str) or not data["category"]:
                raise InputError(
                    f"{where}: category names an event property, not {data['category']!r}"
                )
            values["category"] = data["category"]
        if "alpha" in data:
            alpha = _number(data["alpha"], where, "alpha")
            if not 0 < alpha <= 1:
                raise InputError(f"{where}: alpha = {alpha!r}; use a decay factor in (0, 1]")
            values["alpha"] = alpha
        for key in ("period_days", "top_k"):
            if key in data:
                n = data[key]
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise InputError(f"{where}: {key} = {n!r}; use a whole number ≥ 1")
                values[key] = n
        if "threshold" in data:
            values["threshold"] = _number(data["threshold"], where, "threshold")
        return cls(**values, given=tuple(values))

    def with_defaults(self, config: Mapping[str, Any] | None = None) -> InterestSpec:
        """Every field set: this spec's, else ``[tags.interest]``, else :data:`DEFAULTS`."""
        base = InterestSpec.parse(config or {}, "kequn.toml [tags.interest]")
        merged = {}
        for key in _KEYS:
            mine, theirs = getattr(self, key), getattr(base, key)
            merged[key] = (
                mine if mine is not None else theirs if theirs is not None else DEFAULTS[key]
            )
        return InterestSpec(**merged, given=self.given)

    def as_dict(self) -> dict[str, Any]:
        """The settings given (unset ones follow kequn.toml and the defaults)."""
        return {k: getattr(self, k) for k in _KEYS if getattr(self, k) is not None}


def _config(ws: Workspace) -> Mapping[str, Any]:
    tags = ws.config.raw.get("tags", {})
    return tags.get("interest", {}) if isinstance(tags, Mapping) else {}


def interest_weights(
    ws: Workspace,
    spec: InterestSpec,
    as_of: AsOf,
    customers: Sequence[str] | None = None,
) -> ir.Table:
    """``customer_id, category, weight, active, rank`` (rank 0 = strongest), one query.

    ``customers`` restricts the query to those customers (the real-time path).
    """
    import ibis

    s = spec.with_defaults(_config(ws))
    day = ibis.literal(as_of.day, type="date")
    end = ibis.literal(as_of.end, type="timestamp")
    ids = None
    if customers is not None:
        ids = ibis.memtable({"_cid": [str(c) for c in customers]}, schema={"_cid": "string"})

    def up_to(ts: ir.TimestampValue) -> ir.BooleanValue:
        return ts <= end if as_of.inclusive else ts < end

    def decayed(ts: ir.TimestampValue, weight: ir.NumericValue) -> ir.NumericValue:
        period = day.delta(ts.date(), unit="day") // s.period_days
        return weight * ibis.literal(s.alpha, type="float64") ** period

    parts = []
    assert s.events is not None
    if s.events:
        e = ws.table("events")
        e = e.filter(e.type.isin(list(s.events)), up_to(e.occurred_at))
        if ids is not None:
            e = e.semi_join(ids, e.customer_id == ids._cid)
        category = e.properties.cast("json")[s.category].str
        weight = e.type.cases(*[(k, float(v)) for k, v in s.events.items()], else_=0.0)
        e = e.select(
            customer_id=e.customer_id,
            category=category,
            contribution=decayed(e.occurred_at, weight),
        )
        parts.append(e)
    if s.orders:
        o = ws.table("orders")
        o = o.filter(~o.is_return.fill_null(False), up_to(o.ordered_at))
        if ids is not None:
            o = o.semi_join(ids, o.customer_id == ids._cid)
        lines = ws.table("order_lines")
        j = o.join(lines, o.order_id == lines.order_id)
        parts.append(
            j.select(
                customer_id=j.customer_id,
                category=j.category,
                contribution=decayed(j.ordered_at, ibis.literal(float(s.orders))),
            )
        )
    rows = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:], distinct=False)
    rows = rows.filter(rows.category.notnull() & (rows.category != ""))
    weights = rows.group_by(["customer_id", "category"]).aggregate(weight=rows.contribution.sum())
    rank = ibis.row_number().over(
        group_by=weights.customer_id, order_by=[ibis.desc(weights.weight), weights.category]
    )
    return weights.mutate(active=weights.weight >= float(s.threshold), rank=rank)


def interest_values(
    ws: Workspace,
    spec: InterestSpec,
    as_of: AsOf,
    customers: Sequence[str] | None = None,
) -> ir.Table:
    """The tag's values: the top-k active categories (strongest first, comma-separated) and
    the strongest weight, for customers with at least one active interest."""
    s = spec.with_defaults(_config(ws))
    w = interest_weights(ws, s, as_of, customers)
    top = w.filter(w.active & (w["rank"] < int(s.top_k)))
    return top.group_by("customer_id").aggregate(
        value=top.category.group_concat(sep=",", order_by=top["rank"]),
        number=top.weight.max(),
    )


def update_interests(
    ws: Workspace,
    tag: str,
    customers: Sequence[str],
    as_of: object = None,
    now: datetime | None = None,
) -> int:
    """Recompute one interest tag for a few customers (the real-time path); returns the rows
    written (customers whose categories or top weight changed). The same SQL as the full
    refresh."""
    from kequn.tags.values import refresh_tags

    return refresh_tags(ws, [tag], now=now, as_of=as_of, customers=customers)[tag]["written"]
