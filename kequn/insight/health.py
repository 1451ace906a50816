"""Segment health (客群健康度): a 0–100 index per segment and overall, with its parts shown.

A segment is worth acting on when the data under its rule is sound, its members are fresh,
campaigns to it work and its customers are content. Each of those is a **component** scored
0–100 (``None`` when it cannot be measured, with the reason); the index is their weighted
mean over the measured ones, the weights re-normalised and shown:

* ``data_quality`` — the fields the rule reads (customer columns and ``attributes`` keys,
  order and event columns and ``properties`` keys, the inputs of computed fields, and those of
  the segments it refers to): ``100 × (1 − missing) × (1 − invalid) × (1 − duplicate) ×
  (1 − quarantined)``, each rate the worst among the fields or tables read;
* ``timeliness`` — how far the data's newest row (of the tables the rule reads) lies after
  the segment's last evaluation: 100 when none, falling linearly to 0 at twice
  ``staleness_days``; 0 when the segment missed a scheduled refresh;
* ``strategy_fit`` — members in a campaign arm against the control group (``holdout``) in
  ``experiment_assignments``: ``100 × Φ(z)`` of a two-proportion z-test on conversion;
* ``perception`` — NPS (0–10 answers: promoters 9–10 minus detractors 0–6, as a share) mapped
  to ``(NPS + 100) / 2``, and satisfaction (mean on its 1–5, 0–10 or 0–100 scale) as a
  percentage of the scale; from a ``customers`` column or an ``attributes`` key.

Beside the index, a check of the segments as a whole: segments too small to act on, pairs of
near-duplicates (Jaccard index of current members at or above a threshold), and more
segments than a team can act on. Every warning says what to do. Thresholds come from the
``[health]`` section of ``kequn.toml``; ``docs/health.md`` describes the JSON keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir

from kequn.errors import InputError, WorkspaceError
from kequn.segments.check import PREDICTED, RFM_FIELDS, SOURCE_TABLE
from kequn.segments.engine import overlap, stored_names
from kequn.segments.errors import closest
from kequn.segments.nodes import (
    Aggregate,
    And,
    Between,
    Compare,
    Field,
    InList,
    InSegment,
    IsNull,
    Node,
    Not,
    Or,
    TextMatch,
)
from kequn.segments.parser import parse_rule
from kequn.segments.timing import resolve_as_of
from kequn.workspace import Workspace

__all__ = [
    "COMPONENTS",
    "DEFAULTS",
    "NPS_NAMES",
    "SATISFACTION_NAMES",
    "Component",
    "HealthReport",
    "HealthWarning",
    "SegmentHealth",
    "customer_perception",
    "data_quality",
    "health",
    "rule_fields",
    "strategy_fit",
    "timeliness",
]

# component → weight in the index (re-normalised over the measured ones)
COMPONENTS = {"data_quality": 0.3, "timeliness": 0.2, "strategy_fit": 0.3, "perception": 0.2}
DEFAULTS: dict[str, float] = {
    "min_segment_size": 100,  # members; fewer cannot carry a campaign or its measurement
    "jaccard_threshold": 0.8,  # pairs at or above share nearly all their members
    "max_segments": 20,  # more than a team can give a strategy each
    "staleness_days": 7,  # data newer than the last evaluation by more than this is stale
}
QUALITY_WARNING = 80.0  # data quality below this gets a warning
PERCEPTION_WARNING = 50.0  # NPS below 0, or satisfaction below the middle of its scale
FIT_WARNING = 25.0  # campaigns doing worse than the control (z < −0.67)
CONVERSION_DAYS = 7  # an assignment converts with a purchase within this many days
HOLDOUT = "holdout"
NPS_NAMES = ("nps", "净推荐值", "推荐值", "nps_score")
SATISFACTION_NAMES = ("satisfaction", "满意度", "csat", "csat_score", "satisfaction_score")
# the stored inputs of computed fields: what their quality depends on
_INPUTS = {
    "days_since_last_order": (("orders", "ordered_at"),),
    "days_since_first_order": (("orders", "ordered_at"),),
    "status_stage": (("orders", "ordered_at"), ("events", "occurred_at")),
    "funnel_stage": (("orders", "ordered_at"), ("events", "occurred_at")),
}
_VALUE_INPUTS = (("orders", "ordered_at"), ("orders", "amount"))  # RFM, CLV, churn
# the time each table's rows carry from the data (customers.updated_at is the import's clock)
_TIME = {"customers": "created_at", "orders": "ordered_at", "events": "occurred_at"}
_JSON = {"customers": "attributes", "events": "properties"}


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One part of a segment's health: its score (None: not measured) and why."""

    name: str
    score: float | None
    summary: str  # one line: the figure behind the score, or why it is not measured
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, weight: float, used: float) -> dict[str, Any]:
        return {
            "score": None if self.score is None else round(self.score, 1),
            "measured": self.score is not None,
            "weight": weight,
            "used_weight": round(used, 4),
            "summary": self.summary,
            "details": self.details,
        }


