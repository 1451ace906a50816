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

Categorical features (``attr:city``, ``attr:attributes.会员等级``) hold a customer's text
value; :func:`feature_matrix` encodes it as the index of the value in ``Feature.levels``
(the most frequent values sorted, then :data:`OTHER` for the rest, then ``None`` for a
missing value), so K-prototypes can cluster it and
the explanation can write ``city in ('北京', '上海')`` (``or city is null`` when the missing
level belongs to the set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kequn.errors import InputError
from kequn.segments.errors import RuleError
from kequn.segments.nodes import Last
from kequn.segments.parser import parse_rule
from kequn.segments.timing import AsOf, resolve_as_of, window_bounds
from kequn.workspace import Workspace

__all__ = [
    "ATTR_PREFIX",
    "EVENT_WINDOW_DAYS",
    "FEATURE_GROUPS",
    "MAX_LEVELS",
    "OTHER",
    "Feature",
    "FeatureMatrix",
    "feature_matrix",
    "feature_table",
    "parse_groups",
]

FEATURE_GROUPS = ("rfm", "clv", "events")
EVENT_WINDOW_DAYS = 90
MAX_EVENT_TYPES = 6  # the most frequent types in the window; more makes trees unreadable
ATTR_PREFIX = "attr:"  # "attr:city": a categorical customer attribute
MAX_LEVELS = 30  # named values of a categorical feature (the most frequent); the rest: OTHER
OTHER = "(other)"  # the level of every value beyond the MAX_LEVELS most frequent
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
    categorical: bool = False  # values are indexes into ``levels``
    levels: tuple[str | None, ...] = ()  # sorted values, then None when some are missing

    def condition_in(self, chosen: Sequence[str | None]) -> str:
        """The rule for "the value is one of ``chosen``", keeping a missing value's meaning.

        ``in`` is false for a missing value, so the missing level is added as ``or expr is
        null``. The :data:`OTHER` level (every value outside the named ones) is written
        ``not expr in (the named ones not chosen)``, which is also true for a missing value,
        so ``expr is not null and`` goes before it unless the missing level is chosen too.
        Without an other level, a set holding the missing level and most values is written
        the same shorter way.
        """
        if not self.categorical:
            raise ValueError(f"feature {self.name!r} is not categorical")
        picked = set(chosen)
        named = [v for v in self.levels if v is not None and v != OTHER]
        values = [v for v in named if v in picked]
        others = [v for v in named if v not in picked]
        with_null = None in picked
        has_other = OTHER in self.levels
        shorter = not has_other and with_null and 0 < len(others) < len(values)
        if (has_other and OTHER in picked) or shorter:
            if not others:
                return "true" if with_null else f"{self.expr} is not null"
            text = f"not {self.expr} in ({_literals(others)})"
            return text if with_null else f"{self.expr} is not null and {text}"
        if not values:
            return f"{self.expr} is null" if with_null else "false"
        if not others and not has_other:
            return "true" if with_null else f"{self.expr} is not null"
        if len(values) == 1:
            text = f"{self.expr} = {_literals(values)}"
        else:
            text = f"{self.expr} in ({_literals(values)})"
        return f"({text} or {self.expr} is null)" if with_null else text

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


def _literals(values: Sequence[str | None]) -> str:
    return ", ".join(str(_quote(str(v))) for v in values)


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
    """``"rfm,clv,attr:city"`` or a list → validated group names (default: all groups).

    ``attr:NAME`` adds a categorical feature: a text column of ``customers`` or a key of its
    ``attributes`` JSON (``attr:会员等级`` or ``attr:attributes.会员等级``).
    """
    if value is None:
        return FEATURE_GROUPS
    items = value.split(",") if isinstance(value, str) else list(value)
    groups = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not groups:
        raise InputError(f"features {value!r}: name at least one of {', '.join(FEATURE_GROUPS)}")
    for g in groups:
        if g.startswith(ATTR_PREFIX):
            if not g[len(ATTR_PREFIX) :].strip():
                raise InputError(f"feature {g!r}: name an attribute, e.g. attr:city")
            continue
        if g not in FEATURE_GROUPS:
            raise InputError(
                f"feature group {g!r}: use {', '.join(FEATURE_GROUPS)} or attr:NAME "
                "(a customer attribute, e.g. attr:city)"
            )
    return groups


def _attr_feature(spec: str, index: int, customers: ir.Table) -> tuple[Feature, ir.Value]:
    """A categorical feature for ``attr:NAME``: its rule expression, its levels, its column.

    NAME is a text column of ``customers``, else a key of the ``attributes`` JSON. The levels
    are the :data:`MAX_LEVELS` most frequent values (sorted), then :data:`OTHER` for all the
    others when there are more, then None when some customers have no value.
    """
    name = spec[len(ATTR_PREFIX) :].strip()
    schema = customers.schema()
    text_columns = sorted(
        c for c in schema.names if schema[c].is_string() and c not in ("customer_id", "attributes")
    )
    if name in schema.names:
        if not schema[name].is_string() or name in ("customer_id", "attributes"):
            raise InputError(
                f"feature {spec!r}: {name!r} is not a categorical column; "
                f"use one of the text columns {', '.join(text_columns)} or an attributes key"
            )
        expr, column = name, customers[name]
    else:
        key = name.removeprefix("attributes.")
        expr = f"attributes.{key}"
        column = customers.attributes.cast("json")[key].str
    try:
        parse_rule(f"{expr} is null")
    except RuleError:
        raise InputError(
            f"feature {spec!r}: {expr!r} cannot be written in the rule language; "
            "use a name of letters, digits and underscores"
        ) from None
    counted = customers.select(v=column)
    top = (
        counted.filter(counted.v.notnull())
        .group_by("v")
        .aggregate(n=ibis._.count())
        .order_by([ibis.desc("n"), "v"])
        .limit(MAX_LEVELS + 1)
        .to_pyarrow()
        .to_pylist()
    )
    values = [r["v"] for r in top[:MAX_LEVELS]]
    if not values:
        raise InputError(
            f"feature {spec!r}: no customer has a value for {expr!r}; "
            f"text columns: {', '.join(text_columns)} (or a key of attributes)"
        )
    bad = [v for v in values if _quote(v) is None or v == OTHER]
    if bad:
        raise InputError(
            f"feature {spec!r}: the value {bad[0]!r} cannot be a level (it holds both kinds "
            f"of quote, or it is kequn's name {OTHER!r} for the less frequent values)"
        )
    levels: tuple[str | None, ...] = tuple(sorted(values))
    if len(top) > MAX_LEVELS:
        levels += (OTHER,)
    if counted.v.isnull().any().to_pyarrow().as_py():
        levels += (None,)
    slug = name if name.isascii() and name.replace("_", "").isalnum() else f"{index + 1}"
    feature = Feature(
        f"attr_{slug}",
        expr,
        "never",
        False,
        False,
        expr,
        expr,
        "attr",
        categorical=True,
        levels=levels,
    )
    return feature, column


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
    fills them. Categorical features (``attr:NAME`` in ``groups``) are text columns here.
    ``revenue`` (purchases up to ``as_of``) is always there, for revenue shares.
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

    attrs = [g for g in groups if g.startswith(ATTR_PREFIX)]
    if attrs:
        customers = ws.table("customers")
        a = {"_ak": customers.customer_id}
        for i, spec in enumerate(attrs):
            feature, column = _attr_feature(spec, i, customers)
            if feature.name in {f.name for f in features}:
                continue  # attr:city and attr:city again
            a[f"_{feature.name}"] = column
            features.append(feature)
        attr_table = customers.select(**a)
        joins.append((attr_table, "_ak"))
        for f in features:
            if f.categorical:
                cols[f.name] = attr_table[f"_{f.name}"]

    if not features:
        raise InputError(
            f"no features for groups {', '.join(groups)!r}: store CLV or churn scores first "
            "(kequn clv predict, kequn churn predict) or add rfm"
        )
    joined = c
    for right, key in joins:
        joined = joined.left_join(right, c.customer_id == right[key])
    out = {"customer_id": c.customer_id, "revenue": cols["revenue"].cast("float64")}
    out.update(
        {f.name: cols[f.name].cast("string" if f.categorical else "float64") for f in features}
    )
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


def _column(values: pa.ChunkedArray, feature: Feature) -> np.ndarray:
    """A fetched column as float64: numbers as they are, categories as level indexes."""
    if not feature.categorical:
        return values.to_numpy(zero_copy_only=False).astype("float64")
    levels = list(feature.levels)
    named = [v for v in levels if v is not None and v != OTHER]
    codes = pc.index_in(values, value_set=pa.array(named, pa.string()))
    # a value outside the named ones is OTHER; a missing one the missing level
    other = levels.index(OTHER) if OTHER in levels else len(levels) - 1
    missing = levels.index(None) if None in levels else other
    codes = pc.if_else(pc.is_null(values), missing, pc.fill_null(codes, other))
    return codes.to_numpy(zero_copy_only=False).astype("float64")


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
    raw = (
        np.column_stack([_column(arrow.column(f.name), f) for f in features])
        if arrow.num_rows
        else np.empty((0, len(features)))
    )
    ids = np.asarray(arrow.column("customer_id").to_pylist(), dtype=object)
    revenue = arrow.column("revenue").to_numpy(zero_copy_only=False).astype("float64")
    return FeatureMatrix(ids, fill_missing(raw, features), revenue, tuple(features), np.isnan(raw))
