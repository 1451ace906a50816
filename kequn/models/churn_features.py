"""Churn features and labels at a cutoff day, computed in SQL through Ibis.

A churn model learns from what was known at a cutoff day ``D`` (everything dated up to and
including ``D``) and is told whether the customer bought again in the ``N`` days after it
(days ``D+1 … D+N``). Both sides are computed here, inside the engine, with one aggregation
over ``orders`` and one over ``events``: only one row per customer leaves the database, and
the same definitions run on DuckDB or any other Ibis backend.

Definitions (docs/churn.md has the long form):

* **purchases** are orders with ``is_return`` false or null; **returns** are orders with
  ``is_return`` set (their negative amounts never enter spend);
* the **population** at ``D`` is every customer with at least one purchase up to ``D``;
* "**last N days**" are the calendar days ``D-N+1 … D``, the same boundary as the segment
  rules' ``last N days``: an order dated exactly ``N`` days before ``D`` is outside;
* **churned** (the label) means no purchase in days ``D+1 … D+N``.

Event features count events by ``type`` for the most frequent types seen up to the cutoff
at training time; the fitted model remembers those types, so the features at prediction time
have the same columns whatever new types appear later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from kequn.errors import InputError

__all__ = [
    "EVENT_WINDOWS",
    "ORDER_WINDOWS",
    "DataSpan",
    "churn_features",
    "churn_labels",
    "data_span",
    "event_feature_name",
    "event_types",
    "feature_table",
    "label_table",
    "parse_day",
]

#: Windows (days up to the cutoff) for order and spend counts.
ORDER_WINDOWS = (30, 90, 180)
#: Windows for event counts.
EVENT_WINDOWS = (30, 90)

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class DataSpan:
    """The days the purchases in ``orders`` cover, for checking cutoffs against the data."""

    first_day: dt.date
    last_day: dt.date
    purchases: int


def parse_day(value: Any, name: str = "cutoff") -> dt.date:
    """A calendar day from a date or ``YYYY-MM-DD`` text.

    Cutoffs are whole days because the label counts whole days after them; a datetime with a
    time of day is refused rather than silently truncated.
    """
    if isinstance(value, dt.datetime):
        if value.time() != dt.time():
            raise InputError(
                f"{name} {value.isoformat()!r} has a time of day; give a day (YYYY-MM-DD): "
                "everything dated up to the end of that day counts"
            )
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InputError(f"{name} {value!r} is not a day; use YYYY-MM-DD")


def _end(cutoff: dt.date) -> dt.datetime:
    """The exclusive upper bound of day ``cutoff``: midnight after it."""
    return dt.datetime.combine(cutoff + _DAY, dt.time())


def _is_return(orders: ir.Table) -> ir.BooleanValue:
    return orders.is_return.fill_null(False)


def data_span(orders: ir.Table) -> DataSpan:
    """First and last purchase day; an ``InputError`` when there are no purchases."""
    purchases = orders.filter(~_is_return(orders), orders.customer_id.notnull())
    row = purchases.aggregate(
        n=purchases.count(),
        first=purchases.ordered_at.min(),
        last=purchases.ordered_at.max(),
    ).execute()
    n = int(row["n"].iloc[0])
    if n == 0:
        raise InputError(
            "the workspace has no purchases (orders with a customer_id that are not returns); "
            "import orders first with `kequn import orders FILE`"
        )
    return DataSpan(
        pd.Timestamp(row["first"].iloc[0]).date(), pd.Timestamp(row["last"].iloc[0]).date(), n
    )


def event_types(events: ir.Table, cutoff: Any, limit: int = 20) -> list[str]:
    """The ``limit`` most frequent event types up to ``cutoff`` (ties by name).

    The types become feature columns, so they are fixed when a model is trained; rare types
    beyond ``limit`` add columns without adding signal.
    """
    day = parse_day(cutoff)
    e = events.filter(
        events.occurred_at < _end(day), events.type.notnull(), events.customer_id.notnull()
    )
    counts = e.group_by("type").aggregate(n=e.count()).order_by([ibis.desc("n"), "type"])
    return [str(t) for t in counts.limit(limit).execute()["type"]]


def event_feature_name(event_type: str, days: int) -> str:
    """The feature column counting events of ``event_type`` in the last ``days`` days."""
    return f"events_{days}d:{event_type}"


def feature_table(
    orders: ir.Table, events: ir.Table, cutoff: Any, types: Sequence[str] = ()
) -> ir.Table:
    """The features of every customer with a purchase up to ``cutoff``, as an Ibis table.

    One row per customer, ``customer_id`` first. Counts are whole numbers (0 when nothing
    happened); quantities that do not exist for a customer (the gap between purchases of a
    one-time buyer, days since the last event of a customer without events) are null, which
    the gradient-boosting model reads as "missing" rather than as zero.
    """
    day = parse_day(cutoff)
    end = _end(day)
    o = orders.filter(orders.customer_id.notnull(), orders.ordered_at < end)
    ret = _is_return(o)
    buy = ~ret
    since = {n: o.ordered_at >= end - dt.timedelta(days=n) for n in ORDER_WINDOWS}
    amount = o.amount.fill_null(0.0)
    aggs: dict[str, ir.Value] = {
        "orders": o.count(where=buy),
        "purchase_days": o.ordered_at.date().nunique(where=buy),
        "first_at": o.ordered_at.min(where=buy),
        "last_at": o.ordered_at.max(where=buy),
        "monetary": amount.sum(where=buy),
    }
    for n in ORDER_WINDOWS:
        aggs[f"orders_{n}d"] = o.count(where=buy & since[n])
        aggs[f"spend_{n}d"] = amount.sum(where=buy & since[n])
    aggs["returns"] = o.count(where=ret)
    aggs["returns_90d"] = o.count(where=ret & since[90])
    aggs["return_amount"] = amount.abs().sum(where=ret)
    per = o.group_by("customer_id").aggregate(**aggs)
    per = per.filter(per.orders > 0)

    day_lit = ibis.literal(day, type="date")
    recency = day_lit.delta(per.last_at.date(), unit="day")
    span = per.last_at.date().delta(per.first_at.date(), unit="day")
    gap = ibis.ifelse(per.purchase_days > 1, span / (per.purchase_days - 1), ibis.null("float64"))
    base = per.select(
        "customer_id",
        recency_days=recency,
        tenure_days=day_lit.delta(per.first_at.date(), unit="day"),
        orders=per.orders,
        purchase_days=per.purchase_days,
        monetary=per.monetary.fill_null(0.0),
        avg_order_value=per.monetary.fill_null(0.0) / per.orders,
        avg_gap_days=gap,
        recency_gap_ratio=recency / gap,
        **{f"orders_{n}d": per[f"orders_{n}d"] for n in ORDER_WINDOWS},
        **{f"spend_{n}d": per[f"spend_{n}d"].fill_null(0.0) for n in ORDER_WINDOWS},
        returns=per.returns,
        returns_90d=per.returns_90d,
        return_amount=per.return_amount.fill_null(0.0),
    )

    e = events.filter(events.customer_id.notnull(), events.occurred_at < end)
    e_since = {n: e.occurred_at >= end - dt.timedelta(days=n) for n in EVENT_WINDOWS}
    e_aggs: dict[str, ir.Value] = {"last_event_at": e.occurred_at.max()}
    for n in EVENT_WINDOWS:
        e_aggs[f"events_{n}d"] = e.count(where=e_since[n])
    for t in types:
        for n in EVENT_WINDOWS:
            e_aggs[event_feature_name(t, n)] = e.count(where=e_since[n] & (e.type == t))
    ev = e.group_by("customer_id").aggregate(**e_aggs).rename(ev_customer_id="customer_id")
    joined = base.left_join(ev, base.customer_id == ev.ev_customer_id)
    counts = [name for name in e_aggs if name != "last_event_at"]
    out = joined.select(
        *base.columns,
        days_since_last_event=day_lit.delta(joined.last_event_at.date(), unit="day"),
        **{name: joined[name].fill_null(0) for name in counts},
    )
    return out.order_by("customer_id")


def churn_features(
    orders: ir.Table, events: ir.Table, cutoff: Any, types: Sequence[str] = ()
) -> pd.DataFrame:
    """:func:`feature_table` executed: a DataFrame indexed by ``customer_id``.

    Counts come back as int64, amounts and ratios as float64 with NaN where a value does not
    exist (never silently 0).
    """
    frame = feature_table(orders, events, cutoff, types).to_pyarrow().to_pandas()
    frame = frame.set_index("customer_id")
    if "days_since_last_event" in frame:
        frame["days_since_last_event"] = frame["days_since_last_event"].astype("float64")
    for name in ("avg_gap_days", "recency_gap_ratio"):
        frame[name] = frame[name].astype("float64")
    return frame


def label_table(orders: ir.Table, cutoff: Any, horizon: int) -> ir.Table:
    """``customer_id``, ``churned``: no purchase in the ``horizon`` days after ``cutoff``.

    Only customers with a purchase up to ``cutoff`` (the feature population) get a label.
    """
    day = parse_day(cutoff)
    end = _end(day)
    stop = end + dt.timedelta(days=int(horizon))
    p = orders.filter(orders.customer_id.notnull(), ~_is_return(orders), orders.ordered_at < stop)
    per = p.group_by("customer_id").aggregate(
        before=p.count(where=p.ordered_at < end), after=p.count(where=p.ordered_at >= end)
    )
    per = per.filter(per.before > 0)
    return per.select("customer_id", churned=per.after == 0).order_by("customer_id")


def churn_labels(orders: ir.Table, cutoff: Any, horizon: int) -> pd.Series:
    """:func:`label_table` executed: a boolean Series ``churned`` indexed by ``customer_id``."""
    frame = label_table(orders, cutoff, horizon).to_pyarrow().to_pandas()
    return frame.set_index("customer_id")["churned"].astype(bool)
