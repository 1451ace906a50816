"""Per-customer features for clustering, each one the value of a segment-language expression.

Every feature is defined twice on purpose — as an Ibis column computed here in one query,
and as the rule-language text that yields the same value (``count(orders, ever)``,
``days_since_last_order``, ``count(events where type = 'x', last 90 days)``, ``clv`` …). The
second form is what lets :mod:`kequn.insight.explain` turn a decision tree's thresholds into
a rule that ``kequn.segments.evaluate`` runs. The Ibis columns follow the compiler's
definitions exactly (purchases exclude returns; windows from :mod:`kequn.segments.timing`;
the latest stored prediction at or before ``as_of``), and the tests check each pair.

Missing values (no purchase, no prediction) must keep the rule's meaning after filling:
a comparison with a missing value is false in the rule language, so

* ``missing="high"`` (``days_since_last_order``): filled above every observed value, and
  ``x > t`` is written ``not x <= t`` (true for the missing ones, as the fill says);
* ``missing="low"`` (averages, predictions): filled at or below every observed value and 0,
  and ``x <= t`` is written ``not x > t``;
* ``missing="never"``: counts and sums are 0 without rows, never missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np

from kequn.errors import InputError
from kequn.segments.nodes import Last
from kequn.segments.timing import AsOf, resolve_as_of, window_bounds
from kequn.workspace import Workspace

__all__ = [
    "EVENT_WINDOW_DAYS",
    "FEATURE_GROUPS",
    "Feature",
    "FeatureMatrix",
    "feature_matrix",
    "feature_table",
    "parse_groups",
]

FEATURE_GROUPS = ("rfm", "clv", "events")
EVENT_WINDOW_DAYS = 90
MAX_EVENT_TYPES = 6  # the most frequent types in the window; more makes trees unreadable
_PREDICTED = {"clv": "clv_scores", "p_alive": "clv_scores", "churn_risk": "churn_scores"}


@dataclass(frozen=True)
class Feature:
    """One clustering feature: its column, the rule expression with the same value, units."""

    name: str
    expr: str  # segment-language expression with the same value for every customer
    missing: str  # "never", "high" or "low": how a missing value is filled (see module doc)
    integer: bool  # whole numbers: thresholds are written as whole numbers
    log: bool  # skewed: log1p before standardising
    label_en: str
    label_zh: str
    group: str

    def condition(self, op: str, threshold: float) -> str:
        """``expr <= t`` or ``expr > t`` as rule text, keeping the fill's meaning for missing."""
        if op not in ("<=", ">"):
            raise ValueError(f"op {op!r}: use '<=' or '>'")
        value = _number(math.floor(threshold) if self.integer else threshold)
        if self.missing == "high" and op == ">":
            return f"not {self.expr} <= {value}"
        if self.missing == "low" and op == "<=":
            return f"not {self.expr} > {value}"
        if op == "<=" and value == "0" and self.expr.startswith("count("):
            return f"{self.expr} = 0"  # counts are never negative
        return f"{self.expr} {op} {value}"


def _number(value: float) -> str:
    """A threshold as rule text: whole numbers without a point, others to 2 decimals."""
    if float(value).is_integer():
        return str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _rfm_features() -> list[Feature]:
    return [
        Feature(
            "recency_days",
            "days_since_last_order",
            "high",
            True,
            True,
            "days since last order",
            "距上次购买天数",
            "rfm",
        ),
        Feature("frequency", "count(orders, ever)", "never", True, True, "orders", "订单数", "rfm"),
        Feature(
            "monetary",
            "sum(orders.amount, ever)",
            "never",
            False,
            True,
            "total spend",
            "累计消费",
            "rfm",
        ),
        Feature(
            "avg_order_value",
            "avg(orders.amount, ever)",
            "low",
            False,
            True,
            "average order value",
            "客单价",
            "rfm",
        ),
        Feature(
            "tenure_days",
            "days_since_first_order",
            "low",
            True,
            False,
            "days since first order",
            "首购至今天数",
            "rfm",
        ),
    ]


def _predicted_features(available: set[str]) -> list[Feature]:
    specs = [
        ("clv", "CLV", "客户终身价值", True),
        ("p_alive", "probability alive", "存活概率", False),
        ("churn_risk", "churn risk", "流失风险", False),
    ]
    return [
        Feature(name, name, "low", False, log, en, zh, "clv")
        for name, en, zh, log in specs
        if _PREDICTED[name] in available
    ]