@dataclass(frozen=True)
class HealthWarning:
    """Something to fix: ``kind``, the segment(s) it is about, what is wrong, what to do."""

    kind: str
    segments: tuple[str, ...]
    message: str
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "segments": list(self.segments),
            "message": self.message,
            "action": self.action,
        }


@dataclass(frozen=True)
class SegmentHealth:
    segment: str
    size: int | None  # members at the last evaluation (None: never evaluated)
    last_evaluated: datetime | None
    components: tuple[Component, ...]
    warnings: tuple[HealthWarning, ...]

    @property
    def weights(self) -> dict[str, float]:
        """The weights the index used: the measured components', summing to 1."""
        measured = {c.name: COMPONENTS[c.name] for c in self.components if c.score is not None}
        total = sum(measured.values())
        return {c.name: (measured.get(c.name, 0.0) / total if total else 0.0)
                for c in self.components}  # fmt: skip

    @property
    def index(self) -> float | None:
        weights = self.weights
        scored = [(weights[c.name], c.score) for c in self.components if c.score is not None]
        return sum(w * s for w, s in scored) if scored else None

    def as_dict(self) -> dict[str, Any]:
        weights = self.weights
        index = self.index
        return {
            "segment": self.segment,
            "size": self.size,
            "last_evaluated": self.last_evaluated.isoformat() if self.last_evaluated else None,
            "index": None if index is None else round(index, 1),
            "components": {
                c.name: c.as_dict(COMPONENTS[c.name], weights[c.name]) for c in self.components
            },
            "warnings": [w.as_dict() for w in self.warnings],
        }


