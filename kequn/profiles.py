"""The unified customer profile (客户画像): attributes, identities, orders, events, and the
values merges and updates replaced (``history``, :mod:`kequn.ingest.merge`).

Reads go through Ibis and touch only the one customer's rows.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ibis

from kequn.errors import InputError
from kequn.workspace import Workspace


def find_customer(workspace: Workspace, key: str) -> str:
    """A customer id from a customer id, a source id, an e-mail or a phone number."""
    customers = workspace.table("customers")
    hit = customers.filter(customers.customer_id == key).customer_id.execute()
    if len(hit):
        return str(hit.iloc[0])
    ids = workspace.table("identities")
    digits = "".join(ch for ch in key if ch.isdigit())
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    cond = (ids.source_id == key) | (ids.email_norm == key.strip().lower())
    if len(digits) >= 7:
        cond = cond | (ids.phone_norm == digits)
    found = sorted(set(ids.filter(cond).customer_id.execute()))
    if len(found) == 1:
        return str(found[0])
    if len(found) > 1:
        raise InputError(f"{key!r} matches several customers: {', '.join(found)}")
    raise InputError(f"no customer {key!r} (looked for a customer id, source id, e-mail and phone)")


def profile(workspace: Workspace, key: str, *, recent: int = 10) -> dict[str, Any]:
    """Everything known about one customer, as plain JSON-ready data."""
    from kequn.ingest.merge import history

    customer_id = find_customer(workspace, key)
    customers = workspace.table("customers")
    row = _records(customers.filter(customers.customer_id == customer_id))[0]
    attributes = json.loads(row.pop("attributes") or "{}")
    ids = workspace.table("identities")
    identities = _records(
        ids.filter(ids.customer_id == customer_id)
        .select("source", "source_id", "matched_on", "email_norm", "phone_norm")
        .order_by(["source", "source_id"])
    )
    orders = workspace.table("orders").filter(ibis._.customer_id == customer_id)
    purchases = orders.filter(~orders.is_return)
    summary = _records(
        orders.aggregate(
            orders=ibis.coalesce((~orders.is_return).sum(), 0),
            returns=ibis.coalesce(orders.is_return.sum(), 0),
        )
    )[0]
    money = _records(
        purchases.aggregate(
            revenue=purchases.amount.sum(),
            avg_order_value=purchases.amount.mean(),
            first_order_at=purchases.ordered_at.min(),
            last_order_at=purchases.ordered_at.max(),
        )
    )[0]
    returned = orders.filter(orders.is_return).amount.sum().execute()
    summary.update(money)
    summary["returned_amount"] = _clean(-(returned or 0.0))
    recent_orders = _records(
        orders.order_by(ibis.desc("ordered_at"))
        .limit(recent)
        .select("order_id", "ordered_at", "amount", "status", "is_return", "lines")
    )
    events = workspace.table("events")
    recent_events = _records(
        events.filter(events.customer_id == customer_id)
        .order_by(ibis.desc("occurred_at"))
        .limit(recent)
        .select("occurred_at", "type", "properties")
    )
    event_counts = dict(
        events.filter(events.customer_id == customer_id)
        .group_by("type")
        .aggregate(n=ibis._.count())
        .execute()
        .itertuples(index=False, name=None)
    )
    return {
        "customer_id": customer_id,
        "attributes": {**{k: v for k, v in row.items() if k != "customer_id"}, **attributes},
        "identities": identities,
        "orders": summary,
        "recent_orders": recent_orders,
        "events": {k: int(v) for k, v in event_counts.items()},
        "recent_events": recent_events,
        "scores": _scores(workspace, customer_id),
        "segments": _segments(workspace, customer_id),
        # values the profile no longer shows: lost merges, replaced values (newest first)
        "history": history(workspace, customer_id),
    }


# the columns of each stored score table shown in a profile
_SCORE_COLUMNS = {
    "rfm_scores": ["scheme", "r_score", "f_score", "m_score", "rfm_segment"],
    "clv_scores": ["model", "horizon_days", "expected_purchases", "p_alive", "clv"],
    "churn_scores": ["model", "churn_risk"],
}


def _scores(workspace: Workspace, customer_id: str) -> dict[str, Any]:
    """The customer's latest stored score of each kind (RFM, CLV, churn), with its as_of."""
    out: dict[str, Any] = {}
    for table, columns in _SCORE_COLUMNS.items():
        t = workspace.table(table)
        mine = t.filter(t.customer_id == customer_id)
        newest = mine.order_by([ibis.desc("as_of"), ibis.desc("computed_at")]).limit(1)
        latest = _records(newest.select("as_of", *columns))
        if latest:
            out[table.removesuffix("_scores")] = latest[0]
    return out


def _segments(workspace: Workspace, customer_id: str) -> list[dict[str, Any]]:
    """Segments the customer is in now (per the latest evaluation), with the entry time."""
    m = workspace.table("memberships")
    return _records(
        m.filter((m.customer_id == customer_id) & m.exited_at.isnull())
        .select("segment", "entered_at")
        .order_by("segment")
    )


def _records(expr: ibis.Table) -> list[dict[str, Any]]:
    frame = expr.execute()
    return [{k: _clean(v) for k, v in rec.items()} for rec in frame.to_dict("records")]


def _clean(value: Any) -> Any:
    """pandas' NaN/NaT become None, numpy scalars plain Python, timestamps ISO text."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        try:
            return None if value != value else value.isoformat()  # NaT != NaT
        except (TypeError, ValueError):
            return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
