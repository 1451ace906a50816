"""The segment engine: evaluate rules, apply segment files, keep membership history.

Every function takes an explicit ``as_of`` (default: now in the workspace time zone) and
runs compiled Ibis queries; no customer passes through a Python loop. :func:`apply`
evaluates all its segments in *one* query (every aggregate of every segment in one
``GROUP BY`` per table), kept in a temporary table, then updates the history of all of
them in one pass.

History: :func:`apply` compares each segment's members with the open intervals in
``memberships``; new members get an interval starting at as_of, members who left get their
interval closed at as_of, so "who was in the segment on day D" is a range query. Runs must
move forward in time per segment (an older as_of than the last run is refused, since it
would rewrite history out of order); a re-run at the same as_of replaces that run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from kequn.errors import InputError
from kequn.segments.check import Catalog, check_rule
from kequn.segments.compile import compile_rule, compile_rules
from kequn.segments.definitions import Segment, load_segments
from kequn.segments.errors import RuleError, closest
from kequn.segments.nodes import Node
from kequn.segments.parser import parse_rule
from kequn.segments.timing import AsOf, resolve_as_of
from kequn.store import MEMBERSHIPS, SEGMENT_RUNS, SEGMENTS
from kequn.workspace import Workspace, WorkspaceLike, opened

__all__ = [
    "ApplyReport",
    "SegmentRun",
    "apply",
    "catalog_for",
    "count",
    "current_members",
    "evaluate",
    "flags",
    "history",
    "list_segments",
    "members",
    "migration",
    "overlap",
    "segment_definition",
    "show",
    "stored_segments",
]

RuleLike = str | Node | Segment


# --- compiling rules against a workspace --------------------------------------------------------


SCORE_TABLES = (
    "rfm_scores",
    "clv_scores",
    "churn_scores",
    "lifecycle_stages",
    "tag_values",
    "consents",  # consent.CHANNEL fields (kequn/privacy)
)
PREDICTION_TABLES = ("clv_scores", "churn_scores", "lifecycle_stages")


def _tables(workspace: Workspace) -> dict[str, ir.Table]:
    """The tables a rule reads (score tables only when they hold rows), each looked up once."""
    tables = {name: workspace.table(name) for name in ("customers", "orders", "events")}
    existing = set(workspace.con.list_tables())
    for name in SCORE_TABLES:
        if name in existing:
            t = workspace.table(name)
            if t.limit(1).count().execute():
                tables[name] = t
    return tables


def catalog_for(workspace: Workspace, tables: dict[str, ir.Table] | None = None) -> Catalog:
    """The fields this workspace's tables offer (extra imported columns included)."""
    tables = tables or _tables(workspace)
    schemas = {name: tables[name].schema() for name in ("customers", "orders", "events")}
    from kequn.tags.catalog import tag_fields  # tag.NAME fields (kequn/tags)

    tags, with_values = tag_fields(workspace, "tag_values" in tables)
    return Catalog.from_schemas(
        schemas,
        rfm="rfm_scores" in tables,
        predictions=frozenset(t for t in PREDICTION_TABLES if t in tables),
        tags=tags,
        tag_values=with_values,
    )


