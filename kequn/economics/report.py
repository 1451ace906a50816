"""Campaign economics (营销经济性): the strategy – effect – cost table.

For a period ``[start, end]`` (whole days; default: the span of the stored cost lines):

* **cost** — each cost line's labour + technology + material, prorated by the share of its
  own period's days inside ``[start, end]``;
* **acquired** — customers whose first purchase (not a return) falls in the period;
* **CAC** — cost ÷ acquired: per acquisition channel (``customers.channel`` against cost
  lines of that channel) and per segment (campaigns aimed at the segment against its members
  at as_of);
* **LTV** — the mean of the acquired customers' latest stored ``clv`` at or before as_of
  (``kequn clv predict``); **LTV/CAC**;
* **campaign funnel** — per trigger (a campaign is a trigger; its cost lines name it):
  deliveries created in the period that were ``sent`` (delivered), opened and clicked (events
  whose ``properties.delivery_id`` holds the delivery's id or idempotency key and whose type
  is one of the open / click types), and converted (a purchase by the customer within the
  attribution window after the send); **revenue** sums the attributed orders, each once per
  campaign; **ROI** = (revenue − cost) ÷ cost;
* **variant** — the same per experiment arm, the holdout's "touch" being when its delivery
  row was written, so arms compare like for like; cost is shared by sent messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError, closest

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from kequn.asof import AsOf
    from kequn.workspace import Workspace, WorkspaceLike

__all__ = ["BY", "DEFAULTS", "EconomicsReport", "economics"]

BY = ("channel", "segment", "campaign", "variant")
DEFAULTS: dict[str, Any] = {
    "attribution_days": 7,
    "open_events": ["message_open", "email_open", "open"],
    "click_events": ["message_click", "email_click", "click"],
}


@dataclass
class EconomicsReport:
    by: str
    start: date | None
    end: date | None
    as_of: datetime
    attribution_days: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "start": self.start,
            "end": self.end,
            "as_of": self.as_of,
            "attribution_days": self.attribution_days,
            "rows": self.rows,
            "notes": self.notes,
        }


def settings(ws: Workspace) -> dict[str, Any]:
    """``[economics]`` in kequn.toml over :data:`DEFAULTS`."""
    given = ws.config.raw.get("economics", {})
    if not isinstance(given, Mapping):
        raise InputError(f"kequn.toml: [economics] must be a table, not {given!r}")
    unknown = [k for k in given if k not in DEFAULTS]
    if unknown:
        raise InputError(
            f"kequn.toml [economics]: unknown setting {unknown[0]!r}"
            + closest(unknown[0], DEFAULTS)
        )
    out = {**DEFAULTS, **given}
    days = out["attribution_days"]
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InputError(f"kequn.toml [economics]: attribution_days = {days!r}; use whole days ≥ 1")
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _roi(revenue: float | None, cost: float | None) -> float | None:
    return None if revenue is None or not cost else (revenue - cost) / cost


# --- the pieces, each one query -----------------------------------------------------------------


def _costs(ws: Workspace, start: date, end: date, key: str) -> dict[str | None, dict[str, float]]:
    """Prorated costs per campaign or channel: labour, technology, material, cost."""
    import ibis

    c = ws.table("campaign_costs")
    lo = ibis.greatest(c.period_start, ibis.literal(start, type="date"))
    hi = ibis.least(c.period_end, ibis.literal(end, type="date"))
    inside = (hi.delta(lo, unit="day") + 1).clip(lower=0).cast("float64")
    share = inside / (c.period_end.delta(c.period_start, unit="day") + 1).cast("float64")
    c = c.mutate(_share=share).filter(lambda t: t._share > 0)
    grouped = c.group_by(_k=c[key]).aggregate(
        labour=(c.labour.fill_null(0) * c._share).sum(),
        technology=(c.technology.fill_null(0) * c._share).sum(),
        material=(c.material.fill_null(0) * c._share).sum(),
    )
    out = {}
    for r in grouped.to_pyarrow().to_pylist():
        parts = {k: float(r[k] or 0.0) for k in ("labour", "technology", "material")}
        out[r["_k"]] = {**parts, "cost": sum(parts.values())}
    return out


def _first_purchases(ws: Workspace, as_of: AsOf) -> ir.Table:
    """``customer_id, first_day`` of each customer's first purchase up to as_of."""
    import ibis

    o = ws.table("orders")
    end = ibis.literal(as_of.end, type="timestamp")
    o = o.filter(
        ~o.is_return.fill_null(False),
        o.ordered_at <= end if as_of.inclusive else o.ordered_at < end,
    )
    return o.group_by("customer_id").aggregate(first_day=o.ordered_at.min().date())


