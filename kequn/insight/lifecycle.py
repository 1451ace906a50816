"""Lifecycle stages (生命周期): a status stage and a growth-funnel stage per customer.

Both are computed at ``as_of`` in one Ibis query (no Python loop over customers), from
``customers``, ``orders`` (purchases: ``is_return`` false, up to ``as_of``) and ``events``
(up to ``as_of``). "Within the last N days" means what the segment language's
``last N days`` means: at or after ``as_of`` minus N days (a day ``as_of`` counts from its
end, so the last 90 days of 2024-06-30 are 2024-04-02 … 2024-06-30).

**Status stage** (``status_stage``), the first rule that holds:

==============  ==========  ===============================================================
value           中文         rule
==============  ==========  ===============================================================
``prospect``    潜在客户     no purchase up to ``as_of``
``new``         新客         first purchase within the last ``new_days`` days
``reactivated`` 回流         a purchase within the last ``active_days`` days that came more
                            than ``lapsed_days`` days after the purchase before it
``active``      活跃         last purchase within the last ``active_days`` days
``at_risk``     流失预警     last purchase within the last ``at_risk_days`` days
``lapsed``      沉睡         last purchase within the last ``lapsed_days`` days
``churned``     已流失       no purchase for longer than ``lapsed_days`` days
==============  ==========  ===============================================================

**Funnel stage** (``funnel_stage``), the furthest stage reached, highest first:

==================  ======  ==========================================================
``referral``        裂变     has an event whose type is in ``referral_events``
``retention``       留存     2+ purchases and the last within ``active_days`` days
``activation``      激活     a purchase (one, or 2+ without a recent one)
``nurture``         培育     events but no purchase
``acquisition``     引流     known (a customer row), no events and no purchase
==================  ======  ==========================================================

Rules are read from ``[lifecycle]`` in ``kequn.toml`` (``workspace.config.raw``); the
defaults are :data:`DEFAULTS`. Runs are stored in ``lifecycle_stages`` (one run per
``as_of``; storing the same ``as_of`` again replaces it), so :func:`lifecycle_summary` can
report movement between runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from kequn.asof import AsOf, resolve_as_of
from kequn.errors import InputError
from kequn.store import LIFECYCLE_STAGES
from kequn.workspace import Workspace

__all__ = [
    "DEFAULTS",
    "FUNNEL_LABELS",
    "FUNNEL_STAGES",
    "LIFECYCLE_STAGES",
    "STATUS_LABELS",
    "STATUS_STAGES",
    "LifecycleRules",
    "LifecycleSummary",
    "lifecycle",
    "lifecycle_rules",
    "lifecycle_summary",
    "lifecycle_table",
    "save_lifecycle",
    "stored_runs",
]

TABLE = "lifecycle_stages"
DEFAULTS: dict[str, Any] = {
    "new_days": 30,
    "active_days": 90,
    "at_risk_days": 180,
    "lapsed_days": 365,
    "referral_events": ["referral"],
}

# In the order a customer usually passes through them (and the order reports use).
STATUS_STAGES = ("prospect", "new", "active", "reactivated", "at_risk", "lapsed", "churned")
STATUS_LABELS: dict[str, tuple[str, str]] = {
    "prospect": ("prospect", "潜在客户"),
    "new": ("new", "新客"),
    "active": ("active", "活跃"),
    "reactivated": ("reactivated", "回流"),
    "at_risk": ("at risk", "流失预警"),
    "lapsed": ("lapsed", "沉睡"),
    "churned": ("churned", "已流失"),
}
FUNNEL_STAGES = ("acquisition", "nurture", "activation", "retention", "referral")
FUNNEL_LABELS: dict[str, tuple[str, str]] = {
    "acquisition": ("acquisition", "引流"),
    "nurture": ("nurture", "培育"),
    "activation": ("activation", "激活"),
    "retention": ("retention", "留存"),
    "referral": ("referral", "裂变"),
}


@dataclass(frozen=True)
class LifecycleRules:
    """The thresholds, in days, and the event types that count as a referral."""

    new_days: int = DEFAULTS["new_days"]
    active_days: int = DEFAULTS["active_days"]
    at_risk_days: int = DEFAULTS["at_risk_days"]
    lapsed_days: int = DEFAULTS["lapsed_days"]
    referral_events: tuple[str, ...] = tuple(DEFAULTS["referral_events"])

    def __post_init__(self) -> None:
        days = ("new_days", "active_days", "at_risk_days", "lapsed_days")
        for name in days:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"[lifecycle] {name} = {value!r}: use a whole number of days ≥ 1")
        if not self.new_days <= self.active_days < self.at_risk_days < self.lapsed_days:
            raise InputError(
                "[lifecycle]: use new_days ≤ active_days < at_risk_days < lapsed_days "
                f"(got {self.new_days}, {self.active_days}, {self.at_risk_days}, "
                f"{self.lapsed_days})"
            )
        if not self.referral_events or not all(
            isinstance(t, str) and t for t in self.referral_events
        ):
            raise InputError("[lifecycle] referral_events: use a list of event types")


def lifecycle_rules(ws: Workspace, overrides: Mapping[str, Any] | None = None) -> LifecycleRules:
    """The rules from ``[lifecycle]`` in the workspace config, then ``overrides``."""
    raw = ws.config.raw.get("lifecycle", {}) or {}
    if not isinstance(raw, Mapping):
        raise InputError("[lifecycle] in kequn.toml must be a table of settings")
    values = {**DEFAULTS, **raw, **(overrides or {})}
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise InputError(f"[lifecycle] unknown setting {unknown[0]!r}; use {', '.join(DEFAULTS)}")
    events = values["referral_events"]
    values["referral_events"] = (events,) if isinstance(events, str) else tuple(events)
    return LifecycleRules(**values)


def _upto(ts: ir.TimestampValue, moment: AsOf) -> ir.BooleanValue:
    return ts <= moment.end if moment.inclusive else ts < moment.end


def _since(moment: AsOf, days: int) -> ir.TimestampScalar:
    """The start of "the last ``days`` days" at ``moment`` (as the segment language has it)."""
    return ibis.literal(moment.end - timedelta(days=days), type="timestamp")


def lifecycle_table(
    ws: Workspace, as_of: object = None, rules: LifecycleRules | None = None
) -> ir.Table:
    """One row per customer known at ``as_of`` with both stages and the facts behind them.

    Lazy; columns: ``customer_id``, ``status_stage``, ``funnel_stage``, ``purchases``,
    ``first_purchase_at``, ``last_purchase_at``, ``events``, ``referrals``.
    """
    rules = rules or lifecycle_rules(ws)
    moment = resolve_as_of(as_of, ws.config.timezone)
    active_start = _since(moment, rules.active_days)

    o = ws.table("orders")
    o = o.filter(_upto(o.ordered_at, moment) & ~o.is_return.fill_null(False))
    o = o.filter(o.customer_id.notnull() & o.ordered_at.notnull())
    prev = o.ordered_at.lag().over(
        ibis.window(group_by=o.customer_id, order_by=[o.ordered_at, o.order_id])
    )
    o = o.mutate(_prev=prev)
    came_back = (o.ordered_at >= active_start) & (
        o._prev < o.ordered_at - ibis.interval(days=rules.lapsed_days)
    )
    og = o.group_by(_ok=o.customer_id).aggregate(
        _n=o.count(),
        _first=o.ordered_at.min(),
        _last=o.ordered_at.max(),
        _back=o.count(where=came_back),
    )

    e = ws.table("events")
    e = e.filter(_upto(e.occurred_at, moment) & e.customer_id.notnull())
    eg = e.group_by(_ek=e.customer_id).aggregate(
        _events=e.count(), _referrals=e.count(where=e.type.isin(list(rules.referral_events)))
    )

    c = ws.table("customers")
    c = c.select("customer_id", "created_at").filter(c.customer_id.notnull())
    j = c.left_join(og, c.customer_id == og._ok).left_join(eg, c.customer_id == eg._ek)
    n = j._n.fill_null(0)
    events = j._events.fill_null(0)
    referrals = j._referrals.fill_null(0)
    last = j._last
    status = ibis.cases(
        (n == 0, "prospect"),
        (j._first >= _since(moment, rules.new_days), "new"),
        (j._back.fill_null(0) > 0, "reactivated"),
        (last >= active_start, "active"),
        (last >= _since(moment, rules.at_risk_days), "at_risk"),
        (last >= _since(moment, rules.lapsed_days), "lapsed"),
        else_="churned",
    )
    funnel = ibis.cases(
        (referrals > 0, "referral"),
        ((n >= 2) & (last >= active_start), "retention"),
        (n >= 1, "activation"),
        (events > 0, "nurture"),
        else_="acquisition",
    )
    # Known at as_of: created by then (or undated), or already active by then.
    known = j.created_at.isnull() | _upto(j.created_at, moment) | (n > 0) | (events > 0)
    return j.filter(known).select(
        customer_id=j.customer_id,
        status_stage=status,
        funnel_stage=funnel,
        purchases=n.cast("int64"),
        first_purchase_at=j._first,
        last_purchase_at=last,
        events=events.cast("int64"),
        referrals=referrals.cast("int64"),
    )


def lifecycle(
    ws: Workspace, as_of: object = None, rules: LifecycleRules | None = None
) -> pd.DataFrame:
    """Both stages per customer at ``as_of`` as a DataFrame, ordered by ``customer_id``."""
    return lifecycle_table(ws, as_of, rules).order_by("customer_id").to_pandas()


def save_lifecycle(ws: Workspace, as_of: object = None, rules: LifecycleRules | None = None) -> int:
    """Store the stages at ``as_of`` in ``lifecycle_stages`` (replacing a run at the same
    ``as_of``); returns the number of customers stored. A day is recorded as its 00:00."""
    moment = resolve_as_of(as_of, ws.config.timezone)
    computed_at = resolve_as_of(None, ws.config.timezone).end.replace(microsecond=0)
    t = lifecycle_table(ws, moment, rules)
    rows = t.select(
        customer_id=t.customer_id.cast("string"),
        as_of=ibis.literal(moment.label, type="timestamp"),
        status_stage=t.status_stage.cast("string"),
        funnel_stage=t.funnel_stage.cast("string"),
        computed_at=ibis.literal(computed_at, type="timestamp"),
    )
    with ws.store.transaction():
        ws.store.delete(TABLE, as_of=moment.label)
        ws.con.insert(TABLE, rows)
    stored = ws.table(TABLE)
    return int(stored.filter(stored.as_of == moment.label).count().execute())


def stored_runs(ws: Workspace) -> list[datetime]:
    """The ``as_of`` of every stored run, oldest first."""
    t = ws.table(TABLE)
    return list(t.select("as_of").distinct().order_by("as_of").as_of.to_pyarrow().to_pylist())


@dataclass(frozen=True)
class LifecycleSummary:
    """Counts per stage, funnel conversion and movement since a previous stored run."""

    as_of: datetime
    previous: datetime | None
    customers: int
    status_counts: dict[str, int]
    funnel_counts: dict[str, int]
    conversion: list[dict[str, Any]]  # from, to, reached_from, reached_to, rate
    status_movement: list[dict[str, Any]] = field(default_factory=list)  # from, to, customers
    funnel_movement: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def stages(counts: dict[str, int], labels: dict[str, tuple[str, str]]) -> list[dict]:
            return [
                {"stage": s, "label_en": labels[s][0], "label_zh": labels[s][1], "customers": n}
                for s, n in counts.items()
            ]

        return {
            "as_of": self.as_of,
            "previous": self.previous,
            "customers": self.customers,
            "status": stages(self.status_counts, STATUS_LABELS),
            "funnel": stages(self.funnel_counts, FUNNEL_LABELS),
            "conversion": self.conversion,
            "movement": {"status": self.status_movement, "funnel": self.funnel_movement},
        }


def _counts(t: ir.Table, column: str, order: tuple[str, ...]) -> dict[str, int]:
    g = t.group_by(stage=t[column]).aggregate(n=t.count()).to_pyarrow().to_pylist()
    found = {r["stage"]: int(r["n"]) for r in g}
    return {s: found.get(s, 0) for s in order}


def _conversion(funnel: dict[str, int]) -> list[dict[str, Any]]:
    """Reached stage k = customers at stage k or further; conversion k → k+1 = ratio."""
    reached = {}
    total = 0
    for s in reversed(FUNNEL_STAGES):
        total += funnel[s]
        reached[s] = total
    out = []
    for a, b in zip(FUNNEL_STAGES, FUNNEL_STAGES[1:], strict=False):
        rate = reached[b] / reached[a] if reached[a] else None
        out.append(
            {"from": a, "to": b, "reached_from": reached[a], "reached_to": reached[b], "rate": rate}
        )
    return out


def _movement(
    current: ir.Table, before: ir.Table, column: str, order: tuple[str, ...]
) -> list[dict[str, Any]]:
    """(previous stage, current stage, customers) for customers whose stage changed;
    ``None`` as previous stage: not in the previous run; as current: no longer there."""
    cur = current.select(_cid=current.customer_id, _to=current[column])
    prev = before.select(_pid=before.customer_id, _from=before[column])
    j = cur.outer_join(prev, cur._cid == prev._pid)
    j = j.filter(j._from.isnull() | j._to.isnull() | (j._from != j._to))
    rows = j.group_by(["_from", "_to"]).aggregate(n=j.count()).to_pyarrow().to_pylist()
    rank = {s: i for i, s in enumerate(order)}

    def key(r: dict) -> tuple:
        return (-1 if r["_from"] is None else rank.get(r["_from"], 99),
                -1 if r["_to"] is None else rank.get(r["_to"], 99))  # fmt: skip

    return [
        {"from": r["_from"], "to": r["_to"], "customers": int(r["n"])}
        for r in sorted(rows, key=key)
    ]


def lifecycle_summary(
    ws: Workspace,
    as_of: object = None,
    previous: object = None,
    rules: LifecycleRules | None = None,
) -> LifecycleSummary:
    """Counts per stage at ``as_of``, funnel conversion, and movement since ``previous``.

    ``previous`` is the ``as_of`` of a stored run (a day or an instant); by default the
    latest stored run before ``as_of``. Without one, movement is empty.
    """
    moment = resolve_as_of(as_of, ws.config.timezone)
    current = lifecycle_table(ws, moment, rules)
    status = _counts(current, "status_stage", STATUS_STAGES)
    funnel = _counts(current, "funnel_stage", FUNNEL_STAGES)
    stored = ws.table(TABLE)
    if previous is None:
        earlier = stored.filter(stored.as_of < moment.label).as_of.max().execute()
        prev_label = None if earlier is None or pd.isna(earlier) else pd.Timestamp(earlier)
    else:
        prev_label = resolve_as_of(previous, ws.config.timezone).label
        if not stored.filter(stored.as_of == prev_label).count().execute():
            runs = ", ".join(f"{r:%Y-%m-%d %H:%M}" for r in stored_runs(ws)) or "none yet"
            raise InputError(
                f"no stored lifecycle run at {prev_label:%Y-%m-%d %H:%M}; stored runs: {runs}"
            )
    status_moves: list[dict[str, Any]] = []
    funnel_moves: list[dict[str, Any]] = []
    if prev_label is not None:
        prev_label = pd.Timestamp(prev_label).to_pydatetime()
        before = stored.filter(stored.as_of == prev_label)
        status_moves = _movement(current, before, "status_stage", STATUS_STAGES)
        funnel_moves = _movement(current, before, "funnel_stage", FUNNEL_STAGES)
    return LifecycleSummary(
        as_of=moment.label,
        previous=prev_label,
        customers=sum(status.values()),
        status_counts=status,
        funnel_counts=funnel,
        conversion=_conversion(funnel),
        status_movement=status_moves,
        funnel_movement=funnel_moves,
    )