class _Context:
    """What compiling rules against one workspace needs, looked up once per call or apply."""

    def __init__(self, ws: Workspace, segments: Iterable[Segment] | None = None) -> None:
        self.ws = ws
        self.tables = _tables(ws)
        self.catalog = catalog_for(ws, self.tables)
        self.defined = {s.name: s.rule for s in segments or ()}
        self._stored: dict[str, str] | None = None

    def rule_of(self, name: str) -> str | None:
        """A segment's rule: the ones being defined first, then the stored ones."""
        if name in self.defined:
            return self.defined[name]
        if self._stored is None:
            self._stored = {}
            if "segments" in self.ws.con.list_tables():
                rows = self.ws.table("segments").select("name", "rule").to_pyarrow().to_pylist()
                self._stored = {r["name"]: r["rule"] for r in rows}
        return self._stored.get(name)

    def resolve(self, rule: RuleLike) -> tuple[Node, str | None, str | None]:
        """(parsed rule, its text, the segment name when a name or Segment was given)."""
        if isinstance(rule, Segment):
            return parse_rule(rule.rule), rule.rule, rule.name
        if isinstance(rule, Node):
            return rule, None, None
        if not isinstance(rule, str):
            raise InputError(f"expected a rule text, a segment name or a Segment, not {rule!r}")
        text = self.rule_of(rule)
        if text is not None:
            return parse_rule(text), text, rule
        return parse_rule(rule), rule, None

    def check(self, rule: RuleLike) -> Node:
        node, text, name = self.resolve(rule)
        try:
            return check_rule(node, self.catalog, text=text, lookup=self.rule_of, segment=name)
        except RuleError as exc:
            raise (exc.in_segment(name) if name else exc) from None

    @property
    def scheme(self) -> str:
        return str(self.ws.config.rfm.get("scheme", "intl"))

    def flags(self, rule: RuleLike, as_of: AsOf) -> ir.Table:
        checked = self.check(rule)
        return compile_rule(checked, self.tables, as_of, self.catalog, rfm_scheme=self.scheme)

    def flags_many(self, segments: Sequence[Segment], as_of: AsOf) -> ir.Table:
        """``customer_id`` and one boolean column per segment (``_s0``, ``_s1``, …)."""
        checked = {f"_s{i}": self.check(seg) for i, seg in enumerate(segments)}
        return compile_rules(checked, self.tables, as_of, self.catalog, rfm_scheme=self.scheme)


def flags(
    workspace: WorkspaceLike,
    rule: RuleLike,
    as_of: object = None,
    *,
    segments: Iterable[Segment] | None = None,
) -> ir.Table:
    """One row per customer: ``customer_id`` and ``member`` (true/false, never null).

    The expression is not executed; it is the single definition that counting, listing,
    exporting and (later) real-time checks of one customer all run.
    """
    with opened(workspace) as ws:
        moment = resolve_as_of(as_of, ws.config.timezone)
        return _Context(ws, segments).flags(rule, moment)


def members(
    workspace: WorkspaceLike,
    rule: RuleLike,
    as_of: object = None,
    *,
    segments: Iterable[Segment] | None = None,
) -> ir.Table:
    """The members as an Ibis table with one column, ``customer_id`` (not executed)."""
    f = flags(workspace, rule, as_of, segments=segments)
    return f.filter(f.member).select("customer_id")


def evaluate(
    workspace: WorkspaceLike,
    rule: RuleLike,
    as_of: object = None,
    *,
    segments: Iterable[Segment] | None = None,
) -> list[str]:
    """The ids of the customers a rule (text, parsed node, Segment or stored name) selects.

    ``segments`` are definitions that ``in segment 'name'`` may refer to besides the stored
    ones. Ids come back sorted, so results compare across runs and engines.
    """
    with opened(workspace) as ws:
        expr = members(ws, rule, as_of, segments=segments).order_by("customer_id")
        return [str(v) for v in expr.customer_id.to_pyarrow().to_pylist()]


def count(
    workspace: WorkspaceLike,
    rule: RuleLike,
    as_of: object = None,
    *,
    segments: Iterable[Segment] | None = None,
) -> int:
    """How many customers a rule selects (one query; the live count of a rule builder)."""
    with opened(workspace) as ws:
        return int(members(ws, rule, as_of, segments=segments).count().to_pyarrow().as_py())


# --- apply: definitions, runs and membership history ----------------------------------------------


@dataclass(frozen=True)
class SegmentRun:
    """One segment's evaluation by :func:`apply`."""

    segment: str
    as_of: datetime
    size: int
    entered: int
    exited: int


@dataclass(frozen=True)
class ApplyReport:
    as_of: datetime
    runs: tuple[SegmentRun, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "segments": [
                {
                    "segment": r.segment,
                    "size": r.size,
                    "entered": r.entered,
                    "exited": r.exited,
                }
                for r in self.runs
            ],
        }