def _latest_clv(ws: Workspace, as_of: AsOf) -> ir.Table | None:
    import ibis

    if not ws.table("clv_scores").limit(1).count().execute():
        return None
    p = ws.table("clv_scores")
    end = ibis.literal(as_of.end, type="timestamp")
    p = p.filter(p.as_of <= end if as_of.inclusive else p.as_of < end)
    rank = ibis.row_number().over(
        group_by=p.customer_id, order_by=[ibis.desc(p.as_of), ibis.desc(p.computed_at)]
    )
    p = p.mutate(_r=rank).filter(lambda t: t._r == 0)
    return p.select(_ccid=p.customer_id, clv=p.clv)


def _acquired(
    ws: Workspace, groups: ir.Table, start: date, end: date, as_of: AsOf
) -> dict[str, dict[str, Any]]:
    """Per group (``customer_id, _g``): customers acquired in the period, their revenue in
    the period and their mean CLV."""
    import ibis

    first = _first_purchases(ws, as_of)
    j = groups.join(first, groups.customer_id == first.customer_id)
    j = j.filter(j.first_day.between(ibis.literal(start), ibis.literal(end)))
    j = j.select("_g", cid=groups.customer_id)
    o = ws.table("orders")
    o = o.filter(~o.is_return.fill_null(False))
    o = o.filter(o.ordered_at.date().between(ibis.literal(start), ibis.literal(end)))
    o = o.filter(o.ordered_at <= as_of.end if as_of.inclusive else o.ordered_at < as_of.end)
    revenue = o.group_by(_ocid=o.customer_id).aggregate(revenue=o.amount.sum())
    j = j.left_join(revenue, j.cid == revenue._ocid)
    clv = _latest_clv(ws, as_of)
    if clv is not None:
        j = j.left_join(clv, j.cid == clv._ccid)
    metrics: dict[str, Any] = {"acquired": j.count(), "revenue": j.revenue.fill_null(0).sum()}
    if clv is not None:
        metrics["ltv"] = j.clv.mean()
        metrics["ltv_known"] = j.clv.count()
    rows = j.group_by("_g").aggregate(**metrics).to_pyarrow().to_pylist()
    return {r["_g"]: r for r in rows}


def _deliveries(ws: Workspace, start: date, end: date, as_of: AsOf) -> ir.Table:
    import ibis

    d = ws.table("deliveries")
    lo = ibis.literal(datetime.combine(start, time()), type="timestamp")
    hi = ibis.literal(datetime.combine(end + timedelta(days=1), time()), type="timestamp")
    d = d.filter(d.created_at >= lo, d.created_at < hi)
    d = d.filter(d.created_at <= as_of.end if as_of.inclusive else d.created_at < as_of.end)
    return d.mutate(touch=ibis.coalesce(d.sent_at, d.created_at))


def _funnel(
    ws: Workspace, start: date, end: date, as_of: AsOf, conf: Mapping[str, Any], keys: Sequence[str]
) -> dict[tuple, dict[str, Any]]:
    """Per ``keys`` (trigger, or trigger and variant): delivered (sent), held out, opened,
    clicked, converted and attributed revenue."""
    import ibis

    d = _deliveries(ws, start, end, as_of)
    d = d.filter(d.status.isin(["sent", "holdout"]))
    counts = d.group_by(list(keys)).aggregate(
        delivered=(d.status == "sent").sum(), held_out=(d.status == "holdout").sum()
    )
    # opens and clicks: events naming the delivery (its id or its idempotency key)
    opens, clicks = list(conf["open_events"]), list(conf["click_events"])
    e = ws.table("events")
    e = e.filter(e.type.isin(opens + clicks))
    e = e.filter(e.occurred_at <= as_of.end if as_of.inclusive else e.occurred_at < as_of.end)
    e = e.select(_type=e.type, _ref=e.properties.cast("json")["delivery_id"].str)
    sent = d.filter(d.status == "sent")
    touched = sent.join(e, (e._ref == sent.delivery_id) | (e._ref == sent.idempotency_key))
    engaged = touched.group_by(list(keys)).aggregate(
        opened=touched.delivery_id.nunique(where=touched._type.isin(opens)),
        clicked=touched.delivery_id.nunique(where=touched._type.isin(clicks)),
    )
    # conversions: a purchase within the attribution window after the touch
    o = ws.table("orders")
    o = o.filter(~o.is_return.fill_null(False))
    o = o.filter(o.ordered_at <= as_of.end if as_of.inclusive else o.ordered_at < as_of.end)
    o = o.select(_ocid=o.customer_id, _oid=o.order_id, _at=o.ordered_at, _amount=o.amount)
    window = ibis.interval(days=int(conf["attribution_days"]))
    j = d.join(o, [d.customer_id == o._ocid, o._at > d.touch, o._at <= d.touch + window])
    converted = j.group_by(list(keys)).aggregate(
        converted=j.delivery_id.nunique(where=j.status == "sent"),
        converted_holdout=j.delivery_id.nunique(where=j.status == "holdout"),
    )
    orders = j.select(*keys, "_oid", "_amount").distinct()
    revenue = orders.group_by(list(keys)).aggregate(revenue=orders._amount.sum())
    out: dict[tuple, dict[str, Any]] = {}
    for table in (counts, engaged, converted, revenue):
        for r in table.to_pyarrow().to_pylist():
            out.setdefault(tuple(r[k] for k in keys), {}).update(
                {k: v for k, v in r.items() if k not in keys}
            )
    for row in out.values():
        for k in ("delivered", "held_out", "opened", "clicked", "converted", "converted_holdout"):
            row[k] = int(row.get(k) or 0)
        row["revenue"] = float(row.get("revenue") or 0.0)
    return out


