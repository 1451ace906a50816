"""The compiler: a checked rule → one Ibis expression, ``customer_id`` and ``member``.

Every aggregate over orders is computed in *one* ``GROUP BY customer_id`` over the orders
table (each aggregate with its own ``FILTER (WHERE …)`` for its window, its returns setting
and its ``where``), likewise for events; the per-customer results are left-joined to the
customers, so a customer with no orders or events is still there, with count 0.
Sequences (``count(A then [no] B within N days)``) are counted over an as-of join of the two
steps (one per pair of steps, shared by every sequence over them), or over a range join when
both steps read the same table. :func:`compile_rules` puts many rules in one query.

Two-valued logic: every condition is filled with false where SQL would give NULL, so
``member`` is never NULL and a rule and its negation split the customers in two. ``!=``,
``not in``, ``not between``, ``not contains`` are comparisons too: false when the value is
missing (``not (city = 'x')`` is the way to include customers without a city).

Dispatch is by node type and fails loudly (``TypeError``) on a node it does not know; no SQL
text is ever assembled from rule text.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import ibis
import ibis.expr.types as ir

from kequn.segments.check import (
    COMPUTED,
    CONSENT_CHANNELS,
    JSON_COLUMNS,
    PREDICTED,
    RFM_FIELDS,
    SOURCE_TABLE,
    TAG_HEADS,
    Catalog,
    _Checker,
    parse_temporal,
)
from kequn.segments.nodes import (
    Aggregate,
    And,
    Between,
    Compare,
    Const,
    Field,
    InList,
    InSegment,
    IsNull,
    Last,
    Literal,
    Node,
    Not,
    Or,
    Rule,
    TextMatch,
    Then,
    Value,
    Window,
    WindowBetween,
)
from kequn.segments.timing import AsOf, window_bounds

__all__ = ["compile_rule", "compile_rules"]

_OPS: dict[str, Callable[[ir.Value, object], ir.BooleanValue]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TIME_COLUMN = {"orders": "ordered_at", "events": "occurred_at"}
_ZERO_WHEN_EMPTY = ("count", "count_distinct", "sum")


def compile_rule(
    rule: Rule,
    tables: Mapping[str, ir.Table],
    as_of: AsOf,
    catalog: Catalog,
    *,
    rfm_scheme: str = "intl",
    asof_join: bool | None = None,
) -> ir.Table:
    """One row per customer: ``customer_id`` and ``member`` (boolean, never null).

    ``rule`` must have been through :func:`kequn.segments.check.check_rule` (segment
    references expanded); ``tables`` maps customers, orders, events (and rfm_scores when
    RFM fields are used) to Ibis tables. ``asof_join`` says whether sequences over two tables
    may use an as-of join (default: on the backends in ``ASOF_BACKENDS``); without it, a
    range join computes the same.
    """
    return _Compiler(tables, catalog, as_of, rfm_scheme, asof_join).build({"member": rule})


def compile_rules(
    rules: Mapping[str, Rule],
    tables: Mapping[str, ir.Table],
    as_of: AsOf,
    catalog: Catalog,
    *,
    rfm_scheme: str = "intl",
    asof_join: bool | None = None,
    as_of_param: ir.TimestampScalar | None = None,
    values: Mapping[str, Value] | None = None,
) -> ir.Table:
    """Many checked rules in one query: ``customer_id`` and one boolean column per name.

    All aggregates of all rules over one table share its single ``GROUP BY`` (an aggregate
    used by several rules is computed once), so evaluating 50 segments reads each table once
    instead of 50 times. ``values`` adds a column per name with the value of a customer-level
    operand (a field or an aggregate, JSON as its text), computed by the same expressions the
    rules compare: what a why-trace shows next to each condition.
    """
    if "customer_id" in rules or (values and "customer_id" in values):
        raise ValueError("'customer_id' cannot name a rule column")
    compiler = _Compiler(tables, catalog, as_of, rfm_scheme, asof_join, as_of_param)
    return compiler.build(rules, values)


@dataclass(frozen=True)
class _Rows:
    """The row context of a ``where`` filter or an aggregated field."""

    table: ir.Table
    name: str  # orders or events


def _walk(node: object) -> Iterator[Node]:
    if isinstance(node, Node):
        yield node
        for value in vars(node).values():
            if isinstance(value, tuple):
                for item in value:
                    yield from _walk(item)
            else:
                yield from _walk(value)


class _Compiler:
    def __init__(
        self,
        tables: Mapping[str, ir.Table],
        catalog: Catalog,
        as_of: AsOf,
        scheme: str,
        asof_join: bool | None = None,
        as_of_param: ir.TimestampScalar | None = None,
    ) -> None:
        self.tables = tables
        self.catalog = catalog
        self.as_of = as_of
        if as_of_param is not None and not as_of.inclusive:
            raise ValueError("as_of_param needs an instant as_of (inclusive end)")
        self.param = as_of_param
        self.scheme = scheme
        self.types = _Checker(catalog, None, None, (), {})
        self.columns: dict[Aggregate, ir.Value] = {}
        self.computed: dict[str, ir.Value] = {}
        self.asof_join = _has_asof_join(tables) if asof_join is None else asof_join
        self.backend = _backend_name(tables)

    # --- the query ----------------------------------------------------------------------------

    def build(
        self, rules: Mapping[str, Rule], values: Mapping[str, Value] | None = None
    ) -> ir.Table:
        values = values or {}
        c = self.tables["customers"]
        self.c = c
        nodes = [n for item in (*rules.values(), *values.values()) for n in _walk(item)]
        found = list(dict.fromkeys(n for n in nodes if isinstance(n, Aggregate)))
        aggs = [a for a in found if a.then is None]
        sequences = [a for a in found if a.then is not None]
        names = {n.path[0] for n in nodes if isinstance(n, Field) and len(n.path) == 1}
        joins: list[tuple[ir.Table, ir.BooleanValue]] = []
        for table in ("orders", "events"):
            mine = [a for a in aggs if SOURCE_TABLE[a.source] == table]
            summary = table == "orders" and bool(names & set(COMPUTED))
            if mine or summary:
                grouped = self.group(table, mine, summary)
                joins.append((grouped, c.customer_id == grouped._key))
        chains: dict[tuple, list[Aggregate]] = {}
        for i, seq in enumerate(sequences):
            assert seq.then is not None
            if not self.asof_join or SOURCE_TABLE[seq.source] == SOURCE_TABLE[seq.then.source]:
                counted = self.sequence(seq, i)
                joins.append((counted, c.customer_id == counted[f"_seq{i}_key"]))
            else:
                key = (seq.source, seq.where, seq.then.source, seq.then.where)
                chains.setdefault(key, []).append(seq)
        for i, group in enumerate(chains.values()):
            counted = self.next_rows(group, i)
            joins.append((counted, c.customer_id == counted[f"_next{i}_key"]))
        if names & set(RFM_FIELDS):
            joins.append(self.rfm())
        for table in dict.fromkeys(PREDICTED[n][0] for n in sorted(names & set(PREDICTED))):
            joins.append(self.predicted(table))
        tag_names = sorted(
            {n.path[1] for n in nodes if isinstance(n, Field) and _is_tag(n, self.catalog)}
        )
        if tag_names:
            joins.append(self.tag_values(tag_names))
        consent = sorted(
            {n.path[1] for n in nodes if isinstance(n, Field) and _is_consent(n, self.catalog)}
        )
        if consent:
            found_consents = self.consents(consent)
            if found_consents is not None:
                joins.append(found_consents)
        exprs = {name: self.rule(rule) for name, rule in rules.items()}
        for name, node in values.items():
            value = self.value(node, None)
            exprs[name] = value.cast("string") if self.kind(node, None) == "json" else value
        joined = c
        for right, pred in joins:
            joined = joined.left_join(right, pred)
        return joined.select(customer_id=c.customer_id, **exprs)

    # --- as_of in SQL: literals, or expressions over the as_of parameter ------------------------

    def end(self) -> ir.TimestampValue:
        return self.param if self.param is not None else ibis.literal(self.as_of.end)

    def up_to(self, ts: ir.TimestampValue) -> ir.BooleanValue:
        """Rows dated at or before as_of (a day as_of: before the next day starts)."""
        return ts <= self.end() if self.as_of.inclusive else ts < self.end()

    def day(self) -> ir.DateValue:
        if self.param is not None:
            return self.param.date()
        return ibis.literal(self.as_of.day, type="date")

    def in_window(self, ts: ir.TimestampValue, window: Window) -> ir.BooleanValue:
        """``ts`` inside ``window`` at as_of; see :func:`window_bounds` for the edges.

        With the parameter, calendar arithmetic happens in SQL (``- INTERVAL n MONTH``
        clamps to the month's end as :func:`~kequn.segments.timing.add_months` does), so
        one compiled query serves every as_of.
        """
        if self.param is None:
            bounds = window_bounds(window, self.as_of)
            cond = ts <= bounds.end if bounds.end_inclusive else ts < bounds.end
            if bounds.start is not None:
                cond = cond & (ts >= ibis.literal(bounds.start))
            return cond
        cond = ts <= self.param
        if isinstance(window, Last):
            step = {"day": (1, "days"), "week": (7, "days"), "month": (1, "months")}
            step["year"] = (12, "months")
            size, unit = step[window.unit]
            cond = cond & (ts >= self.param - ibis.interval(**{unit: size * window.n}))
        elif isinstance(window, WindowBetween):
            start = datetime.combine(window.start, time())
            end = datetime.combine(window.end + timedelta(days=1), time())
            cond = cond & (ts >= ibis.literal(start)) & (ts < ibis.literal(end))
        return cond

    def earliest(self, windows: list[Window]) -> ir.TimestampValue | None:
        """The earliest window start, to read fewer rows; None when some window is unbounded."""
        if self.param is None:
            starts = [window_bounds(w, self.as_of).start for w in windows]
            if not starts or any(s is None for s in starts):
                return None
            return ibis.literal(min(starts))  # type: ignore[type-var]
        exprs: dict[object, ir.TimestampValue] = {}
        for w in windows:
            if isinstance(w, Last):
                days = {"day": 1, "week": 7}.get(w.unit)
                if days is not None:
                    key: object = ("days", days * w.n)
                else:
                    key = ("months", w.n * (12 if w.unit == "year" else 1))
                exprs[key] = self.param - ibis.interval(**{key[0]: key[1]})
            elif isinstance(w, WindowBetween):
                key = w.start
                exprs[key] = ibis.literal(datetime.combine(w.start, time()))
            else:
                return None
        if not exprs:
            return None
        values = list(exprs.values())
        return values[0] if len(values) == 1 else ibis.least(*values)

    def group(self, table: str, aggs: list[Aggregate], summary: bool) -> ir.Table:
        rows = self.tables[table]
        ts = rows[_TIME_COLUMN[table]]
        keep = self.up_to(ts)
        earliest = self.earliest([a.window for a in aggs])
        if not summary and earliest is not None:
            keep = keep & (ts >= earliest)
        rows = rows.filter(keep)
        ctx = _Rows(rows, table)
        metrics: dict[str, ir.Value] = {}
        for i, agg in enumerate(aggs):
            metrics[f"_{table}_{i}"] = self.aggregate_expr(agg, ctx)
        if summary:
            purchase = ~rows.is_return.fill_null(False)
            metrics["_first_at"] = rows.ordered_at.min(where=purchase)
            metrics["_last_at"] = rows.ordered_at.max(where=purchase)
        grouped = rows.group_by(_key=rows.customer_id).aggregate(**metrics)
        for i, agg in enumerate(aggs):
            value = grouped[f"_{table}_{i}"]
            if agg.func in _ZERO_WHEN_EMPTY:
                value = value.fill_null(0)
            self.columns[agg] = value
        if summary:
            day = self.day()
            self.computed["days_since_last_order"] = day.delta(grouped._last_at.date(), unit="day")
            self.computed["days_since_first_order"] = day.delta(
                grouped._first_at.date(), unit="day"
            )
        return grouped

    def steps(self, source: str, where: Rule | None, prefix: str) -> ir.Table:
        """The rows of one sequence step up to as_of: key, time and id, columns prefixed."""
        table = SOURCE_TABLE[source]
        rows = self.tables[table]
        ts = rows[_TIME_COLUMN[table]]
        cond = self.up_to(ts)
        if source in ("orders", "returns"):
            is_return = rows.is_return.fill_null(False)
            cond = cond & (is_return if source == "returns" else ~is_return)
        if where is not None:
            cond = cond & self.rule(where, _Rows(rows, table))
        rows = rows.filter(cond)
        ident = "order_id" if table == "orders" else "event_id"
        return rows.select(
            **{f"{prefix}cid": rows.customer_id, f"{prefix}ts": ts, f"{prefix}id": rows[ident]}
        )

    def next_rows(self, group: list[Aggregate], i: int) -> ir.Table:
        """Sequences whose steps read different tables, all with the same two steps: one
        as-of join finds, for each row of A, the first row of B at or after it, and each
        sequence is a filtered count over that (its window, its gap, ``no`` or not) in one
        ``GROUP BY``. Same meaning as :meth:`sequence`: some B lies in [a, a + gap] exactly
        when the first B at or after a does."""
        head = group[0]
        assert head.then is not None
        first = self.steps(head.source, head.where, "_a")
        earliest = self.earliest([a.window for a in group])
        if earliest is not None:
            first = first.filter(first._ats >= earliest)
        second = self.steps(head.then.source, head.then.where, "_b")
        joined = first.asof_join(
            second, on=first._ats <= second._bts, predicates=first._acid == second._bcid
        )
        end = self.end()
        metrics = {}
        for j, agg in enumerate(group):
            then = agg.then
            assert then is not None
            ts = joined._ats
            cond = self.in_window(ts, agg.window)
            reach = ts + ibis.interval(**_interval(then))
            hit = (joined._bts <= reach).fill_null(False)
            if then.negated:
                passed = reach <= end if self.as_of.inclusive else reach < end
                cond = cond & ~hit & passed
            else:
                cond = cond & hit
            metrics[f"_next{i}_{j}"] = joined._acid.count(where=cond)
        counted = joined.group_by(**{f"_next{i}_key": joined._acid}).aggregate(**metrics)
        for j, agg in enumerate(group):
            self.columns[agg] = counted[f"_next{i}_{j}"].fill_null(0)
        return counted

    def sequence(self, agg: Aggregate, i: int) -> ir.Table:
        """``count(A then [no] B within gap, window)`` per customer, as a range join.

        A row of A (in the window) is followed when the same customer has a row of B with
        ``a.ts <= b.ts <= a.ts + gap`` that is not the same row; ``then no`` counts the rows of
        A with no such B whose follow-up period ``a.ts + gap`` has passed by as_of (before
        that, the answer is not known yet). B rows after as_of are never seen. Used when both
        steps read the same table (a row must not follow itself, which an as-of join cannot
        tell); otherwise :meth:`next_rows`.
        """
        then = agg.then
        assert then is not None
        first = self.steps(agg.source, agg.where, "_a")
        first = first.filter(self.in_window(first._ats, agg.window))
        second = self.steps(then.source, then.where, "_b")
        reach = first._ats + ibis.interval(**_interval(then))
        preds = [first._acid == second._bcid, second._bts >= first._ats, second._bts <= reach]
        if SOURCE_TABLE[agg.source] == SOURCE_TABLE[then.source]:
            preds.append(second._bid != first._aid)  # a row does not follow itself
        if then.negated:
            passed = self.up_to(reach)
            matched = first.filter(passed).anti_join(second, preds)
        else:
            matched = first.semi_join(second, preds)
        key = f"_seq{i}_key"
        counted = matched.group_by(**{key: matched._acid}).aggregate(
            **{f"_seq{i}": matched.count()}
        )
        self.columns[agg] = counted[f"_seq{i}"].fill_null(0)
        return counted

    def rfm(self) -> tuple[ir.Table, ir.BooleanValue]:
        """The latest stored RFM run at or before the as_of day, for the workspace's scheme."""
        r = self.tables["rfm_scores"]
        r = r.filter(r.as_of <= self.day(), r.scheme == self.scheme)
        r = r.filter(r.as_of == r.as_of.max())
        r = r.select(_rkey=r.customer_id, **{f"_{k}": r[k] for k in RFM_FIELDS})
        for k in RFM_FIELDS:
            self.computed[k] = r[f"_{k}"]
        return r, self.c.customer_id == r._rkey

    def predicted(self, table: str) -> tuple[ir.Table, ir.BooleanValue]:
        """Each customer's latest stored prediction at or before as_of (newest run wins)."""
        p = self.tables[table]
        p = p.filter(self.up_to(p.as_of))
        latest = ibis.row_number().over(
            group_by=p.customer_id, order_by=[ibis.desc(p.as_of), ibis.desc(p.computed_at)]
        )
        p = p.mutate(_rank=latest).filter(ibis._._rank == 0)
        fields = [f for f, (t, _) in PREDICTED.items() if t == table]
        key = f"_{table}_key"
        p = p.select(**{key: p.customer_id}, **{f"_{f}": p[f] for f in fields})
        for f in fields:
            self.computed[f] = p[f"_{f}"]
        return p, self.c.customer_id == p[key]

    def tag_values(self, names: list[str]) -> tuple[ir.Table, ir.BooleanValue]:
        """Each customer's latest stored value of each tag at or before as_of, one column per
        tag in one ``GROUP BY``. Values are stored as changes (kequn/tags), so the latest row
        is the value then; a NULL row is a value that was lost."""
        t = self.tables["tag_values"]
        t = t.filter(t.tag.isin(names), self.up_to(t.as_of))
        latest = ibis.row_number().over(
            group_by=[t.customer_id, t.tag], order_by=[ibis.desc(t.as_of), ibis.desc(t.computed_at)]
        )
        t = t.mutate(_rank=latest).filter(ibis._._rank == 0)
        metrics: dict[str, ir.Value] = {}
        for i, name in enumerate(names):
            mine = t.tag == name
            kind = self.catalog.tags.get(name)
            if kind == "flag":
                metrics[f"_tag{i}"] = t.number.max(where=mine) > 0
            elif kind in ("number", "score"):
                metrics[f"_tag{i}"] = t.number.max(where=mine)
            else:
                metrics[f"_tag{i}"] = t.value.max(where=mine)
        grouped = t.group_by(_tag_key=t.customer_id).aggregate(**metrics)
        for i, name in enumerate(names):
            self.computed[f"tag.{name}"] = grouped[f"_tag{i}"]
        return grouped, self.c.customer_id == grouped._tag_key

    def consents(self, channels: list[str]) -> tuple[ir.Table, ir.BooleanValue] | None:
        """Each customer's latest consent status per channel at or before as_of (kequn/privacy);
        NULL where none is recorded, and for everyone while the workspace has none."""
        t = self.tables.get("consents")
        if t is None:
            for ch in channels:
                self.computed[f"consent.{ch}"] = ibis.null().cast("string")
            return None
        t = t.filter(t.channel.isin(channels), self.up_to(t.at))
        latest = ibis.row_number().over(
            group_by=[t.customer_id, t.channel],
            order_by=[ibis.desc(t.at), ibis.desc(t.recorded_at)],
        )
        t = t.mutate(_rank=latest).filter(ibis._._rank == 0)
        metrics = {f"_consent_{ch}": t.status.max(where=t.channel == ch) for ch in channels}
        grouped = t.group_by(_consent_key=t.customer_id).aggregate(**metrics)
        for ch in channels:
            self.computed[f"consent.{ch}"] = grouped[f"_consent_{ch}"]
        return grouped, self.c.customer_id == grouped._consent_key

    def aggregate_expr(self, agg: Aggregate, ctx: _Rows) -> ir.Value:
        rows = ctx.table
        ts = rows[_TIME_COLUMN[ctx.name]]
        cond = self.in_window(ts, agg.window)
        if agg.source in ("orders", "returns"):
            is_return = rows.is_return.fill_null(False)
            cond = cond & (is_return if agg.source == "returns" else ~is_return)
        if agg.where is not None:
            cond = cond & self.rule(agg.where, ctx)
        if agg.func == "count":
            return rows.customer_id.count(where=cond)
        assert agg.field is not None  # the checker requires a field for the others
        raw = self.field(agg.field, ctx)
        kind = self.types.field(agg.field, agg.source)
        if agg.func == "count_distinct":
            if kind == "json":
                text = raw.cast("string")
                return text.nunique(where=cond & (text != "null"))
            return raw.nunique(where=cond)
        if kind == "json":
            raw = raw.unwrap_as("float64")
        method = {"sum": "sum", "avg": "mean", "min": "min", "max": "max"}.get(agg.func)
        if method is None:
            raise TypeError(f"unknown aggregate {agg.func!r}")
        return getattr(raw, method)(where=cond)

    # --- rules --------------------------------------------------------------------------------

    def rule(self, node: Rule, ctx: _Rows | None = None) -> ir.BooleanValue:
        """A boolean expression that is never null."""
        if isinstance(node, And):
            parts = [self.rule(i, ctx) for i in node.items]
            out = parts[0]
            for p in parts[1:]:
                out = out & p
            return out
        if isinstance(node, Or):
            parts = [self.rule(i, ctx) for i in node.items]
            out = parts[0]
            for p in parts[1:]:
                out = out | p
            return out
        if isinstance(node, Not):
            return ~self.rule(node.item, ctx)
        if isinstance(node, Const):
            return ibis.literal(node.value, type="boolean")
        if isinstance(node, Compare):
            left, (right,) = self.operands(node.left, ctx, (node.right,))
            return _OPS[node.op](left, right).fill_null(False)
        if isinstance(node, InList):
            left, values = self.operands(node.left, ctx, node.values)
            test = left.isin(values)
            return (~test if node.negated else test).fill_null(False)
        if isinstance(node, Between):
            left, (low, high) = self.operands(node.left, ctx, (node.low, node.high))
            test = left.between(low, high)
            return (~test if node.negated else test).fill_null(False)
        if isinstance(node, TextMatch):
            left, (value,) = self.operands(node.left, ctx, (node.value,))
            method = {"contains": "contains", "starts_with": "startswith", "ends_with": "endswith"}
            test = getattr(left, method[node.op])(value)
            return (~test if node.negated else test).fill_null(False)
        if isinstance(node, IsNull):
            value = self.value(node.left, ctx)
            if self.kind(node.left, ctx) == "json":
                test = value.isnull() | (value.cast("string") == "null")
            else:
                test = value.isnull()
            return ~test if node.negated else test
        if isinstance(node, InSegment):
            raise TypeError(f"segment {node.name!r} was not expanded; check the rule first")
        raise TypeError(f"cannot compile a {type(node).__name__} node")

    # --- values -------------------------------------------------------------------------------

    def kind(self, node: Value, ctx: _Rows | None) -> str:
        return self.types.value(node, None if ctx is None else _source_of(ctx))

    def value(self, node: Value, ctx: _Rows | None) -> ir.Value:
        if isinstance(node, Aggregate):
            return self.columns[node]
        if isinstance(node, Field):
            return self.field(node, ctx)
        raise TypeError(f"cannot compile a {type(node).__name__} value")

    def field(self, node: Field, ctx: _Rows | None) -> ir.Value:
        head, rest = node.path[0], node.path[1:]
        table = self.c if ctx is None else ctx.table
        if ctx is None and head in self.computed and not rest:
            return self.computed[head]
        if ctx is None and _is_tag(node, self.catalog):
            return self.computed[f"tag.{rest[0]}"]
        if ctx is None and _is_consent(node, self.catalog):
            return self.computed[f"consent.{rest[0]}"]
        column = table[head]
        json_cols = JSON_COLUMNS["customers" if ctx is None else ctx.name]
        if head in json_cols:
            if self.backend in JSON_PATH_BACKENDS:
                return JSON_PATH_BACKENDS[self.backend](column, rest)
            value = column.cast("json")
            for key in rest:
                value = value[key]
            return value
        return column

    def operands(
        self, node: Value, ctx: _Rows | None, literals: tuple[Literal, ...]
    ) -> tuple[ir.Value, list[object]]:
        """The left value, converted to what the literals compare with, and the literals."""
        kind = self.kind(node, ctx)
        expr = self.value(node, ctx)
        values = [lit.value for lit in literals]
        if kind == "json":
            first = values[0]
            if isinstance(first, bool):
                expr = expr.unwrap_as("boolean")
            elif isinstance(first, int | float):
                expr = expr.unwrap_as("float64")
            else:
                expr = expr.str
            return expr, values
        if kind in ("date", "timestamp"):
            moments = [parse_temporal(str(v)) for v in values]
            if kind == "date" or all(not isinstance(m, datetime) for m in moments):
                if kind == "timestamp":
                    expr = expr.date()
                days = [m.date() if isinstance(m, datetime) else m for m in moments]
                return expr, [ibis.literal(d, type="date") for d in days]
            stamps = [
                m if isinstance(m, datetime) else datetime.combine(m, time())  # type: ignore[arg-type]
                for m in moments
            ]
            return expr, [ibis.literal(s, type="timestamp") for s in stamps]
        return expr, values


# backends whose as-of join Ibis compiles; elsewhere sequences use the range join
ASOF_BACKENDS = {"duckdb"}


def _spark_json_path(column: ir.Value, keys: tuple[str, ...]) -> ir.Value:
    from kequn.spark import json_path

    return json_path(column, keys)


# backends where Ibis's JSON indexing does not give JSON back (PySpark's get_json_object
# returns strings unquoted): a JSON path there is read by a function giving the same values
JSON_PATH_BACKENDS: dict[str, Callable[[ir.Value, tuple[str, ...]], ir.Value]] = {
    "pyspark": _spark_json_path
}


def _backend_name(tables: Mapping[str, ir.Table]) -> str | None:
    try:
        return tables["customers"]._find_backend().name
    except Exception:  # an unbound table: no backend to ask
        return None


def _has_asof_join(tables: Mapping[str, ir.Table]) -> bool:
    return _backend_name(tables) in ASOF_BACKENDS


def _interval(then: Then) -> dict[str, int]:
    if then.unit == "week":
        return {"days": 7 * then.n}
    if then.unit in ("minute", "hour", "day"):
        return {f"{then.unit}s": then.n}
    raise TypeError(f"unknown sequence unit {then.unit!r}")


def _is_tag(node: Field, catalog: Catalog) -> bool:
    """``tag.NAME`` (a customers column named ``tag`` wins, as in the checker)."""
    head = node.path[0]
    return len(node.path) == 2 and head in TAG_HEADS and head not in catalog.customers


def _is_consent(node: Field, catalog: Catalog) -> bool:
    """``consent.CHANNEL`` (a customers column named ``consent`` wins, as in the checker)."""
    return (
        len(node.path) == 2
        and node.path[0] == "consent"
        and node.path[1] in CONSENT_CHANNELS
        and "consent" not in catalog.customers
    )


def _source_of(ctx: _Rows) -> str:
    # the checker types row fields by table; any source of that table will do
    return "orders" if ctx.name == "orders" else "events"