def _now(ws: Workspace) -> datetime:
    return resolve_as_of(None, ws.config.timezone).end.replace(microsecond=0)


Notify = Callable[[Workspace, pa.Table], object]


def apply(
    workspace: WorkspaceLike,
    definitions: str | os.PathLike | Iterable[Segment],
    as_of: object = None,
    *,
    notify: Notify | None = None,
) -> ApplyReport:
    """Store the definitions, evaluate every one at ``as_of`` and record entries and exits.

    All writes happen in one transaction: an error in any segment leaves every table as it
    was. Rules are all checked before the first query runs.

    ``notify(ws, changes)`` is called inside that transaction with the entries and exits
    (columns ``segment``, ``customer_id``, ``kind`` = enter/exit, ``at``), so what it writes
    (e.g. trigger deliveries) commits or rolls back with the memberships. A segment's first
    evaluation is its baseline, not a wave of entries: it is left out.
    """
    with opened(workspace) as ws:
        if isinstance(definitions, str | os.PathLike):
            source = str(definitions)
            segs = load_segments(Path(definitions))
        else:
            source = "api"
            segs = list(definitions)
        if not segs:
            raise InputError("no segments to apply")
        con = ws.con
        moment = resolve_as_of(as_of, ws.config.timezone)
        label = moment.label
        names = [s.name for s in segs]
        evaluated = check_history_order(
            ws, names, label, "and would rewrite its history out of order"
        )
        context = _Context(ws, segs)
        # every segment in one query (each table scanned once), kept as a temporary table
        # that the history steps below read
        everything = context.flags_many(segs, moment)
        flag_table = f"_kequn_flags_{uuid.uuid4().hex[:12]}"
        flagged = con.create_table(flag_table, obj=everything, temp=True)
        member_sets = ibis.union(
            *(
                flagged.filter(flagged[f"_s{i}"]).select(
                    segment=ibis.literal(seg.name, type="string"), customer_id="customer_id"
                )
                for i, seg in enumerate(segs)
            ),
            distinct=False,
        )
        seen = _newest_row(ws, moment)
        try:
            return _record(ws, segs, member_sets, label, source, notify, evaluated, seen)
        finally:
            con.drop_table(flag_table, force=True)


def _newest_row(ws: Workspace, moment: AsOf) -> datetime | None:
    """The newest order or event an evaluation at ``moment`` sees: "against which data"."""
    parts = []
    for table, column in (("orders", "ordered_at"), ("events", "occurred_at")):
        t = ws.table(table)
        ts = t[column]
        end = ibis.literal(moment.end, type="timestamp")
        parts.append(t.filter(ts <= end if moment.inclusive else ts < end).select(at=ts))
    return ibis.union(*parts, distinct=False).at.max().to_pyarrow().as_py()


def check_history_order(
    ws: Workspace, names: Sequence[str], label: datetime, refusal: str
) -> set[str]:
    """The segments evaluated before; refuses an as_of earlier than a segment's last run.

    History moves forward: an earlier run would close intervals before they opened.
    ``refusal`` ends the message (what would go wrong for the caller).
    """
    runs = ws.table("segment_runs")
    last = (
        runs.filter(runs.segment.isin(list(names)))
        .group_by("segment")
        .aggregate(last=runs.as_of.max())
        .to_pyarrow()
        .to_pylist()
    )
    for row in last:
        if row["last"] is not None and row["last"] > label:
            raise InputError(
                f"segment {row['segment']!r} was last evaluated at {row['last']}; "
                f"as_of {label} is earlier {refusal}"
            )
    return {row["segment"] for row in last if row["last"] is not None}