def _triggers(ws: Workspace) -> dict[str, dict[str, Any]]:
    t = ws.table("triggers").select("name", "segment", "on", "channel")
    return {r["name"]: r for r in t.to_pyarrow().to_pylist()}


def _span(ws: Workspace) -> tuple[date | None, date | None]:
    c = ws.table("campaign_costs")
    r = c.aggregate(lo=c.period_start.min(), hi=c.period_end.max()).to_pyarrow().to_pylist()[0]
    return r["lo"], r["hi"]


# --- the report ---------------------------------------------------------------------------------


def economics(
    workspace: WorkspaceLike,
    by: str = "campaign",
    *,
    start: date | str | None = None,
    end: date | str | None = None,
    as_of: object = None,
) -> EconomicsReport:
    """The strategy – effect – cost table per ``channel``, ``segment``, ``campaign`` or
    ``variant`` for the period ``[start, end]`` (default: the stored cost lines' span)."""
    from kequn.asof import resolve_as_of
    from kequn.workspace import opened

    if by not in BY:
        raise InputError(f"--by {by!r}; use one of {', '.join(BY)}" + closest(by, BY))
    with opened(workspace) as ws:
        conf = settings(ws)
        at = resolve_as_of(as_of, ws.config.timezone)
        lo, hi = _span(ws)
        start_day = _day(start, "start") or lo
        end_day = _day(end, "end") or hi
        report = EconomicsReport(by, start_day, end_day, at.label, int(conf["attribution_days"]))
        if start_day is None or end_day is None:
            report.notes.append(
                "no cost lines yet and no period given; load costs with `kequn costs import FILE`"
            )
            return report
        if end_day < start_day:
            raise InputError(f"the period ends ({end_day}) before it starts ({start_day})")
        if _latest_clv(ws, at) is None:
            report.notes.append("no stored CLV: LTV and LTV/CAC need `kequn clv predict`")
        build = {"channel": _by_channel, "segment": _by_segment, "campaign": _by_campaign}
        build["variant"] = _by_variant
        report.rows = build[by](ws, start_day, end_day, at, conf)
        return report


