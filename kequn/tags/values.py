"""Tag values: refresh, import, the latest value at an as_of, health, and what is due.

Values are stored as **changes**: a refresh computes every customer's value in SQL, compares
it with each customer's latest stored value (a full outer join) and appends a row only for
the customers whose value changed — a NULL row when a customer lost their value. The latest
row at or before as_of is therefore the value at as_of (as with predicted fields), history
costs one row per change, and a refresh restricted to a few customers (the real-time path)
writes the same rows a full refresh would for them. Each refresh adds one ``tag_runs`` row:
customers with a value, customers compared, customers changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError, closest
from kequn.tags.catalog import TagDef, stored_tags

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from kequn.asof import AsOf
    from kequn.workspace import Workspace, WorkspaceLike

__all__ = [
    "due_tag_refreshes",
    "import_tag_values",
    "latest_values",
    "refresh_tags",
    "tag_health",
    "tag_values",
]

_TRUE = {"true", "1", "yes", "y", "t", "是", "真"}
_FALSE = {"false", "0", "no", "n", "f", "否", "假"}


def _now(ws: Workspace, now: datetime | None) -> datetime:
    from kequn.act.outbox import _naive, workspace_now

    return workspace_now(ws) if now is None else _naive(ws, now)


def _as_of(ws: Workspace, as_of: object, now: datetime) -> AsOf:
    from kequn.asof import resolve_as_of

    return resolve_as_of(now if as_of is None else as_of, ws.config.timezone)


def latest_values(
    ws: Workspace, names: Sequence[str], as_of: AsOf, customers: Sequence[str] | None = None
) -> ir.Table:
    """``customer_id, tag, value, number``: each customer's latest value of each tag at or
    before as_of (customers whose latest row is a loss are left out)."""
    import ibis

    t = ws.table("tag_values")
    end = ibis.literal(as_of.end, type="timestamp")
    t = t.filter(t.tag.isin(list(names)), t.as_of <= end if as_of.inclusive else t.as_of < end)
    if customers is not None:
        ids = ibis.memtable({"_cid": [str(c) for c in customers]}, schema={"_cid": "string"})
        t = t.semi_join(ids, t.customer_id == ids._cid)
    rank = ibis.row_number().over(
        group_by=[t.customer_id, t.tag], order_by=[ibis.desc(t.as_of), ibis.desc(t.computed_at)]
    )
    t = t.mutate(_r=rank).filter(lambda x: x._r == 0)
    t = t.filter(t.value.notnull() | t.number.notnull())
    return t.select("customer_id", "tag", "value", "number")


def tag_values(
    workspace: WorkspaceLike, name: str, as_of: object = None, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """One tag's values at as_of (default: now), strongest number first."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        (tag,) = stored_tags(ws, [name])
        at = _as_of(ws, as_of, _now(ws, None))
        t = latest_values(ws, [tag.name], at)
        t = t.order_by([t.number.desc(), t.value, t.customer_id])
        if limit is not None:
            t = t.limit(limit)
        return t.select("customer_id", "value", "number").to_pyarrow().to_pylist()


# --- computing a tag ------------------------------------------------------------------------


def _quote(name: str) -> str:
    quote = "'" if "'" not in name else '"'
    return f"{quote}{name}{quote}"


def _number_expr(context, text: str, as_of: AsOf, name: str) -> ir.Table:
    """A value expression (a field or an aggregate) per customer, by the segment compiler:
    ``EXPR is null`` is checked as a rule and its left side compiled as a value."""
    from kequn.segments.check import _Checker, check_rule
    from kequn.segments.compile import _Compiler
    from kequn.segments.parser import parse_rule

    source = f"{text} is null"
    checked = check_rule(parse_rule(source), context.catalog, text=source, lookup=context.rule_of)
    kind = _Checker(context.catalog, None, None, (), {}).value(checked.left, None)
    if kind != "number":
        raise InputError(f"tag {name!r}: value {text!r} is {kind}, not a number")

    class _Values(_Compiler):
        def rule(self, node, ctx=None):  # the top node gives its value, not a condition
            if ctx is None and node is checked:
                return self.value(node.left, None).cast("float64")
            return super().rule(node, ctx)

    compiler = _Values(context.tables, context.catalog, as_of, context.scheme)
    return compiler.build({"number": checked})


