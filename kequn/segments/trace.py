"""Why-traces: for one customer, each condition of a rule with its actual value and result.

"Why is c01 in At Risk?" is answered by the same compiled rules that decide membership,
never by a second evaluator: every node of the rule tree (each ``and``/``or``/``not``, each
``in segment`` and each comparison) becomes its own named boolean column, and the value
each comparison reads (a field, an aggregate, a sequence count) a value column, all in one
:func:`~kequn.segments.compile.compile_rules` query over the tables restricted to that
customer. ``in segment`` references are shown as the referenced segment's own tree.

For a stored segment the trace also reads the membership history: the interval (if any)
that covered the as_of, i.e. what ``apply`` recorded then, next to what the rule gives on
today's data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ibis

from kequn.errors import InputError
from kequn.segments.check import check_rule
from kequn.segments.definitions import Segment
from kequn.segments.engine import RuleLike, _Context, stored_names
from kequn.segments.format import format_rule
from kequn.segments.nodes import (
    And,
    Between,
    Compare,
    Const,
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
from kequn.workspace import WorkspaceLike, opened

__all__ = ["Step", "Trace", "why"]

_LEAVES = (Compare, InList, Between, TextMatch, IsNull)
_KIND = {
    And: "and",
    Or: "or",
    Not: "not",
    Const: "const",
    InSegment: "segment",
    Compare: "compare",
    InList: "in",
    Between: "between",
    TextMatch: "text",
    IsNull: "is_null",
}


@dataclass(frozen=True)
class Step:
    """One node of a why-trace: the condition, whether it held, and for a comparison the
    operand, its actual value and the test it had to pass."""

    kind: str  # and, or, not, const, segment, compare, in, between, text, is_null
    text: str  # the condition as rule text
    held: bool
    operand: str | None = None  # the value compared, as rule text
    value: Any = None  # its actual value for this customer at as_of (None: missing)
    test: str | None = None  # what the value had to pass, e.g. ">= 4"
    field: str | None = None  # the field read, when the operand is one (for masking)
    children: tuple[Step, ...] = ()

    @property
    def needs(self) -> str | None:
        """For a comparison that failed, what would have made it hold."""
        return None if self.held or self.test is None else self.test

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "text": self.text, "held": self.held}
        if self.operand is not None:
            out.update(operand=self.operand, value=self.value, test=self.test, needs=self.needs)
        if self.kind == "segment":
            out["segment"] = self.text.removeprefix("in segment ").strip("'")
        if self.children:
            out["children"] = [c.as_dict() for c in self.children]
        return out

    def lines(self, depth: int = 0) -> list[str]:
        """The tree as indented text lines with ✓/✗ (what ``kequn segment why`` prints)."""
        mark = "✓" if self.held else "✗"
        pad = "  " * depth
        if self.operand is not None:
            shown = "null" if self.value is None else _show(self.value)
            note = f"needs {self.test}" if not self.held else self.test
            line = f"{pad}{mark} {self.operand} = {shown}  ({note})"
        elif self.kind in ("and", "or"):
            line = f"{pad}{mark} {'all' if self.kind == 'and' else 'any'} of:"
        elif self.kind == "not":
            line = f"{pad}{mark} not:"
        else:
            line = f"{pad}{mark} {self.text}"
        out = [line]
        for child in self.children:
            out.extend(child.lines(depth + 1))
        return out


@dataclass(frozen=True)
class Trace:
    """A why-trace of one customer against one rule at one as_of."""

    customer_id: str
    rule: str
    segment: str | None
    as_of: datetime
    member: bool
    root: Step
    recorded: dict[str, Any] | None = None  # stored segments: the membership history
    intervals: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "segment": self.segment,
            "rule": self.rule,
            "as_of": self.as_of,
            "member": self.member,
            "trace": self.root.as_dict(),
            "recorded": self.recorded,
            "intervals": self.intervals,
        }


@dataclass
class _Plan:
    """The nodes to compile, named ``_t0``, ``_t1``, … in tree order."""

    rules: dict[str, Node] = field(default_factory=dict)
    values: dict[str, Node] = field(default_factory=dict)


def _walk(node: Node, ctx: _Context, plan: _Plan) -> tuple[str, Node, list]:
    """Name a node and its children; returns (column, node, children) for :func:`_build`."""
    name = f"_t{len(plan.rules)}"
    plan.rules[name] = check_rule(node, ctx.catalog, lookup=ctx.rule_of)  # type: ignore[arg-type]
    children: list = []
    if isinstance(node, And | Or):
        children = [_walk(item, ctx, plan) for item in node.items]
    elif isinstance(node, Not):
        children = [_walk(node.item, ctx, plan)]
    elif isinstance(node, InSegment):
        text = ctx.rule_of(node.name)
        assert text is not None  # the whole rule was checked first
        children = [_walk(parse_rule(text), ctx, plan)]
    elif isinstance(node, _LEAVES):
        plan.values[f"_v{name[2:]}"] = node.left
    return name, node, children


def _build(item: tuple[str, Node, list], row: dict[str, Any]) -> Step:
    name, node, children = item
    kind = _KIND[type(node)]
    held = bool(row[name])
    text = format_rule(node)
    if isinstance(node, _LEAVES):
        operand = format_rule(node.left)
        value = row[f"_v{name[2:]}"]
        if value is not None and _is_json(node):
            value = json.loads(value)
        read = node.left.path[-1] if isinstance(node.left, Field) else None
        test = text[len(operand) :].strip()
        return Step(kind, text, held, operand, value, test, read)
    return Step(kind, text, held, children=tuple(_build(c, row) for c in children))


def _is_json(node: Node) -> bool:
    left = getattr(node, "left", None)
    return isinstance(left, Field) and left.path[0] in ("attributes", "properties")


def why(
    workspace: WorkspaceLike,
    rule: RuleLike,
    customer: str,
    as_of: object = None,
    *,
    segments: Iterable[Segment] | None = None,
) -> Trace:
    """Why a customer is (or is not) selected by a rule (a stored name, rule text or Segment).

    ``customer`` may be a customer id, a source id, an e-mail or a phone number. With a
    stored segment's name, ``recorded`` says whether the membership history had the
    customer in the segment at ``as_of`` (the interval covering it), since the data or the
    rule may have changed since: the trace shows today's rule on the data up to as_of.
    """
    from kequn.profiles import find_customer

    with opened(workspace) as ws:
        moment = resolve_as_of(as_of, ws.config.timezone)
        cid = find_customer(ws, customer)
        ctx = _Context(ws, segments)
        ctx.check(rule)  # the whole rule first: errors point into its text
        parsed, text, name = ctx.resolve(rule)
        plan = _Plan()
        tree = _walk(parsed, ctx, plan)
        # only this customer's rows; RFM keeps the whole table, since the latest stored run
        # is found over all customers
        tables = {
            key: t if key == "rfm_scores" else t.filter(t.customer_id == cid)
            for key, t in ctx.tables.items()
        }
        from kequn.segments.compile import compile_rules

        query = compile_rules(
            plan.rules,  # type: ignore[arg-type]
            tables,
            moment,
            ctx.catalog,
            rfm_scheme=ctx.scheme,
            values=plan.values,  # type: ignore[arg-type]
        )
        rows = query.to_pyarrow().to_pylist()
        if len(rows) != 1:
            raise InputError(f"customer {cid!r} is not in the customers table")
        root = _build(tree, rows[0])
        recorded, intervals = None, []
        if name is not None and name in stored_names(ws):
            recorded, intervals = _history(ws, name, cid, moment.label)
        return Trace(
            customer_id=cid,
            rule=text or format_rule(parsed),
            segment=name,
            as_of=moment.label,
            member=root.held,
            root=root,
            recorded=recorded,
            intervals=intervals,
        )


def _history(
    ws: Any, name: str, cid: str, label: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The customer's intervals in a stored segment, and which one covered ``label``."""
    m = ws.table("memberships")
    mine = (
        m.filter(m.segment == name, m.customer_id == cid)
        .order_by("entered_at")
        .select("entered_at", "exited_at")
        .to_pyarrow()
        .to_pylist()
    )
    covering = next(
        (
            r
            for r in mine
            if r["entered_at"] <= label and (r["exited_at"] is None or r["exited_at"] > label)
        ),
        None,
    )
    runs = ws.table("segment_runs")
    stamp = ibis.literal(label, type="timestamp")
    run = runs.filter(runs.segment == name, runs.as_of <= stamp).as_of.max().to_pyarrow().as_py()
    recorded = {
        # None: no evaluation at or before as_of, so the history cannot say
        "member": None if run is None else covering is not None,
        "run": run,
        "interval": covering,
    }
    return recorded, mine


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