def _day(value: date | str | None, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{name} {value!r} is not a date; write YYYY-MM-DD") from None


def _acquisition_row(key: str, strategy: str, cost: Mapping[str, float], acq: Mapping) -> dict:
    spend = cost.get("cost", 0.0)
    acquired = int(acq.get("acquired") or 0)
    cac = _ratio(spend, acquired) if spend else None
    ltv = acq.get("ltv")
    return {
        "key": key,
        "strategy": strategy,
        "acquired": acquired,
        "revenue": float(acq.get("revenue") or 0.0),
        "ltv": ltv,
        "labour": cost.get("labour", 0.0),
        "technology": cost.get("technology", 0.0),
        "material": cost.get("material", 0.0),
        "cost": spend,
        "cac": cac,
        "ltv_cac": _ratio(ltv, cac),
        "roi": _roi(float(acq.get("revenue") or 0.0), spend),
    }


def _by_channel(ws, start, end, at, conf) -> list[dict[str, Any]]:
    costs = _costs(ws, start, end, "channel")
    c = ws.table("customers")
    groups = c.select("customer_id", _g=c.channel)
    acquired = _acquired(ws, groups, start, end, at)
    keys = sorted({k for k in costs if k is not None} | {k for k in acquired if k is not None})
    return [
        _acquisition_row(k, f"acquisition via {k}", costs.get(k, {}), acquired.get(k, {}))
        for k in keys
    ]


def _campaign_row(key: str, strategy: str, cost: Mapping[str, float], f: Mapping) -> dict:
    spend = cost.get("cost", 0.0)
    delivered = f.get("delivered", 0)
    return {
        "key": key,
        "strategy": strategy,
        "delivered": delivered,
        "opened": f.get("opened", 0),
        "clicked": f.get("clicked", 0),
        "converted": f.get("converted", 0),
        "conversion_rate": _ratio(f.get("converted", 0), delivered),
        "revenue": f.get("revenue", 0.0),
        "labour": cost.get("labour", 0.0),
        "technology": cost.get("technology", 0.0),
        "material": cost.get("material", 0.0),
        "cost": spend,
        "roi": _roi(f.get("revenue", 0.0), spend),
    }


def _strategy(trigger: Mapping[str, Any] | None) -> str:
    if trigger is None:
        return "no trigger of this name"
    return f"{trigger['segment']} ({trigger['on']}) → {trigger['channel']}"


def _by_campaign(ws, start, end, at, conf) -> list[dict[str, Any]]:
    costs = _costs(ws, start, end, "campaign")
    funnel = {k[0]: v for k, v in _funnel(ws, start, end, at, conf, ["trigger"]).items()}
    triggers = _triggers(ws)
    keys = sorted({k for k in costs if k is not None} | set(funnel))
    return [
        _campaign_row(k, _strategy(triggers.get(k)), costs.get(k, {}), funnel.get(k, {}))
        for k in keys
    ]


def _by_variant(ws, start, end, at, conf) -> list[dict[str, Any]]:
    costs = _costs(ws, start, end, "campaign")
    funnel = _funnel(ws, start, end, at, conf, ["trigger", "variant"])
    triggers = _triggers(ws)
    sent: dict[str, int] = {}
    for (trig, _), f in funnel.items():
        sent[trig] = sent.get(trig, 0) + f["delivered"]
    rows = []
    for (trig, variant), f in sorted(funnel.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        total = costs.get(trig, {})
        share = f["delivered"] / sent[trig] if sent.get(trig) else 0.0
        cost = {k: v * share for k, v in total.items()}
        row = _campaign_row(f"{trig} / {variant or '—'}", _strategy(triggers.get(trig)), cost, f)
        row["variant"] = variant
        row["held_out"] = f["held_out"]
        row["converted_holdout"] = f["converted_holdout"]
        if f["held_out"]:
            row["conversion_rate"] = _ratio(f["converted_holdout"], f["held_out"])
            row["roi"] = None
        rows.append(row)
    return rows


def _by_segment(ws, start, end, at, conf) -> list[dict[str, Any]]:
    import ibis

    costs = _costs(ws, start, end, "campaign")
    funnel = {k[0]: v for k, v in _funnel(ws, start, end, at, conf, ["trigger"]).items()}
    triggers = _triggers(ws)
    m = ws.table("memberships")
    end_ts = ibis.literal(at.end, type="timestamp")
    inside = m.entered_at <= end_ts if at.inclusive else m.entered_at < end_ts
    still = m.exited_at.isnull() | (m.exited_at > end_ts)
    members = m.filter(inside & still).select("customer_id", _g=m.segment)
    acquired = _acquired(ws, members, start, end, at)
    segments = sorted({t["segment"] for t in triggers.values()} | set(acquired))
    rows = []
    for seg in segments:
        aimed = sorted(n for n, t in triggers.items() if t["segment"] == seg)
        cost: dict[str, float] = {"labour": 0.0, "technology": 0.0, "material": 0.0, "cost": 0.0}
        revenue, converted, delivered = 0.0, 0, 0
        for name in aimed:
            for k, v in costs.get(name, {}).items():
                cost[k] += v
            f = funnel.get(name, {})
            revenue += f.get("revenue", 0.0)
            converted += f.get("converted", 0)
            delivered += f.get("delivered", 0)
        row = _acquisition_row(
            seg, "campaigns: " + (", ".join(aimed) or "none"), cost, acquired.get(seg, {})
        )
        row.update(
            delivered=delivered,
            converted=converted,
            revenue=revenue,
            roi=_roi(revenue, cost["cost"]),
        )
        rows.append(row)
    return rows