def _record(
    ws: Workspace,
    segs: Sequence[Segment],
    member_sets: ir.Table,
    label: datetime,
    source: str,
    notify: Notify | None = None,
    evaluated: set[str] | frozenset[str] = frozenset(),
    data_as_of: datetime | None = None,
) -> ApplyReport:
    """Write the definitions, runs and membership intervals of one apply, in one transaction.

    ``member_sets`` holds the (segment, customer_id) pairs of this evaluation; ``data_as_of``
    the newest order or event it saw.
    """
    con = ws.con
    names = [s.name for s in segs]
    mem = ws.table("memberships")
    target = mem.schema()
    # one pass over all the segments: (segment, customer) pairs now vs the open intervals
    new = member_sets.select(
        segment=member_sets.segment.cast("string"), customer_id=member_sets.customer_id
    )
    old = mem.filter(mem.segment.isin(names))
    open_ = old.filter(old.exited_at.isnull())
    same = [open_.segment == new.segment, open_.customer_id == new.customer_id]
    history = old.filter(old.exited_at.notnull()).mutate(_change=ibis.literal("hist"))
    stay = open_.semi_join(new, same).mutate(_change=ibis.literal("stay"))
    leave = open_.anti_join(new, same)
    leave = leave.mutate(
        exited_at=ibis.literal(label, type="timestamp"),
        _change=ibis.ifelse(
            leave.entered_at >= ibis.literal(label, type="timestamp"), "drop", "leave"
        ),
    )
    enter = new.anti_join(
        open_, [new.segment == open_.segment, new.customer_id == open_.customer_id]
    )
    enter = enter.select(
        segment=enter.segment,
        customer_id=enter.customer_id,
        entered_at=ibis.literal(label, type="timestamp"),
        exited_at=ibis.null("timestamp"),
        _change=ibis.literal("enter"),
    )
    parts = []
    for part in (history, stay, leave, enter):
        typed = {c: part[c].cast(target[c]) for c in MEMBERSHIPS.names}
        parts.append(part.select(**typed, _change=part._change))
    combined = ibis.union(*parts, distinct=False)
    computed_at = _now(ws)
    temp = f"_kequn_memberships_{uuid.uuid4().hex[:12]}"
    with ws.store.transaction():
        staged = con.create_table(temp, obj=combined, temp=True)
        try:
            # entries and exits are read off the new intervals, so a re-run at the same
            # as_of reports the net change of that as_of, not the change since the first run
            kept = staged.filter(staged._change != "drop")
            at = ibis.literal(label, type="timestamp")
            counts = (
                kept.group_by("segment")
                .aggregate(
                    size=kept.exited_at.isnull().sum(),
                    entered=(kept.entered_at == at).sum(),
                    exited=(kept.exited_at == at).fill_null(False).sum(),
                )
                .to_pyarrow()
                .to_pylist()
            )
            if notify is not None and evaluated:
                moved = staged.filter(
                    staged.segment.isin(sorted(evaluated)) & staged._change.isin(["enter", "leave"])
                )
                changes = moved.select(
                    segment=moved.segment,
                    customer_id=moved.customer_id,
                    kind=ibis.ifelse(moved._change == "enter", "enter", "exit"),
                    at=ibis.literal(label, type="timestamp"),
                ).to_pyarrow()
                if changes.num_rows:
                    notify(ws, changes)
            ws.store.delete("memberships", segment=names)
            con.insert(
                "memberships",
                staged.filter(staged._change != "drop").select(*MEMBERSHIPS.names),
            )
        finally:
            con.drop_table(temp, force=True)
        tally = {r["segment"]: r for r in counts}
        result = tuple(
            SegmentRun(
                segment=s.name,
                as_of=label,
                size=int(tally.get(s.name, {}).get("size") or 0),
                entered=int(tally.get(s.name, {}).get("entered") or 0),
                exited=int(tally.get(s.name, {}).get("exited") or 0),
            )
            for s in segs
        )
        run_rows = ibis.memtable(
            [
                {
                    "segment": r.segment,
                    "as_of": r.as_of,
                    "size": r.size,
                    "entered": r.entered,
                    "exited": r.exited,
                    "computed_at": computed_at,
                    "data_as_of": data_as_of,
                }
                for r in result
            ],
            schema=SEGMENT_RUNS,
        )
        # a re-run at the same as_of replaces that run
        ws.store.delete("segment_runs", segment=names, as_of=label)
        con.insert("segment_runs", run_rows)
        ws.store.delete("segments", name=names)
        con.insert(
            "segments",
            ibis.memtable(
                [
                    {
                        "name": s.name,
                        "label_zh": s.label_zh,
                        "label_en": s.label_en,
                        "description": s.description,
                        "owner": s.owner,
                        "tags": json.dumps(list(s.tags), ensure_ascii=False),
                        "rule": s.rule,
                        "source": source,
                        "updated_at": computed_at,
                        "schedule": s.schedule or None,
                    }
                    for s in segs
                ],
                schema=SEGMENTS,
            ),
        )
    return ApplyReport(label, result)