def _compute(ws: Workspace, tag: TagDef, as_of: AsOf, customers: Sequence[str] | None):
    """``customer_id, value, number`` for every customer (or the ones given)."""
    import ibis

    from kequn.segments.compile import compile_rules
    from kequn.segments.engine import _Context
    from kequn.segments.errors import RuleError

    d = tag.definition
    if tag.source == "interest":
        from kequn.tags.interests import InterestSpec, interest_values

        return interest_values(ws, InterestSpec.parse(d["interest"], tag.name), as_of, customers)
    if tag.source == "score":
        from kequn.tags.score import ScoreSpec, behaviour_scores

        t = behaviour_scores(ws, ScoreSpec.parse(d["score"], tag.name), as_of)
        out = t.select("customer_id", value=t.level, number=t.score)
    else:
        context = _Context(ws)
        try:
            if tag.source == "segment" or tag.type == "flag":
                rule = d.get("rule") or f"in segment {_quote(d['segment'])}"
                flags = context.flags(rule, as_of)
                out = flags.select(
                    "customer_id",
                    value=flags.member.ifelse("true", "false"),
                    number=flags.member.cast("float64"),
                )
            elif tag.type == "category":
                cases = d["cases"]
                rules = {f"_c{i}": context.check(c["rule"]) for i, c in enumerate(cases)}
                flags = compile_rules(
                    rules, context.tables, as_of, context.catalog, rfm_scheme=context.scheme
                )
                value = ibis.literal(d.get("default"), type="string")
                for i in reversed(range(len(cases))):
                    value = flags[f"_c{i}"].ifelse(cases[i]["value"], value)
                out = flags.select(
                    "customer_id", value=value, number=ibis.literal(None, type="float64")
                )
            else:
                numbers = _number_expr(context, d["value"], as_of, tag.name)
                out = numbers.select(
                    "customer_id", value=ibis.literal(None, type="string"), number=numbers.number
                )
        except RuleError as exc:
            raise InputError(f"tag {tag.name!r}: {exc}") from None
    if customers is not None:
        ids = ibis.memtable({"_cid": [str(c) for c in customers]}, schema={"_cid": "string"})
        out = out.semi_join(ids, out.customer_id == ids._cid)
    return out


def _write(
    ws: Workspace,
    tag: str,
    new: ir.Table,
    as_of: AsOf,
    now: datetime,
    kind: str,
    customers: Sequence[str] | None = None,
    primary: str = "value",
) -> dict[str, Any]:
    """Append the changed values and the run row; returns the run's figures.

    Every change is written (so the stored number is exact), but ``changed`` counts only
    changes of the ``primary`` part — the text of flags, categories and score levels, the
    number of number tags — so an interest weight that decays or a score that drifts within
    its level is not counted as an unstable value.
    """
    import ibis
    import pyarrow as pa

    new = new.select(
        _nid=new.customer_id.cast("string"),
        _nv=new.value.cast("string"),
        _nn=new.number.cast("float64"),
    )
    new = new.filter(new._nv.notnull() | new._nn.notnull())
    old = latest_values(ws, [tag], as_of, customers)
    old = old.select(_oid=old.customer_id, _ov=old.value, _on=old.number)
    j = new.outer_join(old, new._nid == old._oid)
    same = j._nv.identical_to(j._ov) & j._nn.identical_to(j._on)
    at = as_of.label
    changed = j.filter(~same).select(
        customer_id=ibis.coalesce(j._nid, j._oid),
        tag=ibis.literal(tag, type="string"),
        value=j._nv,
        number=j._nn,
        as_of=ibis.literal(at, type="timestamp"),
        computed_at=ibis.literal(now, type="timestamp"),
    )
    rows = changed.to_pyarrow()
    moved = ~(j._nn.identical_to(j._on) if primary == "number" else j._nv.identical_to(j._ov))
    counts = (
        j.aggregate(valued=j._nid.count(), compared=j.count(), changed=moved.sum())
        .to_pyarrow()
        .to_pylist()[0]
    )
    run = {
        "tag": tag,
        "as_of": at,
        "computed_at": now,
        "kind": kind,
        "valued": int(counts["valued"] or 0),
        "compared": int(counts["compared"] or 0),
        "changed": int(counts["changed"] or 0),
        "written": rows.num_rows,
    }
    with ws.store.transaction():
        ws.store.append("tag_values", rows)
        ws.store.append("tag_runs", pa.Table.from_pylist([run]))
    return run


def _depends(tag: TagDef) -> set[str]:
    """Tags named by a rule tag's rules (refreshed first)."""
    from kequn.segments.check import TAG_HEADS
    from kequn.segments.compile import _walk
    from kequn.segments.nodes import Field
    from kequn.segments.parser import parse_rule

    d = tag.definition
    texts = [d["rule"]] if "rule" in d else [c["rule"] for c in d.get("cases", ())]
    if "value" in d:
        texts.append(f"{d['value']} is null")
    out: set[str] = set()
    for text in texts:
        for node in _walk(parse_rule(text)):
            if isinstance(node, Field) and len(node.path) == 2 and node.path[0] in TAG_HEADS:
                out.add(node.path[1])
    return out