@dataclass(frozen=True)
class HealthReport:
    """Every segment's health, the overall index and the checks of the segments as a whole."""

    segments: tuple[SegmentHealth, ...]
    warnings: tuple[HealthWarning, ...]  # about the segments as a whole
    settings: dict[str, float]

    @property
    def index(self) -> float | None:
        """The mean of the segments' indexes (None without a measured segment)."""
        values = [s.index for s in self.segments if s.index is not None]
        return sum(values) / len(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        index = self.index
        return {
            "index": None if index is None else round(index, 1),
            "segments": [s.as_dict() for s in self.segments],
            "warnings": [w.as_dict() for w in self.warnings],
            "settings": self.settings,
        }


# --- settings ------------------------------------------------------------------------------------


def settings(ws: Workspace) -> dict[str, float]:
    """``[health]`` of ``kequn.toml`` over the defaults; a bad value is a config error."""
    section = ws.config.raw.get("health", {})
    if not isinstance(section, dict):
        raise WorkspaceError(f"[health] must be a table, not {section!r}")
    out = dict(DEFAULTS)
    for key, value in section.items():
        if key not in DEFAULTS:
            raise WorkspaceError(f"[health] {key} is not a setting; use {', '.join(DEFAULTS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise WorkspaceError(f"[health] {key} = {value!r}: use a number of at least 0")
        if key == "jaccard_threshold" and not 0 < value <= 1:
            raise WorkspaceError(f"[health] jaccard_threshold = {value!r}: use a number in (0, 1]")
        out[key] = value
    return out


# --- the fields a rule reads ---------------------------------------------------------------------


def rule_fields(
    ws: Workspace, rule: str | Node, *, _seen: frozenset[str] = frozenset()
) -> set[tuple[str, str]]:
    """The stored ``(table, field)`` pairs a rule's value depends on.

    Customer fields are ``("customers", "city")`` or ``("customers", "attributes.会员等级")``;
    aggregates read their source's time column, field and ``where`` fields (``("events",
    "properties.category")``); computed and predicted fields stand for their inputs (order
    times and amounts, event times); ``in segment`` adds the fields of that segment's rule.
    """
    node = parse_rule(rule) if isinstance(rule, str) else rule
    out: set[tuple[str, str]] = set()
    stored: dict[str, str] | None = None

    def value(v: Node, table: str | None) -> None:
        if isinstance(v, Aggregate):
            source = SOURCE_TABLE.get(v.source, v.source)
            out.add((source, _TIME[source]))
            if v.field is not None:
                out.add((source, v.field.dotted))
            if v.where is not None:
                walk(v.where, source)
            if v.then is not None:
                then = SOURCE_TABLE.get(v.then.source, v.then.source)
                out.add((then, _TIME[then]))
                if v.then.where is not None:
                    walk(v.then.where, then)
        elif isinstance(v, Field):
            head = v.path[0]
            if table is None and len(v.path) == 1 and head in _INPUTS:
                out.update(_INPUTS[head])
            elif table is None and len(v.path) == 1 and (head in RFM_FIELDS or head in PREDICTED):
                out.update(_VALUE_INPUTS)
            else:
                out.add((table or "customers", v.dotted))

    def walk(n: Node, table: str | None) -> None:
        nonlocal stored
        if isinstance(n, And | Or):
            for item in n.items:
                walk(item, table)
        elif isinstance(n, Not):
            walk(n.item, table)
        elif isinstance(n, Compare | InList | Between | TextMatch | IsNull):
            value(n.left, table)
        elif isinstance(n, InSegment) and n.name not in _seen:
            if stored is None:
                t = ws.table("segments").select("name", "rule").to_pyarrow().to_pylist()
                stored = {r["name"]: r["rule"] for r in t}
            if n.name in stored:
                out.update(rule_fields(ws, stored[n.name], _seen=_seen | {n.name}))

    walk(node, None)
    return out


# --- data quality --------------------------------------------------------------------------------


class _Reader:
    """The stored figures health reads, each looked up once per report (segments share them)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._missing: dict[tuple[str, str], float] = {}
        self._imports: dict[str, dict[str, float]] | None = None
        self._quarantine: dict[tuple[str, str], int] | None = None
        self._newest: dict[str, datetime | None] = {}
        self._perception: dict[str, str] | None = None

    def missing(self, fields: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
        todo = {f for f in fields if f not in self._missing}
        if todo:
            self._missing.update(_missing_rates(self.ws, todo))
        return {f: self._missing.get(f, 0.0) for f in fields}

    def imports(self) -> dict[str, dict[str, float]]:
        if self._imports is None:
            self._imports = _import_rates(self.ws)
        return self._imports

    def quarantine(self) -> dict[tuple[str, str], int]:
        if self._quarantine is None:
            q = self.ws.table("quarantine")
            rows = q.group_by(["kind", "reason"]).aggregate(n=q.count()).to_pyarrow().to_pylist()
            self._quarantine = {(r["kind"], r["reason"]): int(r["n"]) for r in rows}
        return self._quarantine

    def perception_fields(self) -> dict[str, str]:
        if self._perception is None:
            self._perception = _perception_fields(self.ws)
        return self._perception

    def newest(self, table: str) -> datetime | None:
        if table not in self._newest:
            t = self.ws.table(table)
            m = t.aggregate(m=t[_TIME[table]].max()).to_pyarrow().column("m")[0].as_py()
            self._newest[table] = m
        return self._newest[table]


def _present(column: ir.Value, path: str | None) -> ir.BooleanValue:
    """A value is there: not NULL, and for a JSON key path (``a.b``) not missing nor null."""
    if path is None:
        return column.notnull()
    value = column.cast("json")
    for key in path.split("."):
        value = value[key]
    text = value.cast("string")
    return text.notnull() & (text != "null")


def _missing_rates(ws: Workspace, fields: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Share of rows without a value, per field; one query per table (per key for events).

    A ``properties`` key is measured over the events of the types that carry it at least
    once: a product's category is not "missing" from a page view.
    """
    out: dict[tuple[str, str], float] = {}
    for table in ("customers", "orders", "events"):
        t = ws.table(table)
        mine = sorted(f for tb, f in fields if tb == table)
        plain = [f for f in mine if f in t.columns]
        keyed = [f for f in mine if "." in f and f.split(".", 1)[0] == _JSON.get(table)]
        if table == "events":
            for f in keyed:
                key = f.split(".", 1)[1]
                per_type = t.group_by("type").aggregate(
                    n=t.count(), has=_present(t.properties, key).cast("int64").sum()
                )
                carried = per_type.filter(per_type.has > 0)
                row = carried.aggregate(n=carried.n.sum(), has=carried.has.sum()).to_pyarrow()
                n, has = (row.column(c)[0].as_py() or 0 for c in ("n", "has"))
                out[(table, f)] = 1 - has / n if n else 1.0
            keyed = []
        checks = {f"c{i}": _present(t[f], None) for i, f in enumerate(plain)}
        checks |= {
            f"k{i}": _present(t[_JSON[table]], f.split(".", 1)[1]) for i, f in enumerate(keyed)
        }
        if not checks:
            continue
        row = (
            t.aggregate(n=t.count(), **{k: v.cast("int64").sum() for k, v in checks.items()})
            .to_pyarrow()
            .to_pylist()[0]
        )
        n = int(row["n"] or 0)
        for i, f in enumerate(plain):
            out[(table, f)] = 1 - int(row[f"c{i}"] or 0) / n if n else 0.0
        for i, f in enumerate(keyed):
            out[(table, f)] = 1 - int(row[f"k{i}"] or 0) / n if n else 0.0
    return out


def _import_rates(ws: Workspace) -> dict[str, dict[str, float]]:
    """Per kind of import: rows read, and the shares found duplicate and quarantined.

    ``imports`` has one row per file with the whole import's counts, so counts are taken
    once per import.
    """
    i = ws.table("imports")
    per_import = i.group_by(["import_id", "kind"]).aggregate(
        rows=i.rows_read.sum(), dup=i.duplicates.max(), quar=i.quarantined.max()
    )
    rows = (
        per_import.group_by("kind")
        .aggregate(rows=per_import.rows.sum(), dup=per_import.dup.sum(), quar=per_import.quar.sum())
        .to_pyarrow()
        .to_pylist()
    )
    out = {}
    for r in rows:
        n = int(r["rows"] or 0)
        out[r["kind"]] = {
            "rows_read": n,
            "duplicate_rate": int(r["dup"] or 0) / n if n else 0.0,
            "quarantined_rate": int(r["quar"] or 0) / n if n else 0.0,
        }
    return out


def _invalid_rates(
    counts: dict[tuple[str, str], int], fields: set[tuple[str, str]], rows_read: dict[str, int]
) -> dict[tuple[str, str], float]:
    """Share of the rows read that were rejected because of the field (its quarantine reason)."""
    out = {}
    for table, f in fields:
        n = rows_read.get(table, 0)
        head = f.split(".", 1)[0]
        if head == _JSON.get(table):
            reasons = [f"invalid {head} JSON"]
        else:
            reasons = [f"missing {f}", f"unparseable {f}"]
        bad = sum(counts.get((table, reason), 0) for reason in reasons)
        out[(table, f)] = bad / n if n else 0.0
    return out


def data_quality(ws: Workspace, rule: str | Node, *, _reader: _Reader | None = None) -> Component:
    """Missing, invalid, duplicate and quarantined rates of what the rule reads."""
    reader = _reader or _Reader(ws)
    fields = rule_fields(ws, rule)
    tables = sorted({t for t, _ in fields})
    if not fields:
        return Component("data_quality", 100.0, "the rule reads no stored field", {"fields": []})
    imports = reader.imports()
    missing = reader.missing(fields)
    rows_read = {k: int(v["rows_read"]) for k, v in imports.items()}
    invalid = _invalid_rates(reader.quarantine(), fields, rows_read)
    per_field = [
        {
            "table": t,
            "field": f,
            "missing_rate": round(missing.get((t, f), 0.0), 4),
            "invalid_rate": round(invalid.get((t, f), 0.0), 4),
        }
        for t, f in sorted(fields)
    ]
    per_table = {
        t: {
            "rows_read": int(imports.get(t, {}).get("rows_read", 0)),
            "duplicate_rate": round(imports.get(t, {}).get("duplicate_rate", 0.0), 4),
            "quarantined_rate": round(imports.get(t, {}).get("quarantined_rate", 0.0), 4),
        }
        for t in tables
    }
    worst = {
        "missing": max(p["missing_rate"] for p in per_field),
        "invalid": max(p["invalid_rate"] for p in per_field),
        "duplicate": max(p["duplicate_rate"] for p in per_table.values()),
        "quarantined": max(p["quarantined_rate"] for p in per_table.values()),
    }
    score = 100.0 * math.prod(1 - r for r in worst.values())
    summary = ", ".join(f"{k} {v:.1%}" for k, v in worst.items())
    return Component(
        "data_quality",
        score,
        f"worst rates: {summary}",
        {"rates": worst, "fields": per_field, "tables": per_table},
    )


def _quality_warning(segment: str, c: Component) -> HealthWarning | None:
    if c.score is None or c.score >= QUALITY_WARNING:
        return None
    rates = c.details["rates"]
    kind = max(rates, key=rates.get)
    if kind in ("missing", "invalid"):
        key = f"{kind}_rate"
        row = max(c.details["fields"], key=lambda p: p[key])
        where = f"{row['table']}.{row['field']}"
        message = f"{where} is {kind} in {row[key]:.1%} of rows"
        action = (
            f"fill {where} in the source and re-import, or say in the rule what a missing value "
            "means (`is null`): a comparison with a missing value is false"
            if kind == "missing"
            else f"see `kequn quarantine` for the rows rejected over {where}, fix them in the "
            "source and import them again"
        )
    else:
        key = f"{kind}_rate"
        table = max(c.details["tables"], key=lambda t: c.details["tables"][t][key])
        share = c.details["tables"][table][key]
        message = f"{share:.1%} of the {table} rows read were {kind}"
        action = (
            "check the source export for rows written twice (import with --keep-duplicates "
            "if they are real repeat transactions)"
            if kind == "duplicate"
            else "see `kequn quarantine` for the reasons, fix the rows in the source and "
            "import them again"
        )
    return HealthWarning(
        "data_quality",
        (segment,),
        f"segment {segment!r}: data quality {c.score:.0f}/100: {message}",
        action,
    )


# --- timeliness ----------------------------------------------------------------------------------


def _evaluated_until(label: datetime) -> datetime:
    """A recorded as_of of 00:00 stands for a day, evaluated up to its end."""
    return label + timedelta(days=1) if label.time() == time() else label


def timeliness(
    ws: Workspace,
    rule: str | Node,
    last_evaluated: datetime | None,
    staleness_days: float = DEFAULTS["staleness_days"],
    *,
    _reader: _Reader | None = None,
) -> Component:
    """How far the data has moved on since the segment's last evaluation."""
    reader = _reader or _Reader(ws)
    tables = sorted({t for t, _ in rule_fields(ws, rule)}) or ["customers", "orders", "events"]
    stamps = [m for m in (reader.newest(t) for t in tables) if m is not None]
    newest = max(stamps) if stamps else None
    details: dict[str, Any] = {
        "last_evaluated": last_evaluated.isoformat() if last_evaluated else None,
        "newest_row": newest.isoformat() if newest else None,
        "tables": tables,
        "staleness_days": staleness_days,
    }
    if last_evaluated is None:
        return Component("timeliness", 0.0, "never evaluated", {**details, "lag_days": None})
    if newest is None:
        return Component("timeliness", 100.0, "no dated rows in the tables the rule reads",
                         {**details, "lag_days": 0.0})  # fmt: skip
    lag = max(0.0, (newest - _evaluated_until(last_evaluated)).total_seconds() / 86400)
    details["lag_days"] = round(lag, 2)
    span = 2 * staleness_days
    score = 100.0 * max(0.0, 1 - lag / span) if span > 0 else (100.0 if lag == 0 else 0.0)
    summary = (
        "evaluated after the newest row"
        if lag == 0
        else f"data runs {lag:.1f} days past the last evaluation"
    )
    return Component("timeliness", score, summary, details)


# --- strategy fit --------------------------------------------------------------------------------


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def strategy_fit(ws: Workspace, segment: str, as_of: object = None) -> Component | None:
    """Conversion of the segment's members in campaign arms against its control group.

    Reads ``experiment_assignments`` (experiment, customer_id, variant, segment,
    assigned_at): assignments with ``segment`` equal to this segment whose follow-up of
    :data:`CONVERSION_DAYS` days has ended by ``as_of``. An assignment converts when the
    customer makes a purchase (an order that is not a return) after ``assigned_at`` and
    within that period. The ``holdout`` arm is the control; every other arm counts as treated.
    The score is ``100 × Φ(z)`` for the two-proportion z statistic (treated minus control):
    50 when campaigns change nothing, towards 100 when they convert clearly better, towards 0
    when clearly worse. Returns None when there is nothing to compare (no table, no
    assignments, or one of the two groups empty); :func:`health` then shows why.
    """
    if "experiment_assignments" not in ws.con.list_tables():
        return None
    moment = resolve_as_of(as_of, ws.config.timezone)
    a = ws.table("experiment_assignments")
    period = ibis.interval(days=CONVERSION_DAYS)
    a = a.filter(a.segment == segment, (a.assigned_at + period) <= moment.end)
    o = ws.table("orders")
    o = o.filter(~o.is_return.fill_null(False))
    hits = a.join(
        o,
        (a.customer_id == o.customer_id)
        & (o.ordered_at >= a.assigned_at)
        & (o.ordered_at <= a.assigned_at + period),
    ).select(_e=a.experiment, _c=a.customer_id)
    hits = hits.distinct()
    j = a.left_join(hits, (a.experiment == hits._e) & (a.customer_id == hits._c))
    arm = ibis.ifelse(j.variant == HOLDOUT, "control", "treated")
    rows = (
        j.group_by(arm=arm)
        .aggregate(n=j.count(), converted=j._c.notnull().cast("int64").sum())
        .to_pyarrow()
        .to_pylist()
    )
    groups = {r["arm"]: (int(r["n"]), int(r["converted"] or 0)) for r in rows}
    if "treated" not in groups or "control" not in groups:
        return None
    (nt, ct), (nc, cc) = groups["treated"], groups["control"]
    pt, pc = ct / nt, cc / nc
    pooled = (ct + cc) / (nt + nc)
    se = math.sqrt(pooled * (1 - pooled) * (1 / nt + 1 / nc))
    z = (pt - pc) / se if se > 0 else 0.0
    details = {
        "treated": {"assigned": nt, "converted": ct, "rate": round(pt, 4)},
        "control": {"assigned": nc, "converted": cc, "rate": round(pc, 4)},
        "uplift": round(pt - pc, 4),
        "z": round(z, 3),
        "conversion_days": CONVERSION_DAYS,
    }
    summary = f"conversion {pt:.1%} in campaigns vs {pc:.1%} in the control group (z = {z:.2f})"
    return Component("strategy_fit", 100.0 * _phi(z), summary, details)


def _fit_component(ws: Workspace, segment: str, as_of: object) -> Component:
    fit = strategy_fit(ws, segment, as_of)
    if fit is not None:
        return fit
    a = (
        ws.table("experiment_assignments")
        if "experiment_assignments" in ws.con.list_tables()
        else None
    )
    reason = "not measured: no campaigns yet"
    if a is not None:
        mine = a.filter(a.segment == segment)
        if mine.count().execute():
            reason = (
                "not measured: campaigns need both a control group (holdout) and a campaign arm, "
                f"each with a {CONVERSION_DAYS}-day follow-up ended"
            )
    return Component("strategy_fit", None, reason)


# --- customer perception -------------------------------------------------------------------------


def _numeric(t: ir.Table, name: str) -> ir.NumericValue:
    """A column or ``attributes.KEY`` as a number (text such as ``"9"`` included)."""
    if name.startswith("attributes."):
        j = t.attributes.cast("json")[name.split(".", 1)[1]]
        return ibis.coalesce(j.str.try_cast("float64"), j.cast("string").try_cast("float64"))
    return t[name].cast("string").try_cast("float64")


def _perception_fields(ws: Workspace) -> dict[str, str]:
    """``{"nps": name, "satisfaction": name}`` for the fields present: a column, else a key."""
    c = ws.table("customers")
    lower = {name.lower(): name for name in c.columns}
    candidates: list[tuple[str, str]] = []
    for kind, names in (("nps", NPS_NAMES), ("satisfaction", SATISFACTION_NAMES)):
        candidates += [(kind, lower[n]) for n in names if n in lower]
        for n in names:
            candidates += [
                (kind, f"attributes.{key}") for key in dict.fromkeys((n, n.upper(), n.capitalize()))
            ]
    counts = (
        c.aggregate(**{f"v{i}": _numeric(c, n).count() for i, (_, n) in enumerate(candidates)})
        .to_pyarrow()
        .to_pylist()[0]
    )
    out: dict[str, str] = {}
    for i, (kind, name) in enumerate(candidates):
        if kind not in out and counts[f"v{i}"]:
            out[kind] = name
    return out


def customer_perception(
    ws: Workspace, segment: str, *, _reader: _Reader | None = None
) -> Component:
    """NPS and/or satisfaction of the segment's current members, against all customers."""
    found = (_reader or _Reader(ws)).perception_fields()
    if not found:
        return Component("perception", None, "not measured: no NPS or satisfaction field")
    c = ws.table("customers")
    m = ws.table("memberships")
    m = m.filter(m.segment == segment, m.exited_at.isnull()).select(_m="customer_id")
    c = c.left_join(m, c.customer_id == m._m)
    member = c._m.notnull()
    parts: dict[str, Any] = {}
    scores = []
    for kind, name in found.items():
        value = _numeric(c, name)
        if kind == "nps":
            ok = value.between(0, 10) & (value == value.floor())
            agg = {}
            for who, mask in (("members", member), ("everyone", ibis.literal(True))):
                agg[f"{who}_n"] = (ok & mask).cast("int64").sum()
                agg[f"{who}_pro"] = (ok & mask & (value >= 9)).cast("int64").sum()
                agg[f"{who}_det"] = (ok & mask & (value <= 6)).cast("int64").sum()
            r = c.aggregate(**agg).to_pyarrow().to_pylist()[0]
            stats = {}
            for who in ("members", "everyone"):
                n = int(r[f"{who}_n"] or 0)
                nps = (
                    100 * (int(r[f"{who}_pro"] or 0) - int(r[f"{who}_det"] or 0)) / n if n else None
                )
                stats[who] = {"answers": n, "nps": None if nps is None else round(nps, 1)}
            parts["nps"] = {"field": name, **stats}
            if stats["members"]["nps"] is not None:
                scores.append((stats["members"]["nps"] + 100) / 2)
        else:
            top = c.aggregate(top=value.max()).to_pyarrow().column("top")[0].as_py() or 0
            low, high = (1, 5) if top <= 5 else (0, 10) if top <= 10 else (0, 100)
            ok = value.between(low, high)
            r = (
                c.aggregate(
                    members_n=(ok & member).cast("int64").sum(),
                    members_mean=value.mean(where=ok & member),
                    everyone_n=ok.cast("int64").sum(),
                    everyone_mean=value.mean(where=ok),
                )
                .to_pyarrow()
                .to_pylist()[0]
            )
            stats = {
                who: {
                    "answers": int(r[f"{who}_n"] or 0),
                    "mean": None if r[f"{who}_mean"] is None else round(r[f"{who}_mean"], 3),
                }
                for who in ("members", "everyone")
            }
            parts["satisfaction"] = {"field": name, "scale": [low, high], **stats}
            if r["members_mean"] is not None:
                scores.append(100 * (r["members_mean"] - low) / (high - low))
    if not scores:
        return Component("perception", None, "not measured: no member has answered", parts)
    bits = []
    if "nps" in parts and parts["nps"]["members"]["nps"] is not None:
        answered = parts["nps"]["members"]
        bits.append(f"NPS {answered['nps']:+.0f} ({answered['answers']} answers)")
    if "satisfaction" in parts and parts["satisfaction"]["members"]["mean"] is not None:
        s = parts["satisfaction"]
        bits.append(f"satisfaction {s['members']['mean']:.2f} on {s['scale'][0]}–{s['scale'][1]}")
    return Component("perception", sum(scores) / len(scores), ", ".join(bits), parts)


def _perception_warning(segment: str, c: Component) -> HealthWarning | None:
    if c.score is None or c.score >= PERCEPTION_WARNING:
        return None
    return HealthWarning(
        "perception",
        (segment,),
        f"segment {segment!r}: customer perception {c.score:.0f}/100 ({c.summary})",
        "find out why before pushing more campaigns: ask the detractors, look at their "
        "returns and service contacts, and fix the experience first",
    )


# --- the report ----------------------------------------------------------------------------------


def _runs(ws: Workspace) -> dict[str, tuple[datetime, int]]:
    """Each segment's last evaluation: (as_of, size)."""
    r = ws.table("segment_runs")
    ranked = r.mutate(_n=ibis.row_number().over(group_by=r.segment, order_by=ibis.desc(r.as_of)))
    rows = ranked.filter(ranked._n == 0).select("segment", "as_of", "size").to_pyarrow()
    return {x["segment"]: (x["as_of"], int(x["size"])) for x in rows.to_pylist()}


def _segment_health(
    ws: Workspace,
    name: str,
    rule: str,
    run: tuple[datetime, int] | None,
    opts: dict[str, float],
    as_of: object,
    reader: _Reader,
    missed: dict[str, Any] | None = None,
) -> SegmentHealth:
    last, size = run if run is not None else (None, None)
    quality = data_quality(ws, rule, _reader=reader)
    fresh = timeliness(ws, rule, last, opts["staleness_days"], _reader=reader)
    if missed is not None:  # a missed scheduled refresh: stale whatever the data did
        summary = f"missed its {missed['schedule']} refresh due at {missed['due']:%Y-%m-%d %H:%M}"
        details = {**fresh.details, "missed_refresh": missed["due"].isoformat()}
        fresh = Component("timeliness", 0.0, summary, details)
    fit = _fit_component(ws, name, as_of)
    perception = customer_perception(ws, name, _reader=reader)
    warnings: list[HealthWarning] = []
    if missed is not None:
        warnings.append(
            HealthWarning(
                "missed_refresh",
                (name,),
                f"segment {name!r} {fresh.summary}; its members are as of {last:%Y-%m-%d %H:%M}",
                "run `kequn serve` (it runs scheduled refreshes) or `kequn segment apply FILE`; "
                "`kequn schedule` lists every missed refresh",
            )
        )
    if last is None:
        warnings.append(
            HealthWarning(
                "never_evaluated",
                (name,),
                f"segment {name!r} has never been evaluated",
                "run `kequn segment apply FILE` with its definition file",
            )
        )
    elif fresh.details["lag_days"] > opts["staleness_days"]:
        warnings.append(
            HealthWarning(
                "stale",
                (name,),
                f"segment {name!r} was last evaluated at {last:%Y-%m-%d %H:%M}, but the data "
                f"runs {fresh.details['lag_days']:.1f} days further (staleness_days "
                f"{opts['staleness_days']:g})",
                "evaluate it again with `kequn segment apply FILE`, and schedule that to run "
                "after every import",
            )
        )
    if size is not None and size < opts["min_segment_size"]:
        warnings.append(
            HealthWarning(
                "small",
                (name,),
                f"segment {name!r} has {size:,} members, fewer than min_segment_size "
                f"{opts['min_segment_size']:g}",
                "widen the rule or merge it with a related segment: too few members to act on "
                "or to measure a campaign against a control group",
            )
        )
    fit_warning = None
    if fit.score is not None and fit.score < FIT_WARNING:
        fit_warning = HealthWarning(
            "strategy_fit",
            (name,),
            f"segment {name!r}: campaigns convert worse than its control group ({fit.summary})",
            "stop or change the campaign for this segment: the control group does better "
            "without it",
        )
    for w in (_quality_warning(name, quality), fit_warning, _perception_warning(name, perception)):
        if w is not None:
            warnings.append(w)
    return SegmentHealth(name, size, last, (quality, fresh, fit, perception), tuple(warnings))


def health(ws: Workspace, segment: str | None = None, *, as_of: object = None) -> HealthReport:
    """The health of every stored segment (or one), the overall index and the size checks.

    ``as_of`` bounds the campaign follow-up periods counted in strategy fit (default: now);
    the other components read the stored state as it is. Near-duplicate pairs are found
    among all stored segments; for one segment only the pairs it is part of are kept.
    """
    opts = settings(ws)
    names = stored_names(ws)
    if segment is not None and segment not in names:
        raise InputError(
            f"unknown segment {segment!r}"
            + (closest(segment, names) or ("; stored: " + ", ".join(names[:10]) if names else ""))
            + ("" if names else "; store segments with `kequn segment apply FILE`")
        )
    rules = {
        r["name"]: r["rule"]
        for r in ws.table("segments").select("name", "rule").to_pyarrow().to_pylist()
    }
    runs = _runs(ws)
    reader = _Reader(ws)
    chosen = [segment] if segment is not None else names
    from kequn.segments.refresh import missed_refreshes

    missed = missed_refreshes(ws, as_of)
    reports = tuple(
        _segment_health(ws, n, rules[n], runs.get(n), opts, as_of, reader, missed.get(n))
        for n in chosen
    )
    warnings: list[HealthWarning] = []
    if len(names) > opts["max_segments"] and segment is None:
        warnings.append(
            HealthWarning(
                "too_many",
                tuple(names),
                f"{len(names)} segments, more than max_segments {opts['max_segments']:g} a "
                "team can give a strategy each",
                "retire the segments no campaign uses and merge near-duplicates; keep the "
                "ones with an owner and a plan",
            )
        )
    if len(names) > 1:
        for pair in overlap(ws, names):
            if pair["jaccard"] < opts["jaccard_threshold"]:
                continue
            if segment is not None and segment not in (pair["a"], pair["b"]):
                continue
            warnings.append(
                HealthWarning(
                    "near_duplicate",
                    (pair["a"], pair["b"]),
                    f"segments {pair['a']!r} and {pair['b']!r} share {pair['both']:,} members "
                    f"(Jaccard {pair['jaccard']:.2f} ≥ {opts['jaccard_threshold']:g})",
                    "merge them into one segment, or change one rule so that they select "
                    "different customers",
                )
            )
    return HealthReport(reports, tuple(warnings), opts)