# --- reading what apply stored -------------------------------------------------------------------


def _require(ws: Workspace, name: str) -> None:
    known = stored_names(ws)
    if name not in known:
        raise InputError(
            f"unknown segment {name!r}"
            + (closest(name, known) or ("; stored: " + ", ".join(known[:10]) if known else ""))
            + ("" if known else "; store segments with `kequn segment apply FILE`")
        )


def stored_names(workspace: Workspace) -> list[str]:
    t = workspace.table("segments")
    return [str(n) for n in t.order_by("name").name.to_pyarrow().to_pylist()]


def stored_segments(workspace: WorkspaceLike) -> list[Segment]:
    """Every stored definition, by name."""
    with opened(workspace) as ws:
        rows = ws.table("segments").order_by("name").to_pyarrow().to_pylist()
        return [
            Segment(
                name=r["name"],
                rule=r["rule"],
                label_zh=r["label_zh"] or "",
                label_en=r["label_en"] or "",
                description=r["description"] or "",
                owner=r["owner"] or "",
                tags=tuple(json.loads(r["tags"] or "[]")),
                schedule=r["schedule"] or "",
            )
            for r in rows
        ]


def segment_definition(workspace: WorkspaceLike, name: str) -> Segment:
    with opened(workspace) as ws:
        _require(ws, name)
        return next(s for s in stored_segments(ws) if s.name == name)


def current_members(workspace: WorkspaceLike, name: str) -> ir.Table:
    """The members found by the latest :func:`apply` of a segment (open intervals)."""
    with opened(workspace) as ws:
        _require(ws, name)
        m = ws.table("memberships")
        return m.filter(m.segment == name, m.exited_at.isnull()).select("customer_id")


def history(workspace: WorkspaceLike, name: str) -> list[dict[str, Any]]:
    """Size, entries and exits at each evaluation of a segment, oldest first."""
    with opened(workspace) as ws:
        _require(ws, name)
        r = ws.table("segment_runs")
        return (
            r.filter(r.segment == name)
            .order_by("as_of")
            .select("as_of", "size", "entered", "exited")
            .to_pyarrow()
            .to_pylist()
        )