def _ordered(tags: list[TagDef]) -> list[TagDef]:
    """Tags named by other tags' rules first (a cycle is refreshed in the order given)."""
    by_name = {t.name: t for t in tags}
    done: list[TagDef] = []
    seen: set[str] = set()

    def visit(tag: TagDef, stack: tuple[str, ...]) -> None:
        if tag.name in seen or tag.name in stack:
            return
        for dep in sorted(_depends(tag)):
            if dep in by_name:
                visit(by_name[dep], (*stack, tag.name))
        seen.add(tag.name)
        done.append(tag)

    for tag in tags:
        visit(tag, ())
    return done


def refresh_tags(
    workspace: WorkspaceLike,
    names: Sequence[str] | None = None,
    now: datetime | None = None,
    *,
    as_of: object = None,
    customers: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Recompute tags (default: every tag that is not imported) at as_of (default: now).

    ``customers`` restricts the refresh to those customers (the real-time path: the same SQL
    on fewer rows). Returns each tag's run: valued, compared, changed.
    """
    from kequn.workspace import opened

    with opened(workspace) as ws:
        when = _now(ws, now)
        at = _as_of(ws, as_of, when)
        tags = stored_tags(ws, names)
        if names is not None:
            imported = [t.name for t in tags if t.source == "import"]
            if imported:
                raise InputError(
                    f"tag {imported[0]!r} is imported; load new values with "
                    "`kequn tag import FILE` instead of refreshing it"
                )
        tags = [t for t in tags if t.source != "import"]
        kind = "full" if customers is None else "incremental"
        out: dict[str, dict[str, Any]] = {}
        for tag in _ordered(tags):
            new = _compute(ws, tag, at, customers)
            primary = "number" if tag.type == "number" else "value"
            out[tag.name] = _write(ws, tag.name, new, at, when, kind, customers, primary)
        return out


def due_tag_refreshes(workspace: WorkspaceLike, now: datetime | None = None) -> list[str]:
    """Scheduled tags whose last full refresh is at least one schedule period old (or that
    were never refreshed), in catalogue order; imported tags are never due."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        when = _now(ws, now)
        last = _last_runs(ws)
        due = []
        for tag in stored_tags(ws):
            if not tag.schedule or tag.source == "import":
                continue
            run = last.get(tag.name)
            if run is None or run["computed_at"] + tag.interval <= when:
                due.append(tag.name)
        return due


def _last_runs(ws: Workspace, kind: str = "full") -> dict[str, dict[str, Any]]:
    """The latest run of each tag (by computation time) and the number of runs."""
    import ibis

    r = ws.table("tag_runs")
    r = r.filter(r.kind == kind)
    order = ibis.row_number().over(
        group_by=r.tag, order_by=[ibis.desc(r.computed_at), ibis.desc(r.as_of)]
    )
    n = r.count().over(group_by=r.tag)
    r = r.mutate(_r=order, runs=n).filter(lambda t: t._r == 0).drop("_r")
    return {row["tag"]: row for row in r.to_pyarrow().to_pylist()}


# --- import ---------------------------------------------------------------------------------

_HEADERS = {
    "customer_id": ("customer_id", "客户id", "客户编号", "会员id", "用户id"),
    "tag": ("tag", "标签", "标签名"),
    "value": ("value", "值", "标签值"),
}


def _convert(tag: TagDef, raw: str | None, where: str) -> tuple[str | None, float | None]:
    text = (raw or "").strip()
    if text == "":
        return None, None
    if tag.type == "flag":
        low = text.lower()
        if low in _TRUE:
            return "true", 1.0
        if low in _FALSE:
            return "false", 0.0
        raise InputError(f"{where}: {text!r} is not a flag value; use true/false, 1/0 or 是/否")
    if tag.type in ("number", "score"):
        try:
            return None, float(text.replace(",", ""))
        except ValueError:
            raise InputError(f"{where}: {text!r} is not a number (tag {tag.name!r})") from None
    return text, None


def import_tag_values(
    workspace: WorkspaceLike,
    path: str | Path,
    *,
    as_of: object = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Load a CSV/Excel of ``customer_id, tag, value`` (Chinese headers too) for import tags.

    Each tag in the file gets a new snapshot: its values are the file's, and customers of
    that tag missing from the file lose their value. Unknown customer ids are skipped and
    counted.
    """
    import ibis
    import pyarrow as pa

    from kequn.ingest.readers import expand, open_source
    from kequn.workspace import opened

    (file,) = expand([path])
    source = open_source(file)
    lowered = {h.strip().lower(): h for h in source.headers}
    columns = {}
    for target, aliases in _HEADERS.items():
        found = next((lowered[a] for a in aliases if a in lowered), None)
        if found is None:
            raise InputError(
                f"{str(file)!r}: no {target!r} column (headers: {', '.join(source.headers)}); "
                "the file needs customer_id, tag and value"
            )
        columns[target] = found
    rows: list[dict[str, Any]] = []
    for batch in source.batches(None):
        data = batch.to_pydict()
        numbers = data.get("_row", range(1, batch.num_rows + 1))
        for i, n in enumerate(numbers):
            rows.append({k: data[col][i] for k, col in columns.items()} | {"_row": n})
    with opened(workspace) as ws:
        when = _now(ws, now)
        at = _as_of(ws, as_of, when)
        catalogue = {t.name: t for t in stored_tags(ws)}
        per_tag: dict[str, dict[str, tuple[str | None, float | None]]] = {}
        for r in rows:
            where = f"{str(file)!r} row {r['_row']}"
            name = (r["tag"] or "").strip()
            tag = catalogue.get(name)
            if tag is None:
                hint = closest(name, catalogue) or "; define it first with `kequn tag apply FILE`"
                raise InputError(f"{where}: unknown tag {name!r}{hint}")
            if tag.source != "import":
                raise InputError(
                    f"{where}: tag {name!r} is computed ({tag.source}); only tags with "
                    "source = 'import' take imported values"
                )
            cid = (r["customer_id"] or "").strip()
            if not cid:
                raise InputError(f"{where}: customer_id is empty")
            per_tag.setdefault(name, {})[cid] = _convert(tag, r["value"], where)
        c = ws.table("customers")
        known = set(c.select("customer_id").to_pyarrow().column(0).to_pylist())
        unknown = 0
        runs = {}
        for name, values in per_tag.items():
            kept = {cid: v for cid, v in values.items() if cid in known}
            unknown += len(values) - len(kept)
            table = pa.table(
                {
                    "customer_id": pa.array(list(kept), pa.string()),
                    "value": pa.array([v[0] for v in kept.values()], pa.string()),
                    "number": pa.array([v[1] for v in kept.values()], pa.float64()),
                }
            )
            primary = "number" if catalogue[name].type in ("number", "score") else "value"
            runs[name] = _write(ws, name, ibis.memtable(table), at, when, "import", None, primary)
        return {"file": str(file), "rows": len(rows), "unknown_customers": unknown, "tags": runs}


# --- health ---------------------------------------------------------------------------------


def tag_health(
    workspace: WorkspaceLike,
    names: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
    as_of: object = None,
) -> list[dict[str, Any]]:
    """Per tag: coverage, freshness and stability.

    * coverage — the share of customers with a value at as_of (default: now);
    * freshness — the age of the last refresh (full or import) at ``now`` against the
      schedule: ``fresh`` within one period, ``stale`` after, ``unscheduled``, ``never``;
    * stability — 1 − the share of values that changed at the last refresh (of the
      customers with a value before or after it; for score tags the level, for interest
      tags the category list); None after the first refresh.
    """
    import ibis

    from kequn.workspace import opened

    with opened(workspace) as ws:
        when = _now(ws, now)
        at = _as_of(ws, as_of, when)
        tags = stored_tags(ws, names)
        customers = int(ws.table("customers").count().execute())
        v = latest_values(ws, [t.name for t in tags], at)
        valued = {
            r["tag"]: int(r["n"])
            for r in v.group_by("tag").aggregate(n=v.count()).to_pyarrow().to_pylist()
        }
        r = ws.table("tag_runs")
        r = r.filter(r.kind.isin(["full", "import"]))
        order = ibis.row_number().over(
            group_by=r.tag, order_by=[ibis.desc(r.computed_at), ibis.desc(r.as_of)]
        )
        r = r.mutate(_r=order, runs=r.count().over(group_by=r.tag)).filter(lambda t: t._r == 0)
        last = {row["tag"]: row for row in r.to_pyarrow().to_pylist()}
        out = []
        for tag in tags:
            run = last.get(tag.name)
            interval = tag.interval
            age = None if run is None else (when - run["computed_at"]).total_seconds()
            if run is None:
                status = "never"
            elif interval is None:
                status = "unscheduled"
            else:
                status = "fresh" if age <= interval.total_seconds() else "stale"
            changed_share = None
            if run is not None and run["runs"] > 1 and run["compared"]:
                changed_share = run["changed"] / run["compared"]
            out.append(
                {
                    "tag": tag.name,
                    "type": tag.type,
                    "layer": tag.layer,
                    "source": tag.source,
                    "customers": customers,
                    "valued": valued.get(tag.name, 0),
                    "coverage": valued.get(tag.name, 0) / customers if customers else None,
                    "last_refresh": None if run is None else run["computed_at"],
                    "schedule": tag.schedule or None,
                    "age_hours": None if age is None else age / 3600,
                    "freshness": None
                    if age is None or interval is None
                    else age / interval.total_seconds(),
                    "status": status,
                    "changed": None if run is None else run["changed"],
                    "compared": None if run is None else run["compared"],
                    "changed_share": changed_share,
                    "stability": None if changed_share is None else 1 - changed_share,
                }
            )
        return out