def _quote(text: str) -> str | None:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return None  # cannot be written as a rule literal; left out


def _event_features(types: Sequence[str]) -> list[Feature]:
    out = []
    for i, kind in enumerate(types):
        literal = _quote(kind)
        if literal is None:
            continue
        slug = kind if kind.isascii() and kind.replace("_", "").isalnum() else f"type{i + 1}"
        out.append(
            Feature(
                f"events_{slug}_{EVENT_WINDOW_DAYS}d",
                f"count(events where type = {literal}, last {EVENT_WINDOW_DAYS} days)",
                "never",
                True,
                True,
                f"'{kind}' events in {EVENT_WINDOW_DAYS} days",
                f"近{EVENT_WINDOW_DAYS}天'{kind}'事件数",
                "events",
            )
        )
    return out


def parse_groups(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"rfm,clv"`` or a list → validated group names (default: all of them)."""
    if value is None:
        return FEATURE_GROUPS
    items = value.split(",") if isinstance(value, str) else list(value)
    groups = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not groups:
        raise InputError(f"features {value!r}: name at least one of {', '.join(FEATURE_GROUPS)}")
    for g in groups:
        if g not in FEATURE_GROUPS:
            raise InputError(f"feature group {g!r}: use {', '.join(FEATURE_GROUPS)}")
    return groups


def _non_empty(ws: Workspace, name: str) -> bool:
    return name in ws.con.list_tables() and bool(ws.table(name).limit(1).count().execute())


def _upto(ts: ir.TimestampValue, moment: AsOf) -> ir.BooleanValue:
    return ts <= moment.end if moment.inclusive else ts < moment.end


def _event_window(ws: Workspace, moment: AsOf) -> ir.Table:
    bounds = window_bounds(Last(n=EVENT_WINDOW_DAYS, unit="day"), moment)
    e = ws.table("events")
    ts = e.occurred_at
    end = ts <= bounds.end if bounds.end_inclusive else ts < bounds.end
    return e.filter(end & (ts >= ibis.literal(bounds.start)))


def top_event_types(ws: Workspace, moment: AsOf, limit: int = MAX_EVENT_TYPES) -> list[str]:
    """The most frequent event types in the window (ties by name), for event features."""
    e = _event_window(ws, moment)
    e = e.filter(e.type.notnull() & e.customer_id.notnull())
    top = e.group_by("type").aggregate(n=e.count()).order_by([ibis.desc("n"), "type"]).limit(limit)
    return [str(t) for t in top.type.to_pyarrow().to_pylist()]


def feature_table(
    ws: Workspace,
    as_of: object = None,
    groups: Sequence[str] = FEATURE_GROUPS,
    *,
    event_types: Sequence[str] | None = None,
) -> tuple[ir.Table, list[Feature]]:
    """One row per customer: ``customer_id``, ``revenue`` and the feature columns (lazy).

    Values are left missing where the rule language has them missing; :func:`feature_matrix`
    fills them. ``revenue`` (purchases up to ``as_of``) is always there, for revenue shares.
    ``event_types`` fixes the event features (to recompute an earlier run's); by default the
    most frequent types in the last 90 days are used.
    """
    groups = parse_groups(groups)
    moment = resolve_as_of(as_of, ws.config.timezone)
    c = ws.table("customers").select("customer_id")
    features: list[Feature] = []
    joins: list[tuple[ir.Table, str]] = []
    cols: dict[str, ir.Value] = {}

    o = ws.table("orders")
    o = o.filter(_upto(o.ordered_at, moment) & ~o.is_return.fill_null(False))
    og = o.group_by(_ok=o.customer_id).aggregate(
        _frequency=o.customer_id.count(),
        _monetary=o.amount.sum(),
        _aov=o.amount.mean(),
        _first=o.ordered_at.min(),
        _last=o.ordered_at.max(),
    )
    joins.append((og, "_ok"))
    cols["revenue"] = og._monetary.fill_null(0)
    if "rfm" in groups:
        day = ibis.literal(moment.day, type="date")
        features += _rfm_features()
        cols["recency_days"] = day.delta(og._last.date(), unit="day")
        cols["frequency"] = og._frequency.fill_null(0)
        cols["monetary"] = og._monetary.fill_null(0)
        cols["avg_order_value"] = og._aov
        cols["tenure_days"] = day.delta(og._first.date(), unit="day")

    if "events" in groups:
        types = list(event_types) if event_types is not None else top_event_types(ws, moment)
        ev = _event_features(types)
        if ev:
            e = _event_window(ws, moment)
            kinds = {f.name: t for f, t in zip(ev, [t for t in types if _quote(t)], strict=True)}
            eg = e.group_by(_ek=e.customer_id).aggregate(
                **{f"_{n}": e.customer_id.count(where=e.type == t) for n, t in kinds.items()}
            )
            joins.append((eg, "_ek"))
            for f in ev:
                cols[f.name] = eg[f"_{f.name}"].fill_null(0)
            features += ev

    if "clv" in groups:
        available = {t for t in set(_PREDICTED.values()) if _non_empty(ws, t)}
        pred = _predicted_features(available)
        for table in sorted({_PREDICTED[f.name] for f in pred}):
            p = ws.table(table)
            p = p.filter(_upto(p.as_of, moment))
            rank = ibis.row_number().over(
                group_by=p.customer_id, order_by=[ibis.desc(p.as_of), ibis.desc(p.computed_at)]
            )
            p = p.mutate(_rank=rank).filter(ibis._._rank == 0)
            key = f"_{table}_key"
            names = [f.name for f in pred if _PREDICTED[f.name] == table]
            p = p.select(**{key: p.customer_id}, **{f"_{n}": p[n] for n in names})
            joins.append((p, key))
            for n in names:
                cols[n] = p[f"_{n}"]
        features += pred

    if not features:
        raise InputError(
            f"no features for groups {', '.join(groups)!r}: store CLV or churn scores first "
            "(kequn clv predict, kequn churn predict) or add rfm"
        )
    joined = c
    for right, key in joins:
        joined = joined.left_join(right, c.customer_id == right[key])
    out = {"customer_id": c.customer_id, "revenue": cols["revenue"].cast("float64")}
    out.update({f.name: cols[f.name].cast("float64") for f in features})
    return joined.select(**out), features


@dataclass(frozen=True)
class FeatureMatrix:
    """Features fetched into NumPy, missing values filled so thresholds keep their meaning."""

    customer_ids: np.ndarray  # object array of str
    values: np.ndarray  # float64, rows × features, original units, filled
    revenue: np.ndarray  # float64 per customer
    features: tuple[Feature, ...]
    missing: np.ndarray  # bool, rows × features: which values were filled


def fill_missing(values: np.ndarray, features: Sequence[Feature]) -> np.ndarray:
    """Fill NaNs column by column: above the maximum ("high") or at min(0, minimum) ("low")."""
    out = values.copy()
    for j, f in enumerate(features):
        col = out[:, j]
        nan = np.isnan(col)
        if not nan.any():
            continue
        seen = col[~nan]
        if f.missing == "high":
            fill = (float(seen.max()) + 1.0) if seen.size else 0.0
        else:  # "low", and a "never" column that still has gaps
            fill = min(0.0, float(seen.min())) if seen.size else 0.0
        col[nan] = fill
    return out


def feature_matrix(
    ws: Workspace,
    as_of: object = None,
    groups: Sequence[str] = FEATURE_GROUPS,
    *,
    event_types: Sequence[str] | None = None,
) -> FeatureMatrix:
    """Compute :func:`feature_table` in the engine and fetch it as NumPy arrays (via Arrow)."""
    table, features = feature_table(ws, as_of, groups, event_types=event_types)
    arrow = table.order_by("customer_id").to_pyarrow()
    names = [f.name for f in features]
    raw = (
        np.column_stack(
            [arrow.column(n).to_numpy(zero_copy_only=False).astype("float64") for n in names]
        )
        if arrow.num_rows
        else np.empty((0, len(names)))
    )
    ids = np.asarray(arrow.column("customer_id").to_pylist(), dtype=object)
    revenue = arrow.column("revenue").to_numpy(zero_copy_only=False).astype("float64")
    return FeatureMatrix(ids, fill_missing(raw, features), revenue, tuple(features), np.isnan(raw))
