"""The behaviour score (行为权重): a weighted, recency-decayed score of what customers do.

Each behaviour (an event type, or ``orders`` for purchases) has a weight; each occurrence
counts ``0.5 ** (age_days / half_life_days)`` (age in whole days before the as_of day), so an
event half_life_days old counts half. The raw score is

    raw = Σ_behaviour weight · Σ_occurrences 0.5 ** (age / half_life)

normalised to 0–100 over all customers, by ``percentile`` (100 × the percent rank: the
share of other customers with a lower raw score; the default) or ``minmax``
(100 × (raw − min) / (max − min)). Five value levels cut the score at 20, 40, 60, 80.
Each behaviour's contribution is its share of the summed raw scores, so the weights' effect
is shown next to the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from kequn.asof import AsOf
    from kequn.workspace import Workspace

__all__ = ["DEFAULTS", "LEVELS", "ScoreSpec", "behaviour_scores", "score_summary"]

DEFAULTS: dict[str, Any] = {
    "weights": {"orders": 5.0, "add_to_cart": 3.0, "product_view": 1.0},
    "half_life_days": 30.0,
    "normalise": "percentile",
}
# (lower bound of the score, code, 中文)
LEVELS = (
    (0.0, "dormant", "沉睡"),
    (20.0, "low", "低"),
    (40.0, "medium", "中"),
    (60.0, "high", "高"),
    (80.0, "core", "核心"),
)
NORMALISE = ("percentile", "minmax")


@dataclass(frozen=True)
class ScoreSpec:
    """Weights per behaviour, the recency half-life and the normalisation.

    Unset fields take ``[tags.score]`` in kequn.toml, then :data:`DEFAULTS`.
    """

    weights: Mapping[str, float] | None = None
    half_life_days: float | None = None
    normalise: str | None = None

    @classmethod
    def parse(cls, data: object, where: str) -> ScoreSpec:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a table of settings, not {data!r}")
        unknown = [k for k in data if k not in DEFAULTS]
        if unknown:
            raise InputError(
                f"{where}: unknown setting {unknown[0]!r}; allowed: {', '.join(DEFAULTS)}"
            )
        values: dict[str, Any] = {}
        if "weights" in data:
            weights = data["weights"]
            if not isinstance(weights, Mapping) or not weights:
                raise InputError(
                    f"{where}: weights maps behaviours (event types, or 'orders') to numbers, "
                    f"not {weights!r}"
                )
            out = {}
            for k, v in weights.items():
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise InputError(f"{where}: weights.{k} = {v!r}; use a number ≥ 0")
                out[str(k)] = float(v)
            values["weights"] = out
        if "half_life_days" in data:
            h = data["half_life_days"]
            if isinstance(h, bool) or not isinstance(h, int | float) or h <= 0:
                raise InputError(f"{where}: half_life_days = {h!r}; use a number of days > 0")
            values["half_life_days"] = float(h)
        if "normalise" in data:
            n = data["normalise"]
            if n not in NORMALISE:
                raise InputError(f"{where}: normalise = {n!r}; use 'percentile' or 'minmax'")
            values["normalise"] = n
        return cls(**values)

    def with_defaults(self, config: Mapping[str, Any] | None = None) -> ScoreSpec:
        base = ScoreSpec.parse(config or {}, "kequn.toml [tags.score]")
        merged = {}
        for key in DEFAULTS:
            mine, theirs = getattr(self, key), getattr(base, key)
            merged[key] = (
                mine if mine is not None else theirs if theirs is not None else DEFAULTS[key]
            )
        return ScoreSpec(**merged)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in DEFAULTS if getattr(self, k) is not None}


def _config(ws: Workspace) -> Mapping[str, Any]:
    tags = ws.config.raw.get("tags", {})
    return tags.get("score", {}) if isinstance(tags, Mapping) else {}


def _column(behaviour: str) -> str:
    return f"_b_{behaviour}"


def behaviour_scores(ws: Workspace, spec: ScoreSpec, as_of: AsOf) -> ir.Table:
    """``customer_id, raw, score, level`` and one decayed count per behaviour
    (``_b_<behaviour>``), for every customer; one query."""
    import ibis

    s = spec.with_defaults(_config(ws))
    assert s.weights is not None and s.half_life_days is not None
    day = ibis.literal(as_of.day, type="date")
    end = ibis.literal(as_of.end, type="timestamp")

    def up_to(ts):
        return ts <= end if as_of.inclusive else ts < end

    def decay(ts):
        age = day.delta(ts.date(), unit="day").cast("float64")
        return ibis.literal(0.5, type="float64") ** (age / s.half_life_days)

    c = ws.table("customers").select("customer_id")
    joined = c
    counts: dict[str, ir.Value] = {}
    events = [b for b in s.weights if b != "orders"]
    if events:
        e = ws.table("events")
        e = e.filter(e.type.isin(events), up_to(e.occurred_at))
        e = e.mutate(_d=decay(e.occurred_at))
        g = e.group_by(_ekey=e.customer_id).aggregate(
            **{_column(b): e._d.sum(where=e.type == b) for b in events}
        )
        joined = joined.left_join(g, joined.customer_id == g._ekey)
        for b in events:
            counts[b] = g[_column(b)]
    if "orders" in s.weights:
        o = ws.table("orders")
        o = o.filter(~o.is_return.fill_null(False), up_to(o.ordered_at))
        g = o.group_by(_okey=o.customer_id).aggregate(
            **{_column("orders"): decay(o.ordered_at).sum()}
        )
        joined = joined.left_join(g, joined.customer_id == g._okey)
        counts["orders"] = g[_column("orders")]
    columns = {_column(b): counts[b].fill_null(0.0) for b in s.weights}
    t = joined.select(customer_id=c.customer_id, **columns)
    raw = ibis.literal(0.0, type="float64")
    for b, w in s.weights.items():
        raw = raw + t[_column(b)] * float(w)
    t = t.mutate(raw=raw)
    if s.normalise == "minmax":
        low, high = t.raw.min().over(), t.raw.max().over()
        score = ((t.raw - low) / (high - low)).fill_null(0.0) * 100.0
        score = ibis.ifelse(high > low, score, 0.0)
    else:
        score = ibis.percent_rank().over(order_by=t.raw) * 100.0
    t = t.mutate(score=score)
    level = ibis.literal(LEVELS[0][1])
    for bound, code, _ in LEVELS[1:]:
        level = ibis.ifelse(t.score >= bound, code, level)
    return t.mutate(level=level)


def score_summary(ws: Workspace, spec: ScoreSpec, as_of: AsOf) -> dict[str, Any]:
    """The weights, each behaviour's share of the total score, and customers per level."""
    s = spec.with_defaults(_config(ws))
    assert s.weights is not None
    t = behaviour_scores(ws, s, as_of)
    sums = (
        t.aggregate(
            total=t.raw.sum(),
            customers=t.count(),
            **{f"_s{i}": t[_column(b)].sum() for i, b in enumerate(s.weights)},
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    total = float(sums["total"] or 0.0)
    behaviours = []
    for i, (b, w) in enumerate(s.weights.items()):
        decayed = float(sums[f"_s{i}"] or 0.0)
        behaviours.append(
            {
                "behaviour": b,
                "weight": w,
                "decayed_count": decayed,
                "points": decayed * w,
                "share": (decayed * w / total) if total else None,
            }
        )
    per_level = {
        r["level"]: int(r["n"])
        for r in t.group_by("level").aggregate(n=t.count()).to_pyarrow().to_pylist()
    }
    return {
        "as_of": as_of.label,
        "half_life_days": s.half_life_days,
        "normalise": s.normalise,
        "customers": int(sums["customers"] or 0),
        "behaviours": behaviours,
        "levels": [
            {"level": code, "label_zh": zh, "from": bound, "customers": per_level.get(code, 0)}
            for bound, code, zh in LEVELS
        ],
    }