def list_segments(workspace: WorkspaceLike, *, now: object = None) -> list[dict[str, Any]]:
    """Every stored segment with its latest size and the change since the run before.

    Freshness, so that a stale segment is never silent: ``evaluated_at`` (when the last run
    was computed), ``data_as_of`` (the newest order or event it saw), ``schedule``,
    ``next_refresh`` and ``freshness`` at ``now`` (default: the workspace's now):
    ``unscheduled``, ``never``, ``fresh``, ``due`` or ``missed``; ``missed`` is true when a
    scheduled refresh is overdue (see :mod:`kequn.segments.schedule`).
    """
    from kequn.segments.schedule import parse_schedule, refresh_state

    with opened(workspace) as ws:
        moment = resolve_as_of(now, ws.config.timezone).end
        runs = ws.table("segment_runs")
        ranked = runs.mutate(
            _n=ibis.row_number().over(group_by=runs.segment, order_by=ibis.desc(runs.as_of))
        )
        latest = ranked.filter(ranked._n == 0).select(
            segment="segment",
            as_of="as_of",
            size="size",
            evaluated_at="computed_at",
            data_as_of="data_as_of",
        )
        prev = ranked.filter(ranked._n == 1).select(_pseg="segment", previous="size")
        defs = ws.table("segments")
        table = (
            defs.left_join(latest, defs.name == latest.segment)
            .left_join(prev, defs.name == prev._pseg)
            .select(
                "name",
                "label_zh",
                "label_en",
                "owner",
                "tags",
                "as_of",
                "size",
                "previous",
                "evaluated_at",
                "data_as_of",
                "schedule",
            )
            .order_by("name")
        )
        out = []
        for row in table.to_pyarrow().to_pylist():
            row["tags"] = json.loads(row["tags"] or "[]")
            size, previous = row["size"], row["previous"]
            row["change"] = None if size is None or previous is None else size - previous
            plan = parse_schedule(row["schedule"]) if row["schedule"] else None
            row["next_refresh"], row["freshness"] = refresh_state(plan, row["as_of"], moment)
            row["missed"] = row["freshness"] == "missed"
            out.append(row)
        return out


def overlap(workspace: WorkspaceLike, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Pairwise overlap of current members: both, each size and the Jaccard index."""
    with opened(workspace) as ws:
        known = stored_names(ws)
        chosen = list(names) if names else known
        for name in chosen:
            _require(ws, name)
        m = ws.table("memberships")
        cur = m.filter(m.exited_at.isnull(), m.segment.isin(chosen)).select(
            "segment", "customer_id"
        )
        sizes = dict(
            (r["segment"], int(r["n"]))
            for r in cur.group_by("segment").aggregate(n=cur.count()).to_pyarrow().to_pylist()
        )
        a = cur.select(a="segment", cid="customer_id")
        b = cur.select(b="segment", cid2="customer_id")
        pairs = (
            a.join(b, (a.cid == b.cid2) & (a.a < b.b))
            .group_by(["a", "b"])
            .aggregate(both=ibis._.count())
            .to_pyarrow()
            .to_pylist()
        )
        both = {(p["a"], p["b"]): int(p["both"]) for p in pairs}
        out = []
        for i, x in enumerate(chosen):
            for y in chosen[i + 1 :]:
                key = (x, y) if x < y else (y, x)
                n = both.get(key, 0)
                sx, sy = sizes.get(x, 0), sizes.get(y, 0)
                union = sx + sy - n
                out.append(
                    {
                        "a": x,
                        "b": y,
                        "size_a": sx,
                        "size_b": sy,
                        "both": n,
                        "jaccard": (n / union) if union else 0.0,
                    }
                )
        return out


def _members_at(m: ir.Table, at: datetime) -> ir.Table:
    """(segment, customer_id) of the intervals that hold at instant ``at``."""
    stamp = ibis.literal(at, type="timestamp")
    return m.filter(m.entered_at <= stamp, m.exited_at.isnull() | (m.exited_at > stamp)).select(
        "segment", "customer_id"
    )


def migration(
    workspace: WorkspaceLike,
    start: object,
    end: object,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """How customers moved between segments from one evaluation time to another.

    Membership at an instant is read off the stored intervals (the state left by the latest
    :func:`apply` at or before it; a day is that day at 00:00, as apply records it). ``moves``
    holds one row per (from, to) pair with customers in both: ``from`` is a segment at
    ``start`` or None (in none of the chosen segments), ``to`` a segment at ``end`` or None.
    Segments may overlap, so a customer in two segments counts in each of their rows; a
    pair with from == to counts those who stayed.
    """
    with opened(workspace) as ws:
        known = stored_names(ws)
        chosen = list(dict.fromkeys(names)) if names else known
        for name in chosen:
            _require(ws, name)
        t0 = resolve_as_of(start, ws.config.timezone).label
        t1 = resolve_as_of(end, ws.config.timezone).label
        if t1 < t0:
            raise InputError(f"--to {t1} is before --from {t0}; put the earlier time first")
        m = ws.table("memberships")
        m = m.filter(m.segment.isin(chosen)) if chosen else m.filter(ibis.literal(False))
        before = _members_at(m, t0).rename(a="segment", ca="customer_id")
        after = _members_at(m, t1).rename(b="segment", cb="customer_id")
        pairs = (
            before.join(after, before.ca == after.cb)
            .group_by(["a", "b"])
            .aggregate(n=ibis._.count())
        )
        gone = (
            before.anti_join(after, before.ca == after.cb)
            .group_by("a")
            .aggregate(n=ibis._.count())
            .mutate(b=ibis.null("string"))
        )
        new = (
            after.anti_join(before, after.cb == before.ca)
            .group_by("b")
            .aggregate(n=ibis._.count())
            .mutate(a=ibis.null("string"))
        )
        cols = ("a", "b", "n")
        rows = ibis.union(
            pairs.select(*cols), gone.select(*cols), new.select(*cols), distinct=False
        )
        moves = rows.to_pyarrow().to_pylist()
        order = {name: i for i, name in enumerate(chosen)}
        moves.sort(key=lambda r: (order.get(r["a"], len(order)), order.get(r["b"], len(order))))
        size_rows = _sizes(before, "a", after, "b")
        return {
            "from": t0,
            "to": t1,
            "segments": chosen,
            "moves": [{"from": r["a"], "to": r["b"], "customers": int(r["n"])} for r in moves],
            "sizes": {
                n: {"from": size_rows[0].get(n, 0), "to": size_rows[1].get(n, 0)} for n in chosen
            },
        }


def _sizes(
    before: ir.Table, a: str, after: ir.Table, b: str
) -> tuple[dict[str, int], dict[str, int]]:
    out = []
    for table, col in ((before, a), (after, b)):
        rows = table.group_by(col).aggregate(n=ibis._.count()).to_pyarrow().to_pylist()
        out.append({r[col]: int(r["n"]) for r in rows})
    return out[0], out[1]


def header(workspace: WorkspaceLike, name: str) -> dict[str, Any]:
    """A stored segment's definition and latest evaluation: size, change, share."""
    with opened(workspace) as ws:
        seg = segment_definition(ws, name)
        runs = history(ws, name)
        latest = runs[-1] if runs else None
        previous = runs[-2]["size"] if len(runs) > 1 else None
        total = int(ws.table("customers").count().to_pyarrow().as_py())
        size = latest["size"] if latest else None
        return {
            "name": seg.name,
            "label_zh": seg.label_zh,
            "label_en": seg.label_en,
            "description": seg.description,
            "owner": seg.owner,
            "tags": list(seg.tags),
            "rule": seg.rule,
            "as_of": latest["as_of"] if latest else None,
            "size": size,
            "previous": previous,
            "change": None if size is None or previous is None else size - previous,
            "share": (size / total) if size is not None and total else None,
            "customers": total,
        }


def show(workspace: WorkspaceLike, name: str, *, sample: int = 10) -> dict[str, Any]:
    """A stored segment: definition, latest size and change, sample members, breakdowns."""
    with opened(workspace) as ws:
        out = header(ws, name)
        ids = current_members(ws, name)
        customers = ws.table("customers")
        picked = customers.semi_join(ids, customers.customer_id == ids.customer_id)
        cols = [c for c in ("customer_id", "name", "city", "channel") if c in customers.columns]
        rows = picked.select(*cols).order_by("customer_id").limit(sample).to_pyarrow()
        breakdown = {}
        for col in ("city", "channel", "gender"):
            if col in customers.columns:
                top = (
                    picked.group_by(col)
                    .aggregate(n=picked.count())
                    .order_by([ibis.desc("n"), col])
                    .limit(5)
                    .to_pyarrow()
                    .to_pylist()
                )
                breakdown[col] = [{"value": r[col], "customers": int(r["n"])} for r in top]
        return {
            **out,
            "sample": rows.to_pylist(),
            "breakdown": breakdown,
        }
