"""Validation: names, types and segment references, checked before any query runs.

A :class:`Catalog` lists the fields a rule may name — the customers table's columns (read
from the workspace, so imported schemas with extra columns work), computed fields, RFM
fields when scores are stored, and the columns of orders and events for ``where`` filters
and aggregated fields. :func:`check_rule` walks the tree once, raising :class:`RuleError`
at the first problem, and returns the rule with every ``in segment`` replaced by that
segment's checked rule (so the compiler sees one self-contained tree).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import ibis.expr.datatypes as dt

from kequn.segments.errors import RuleError, closest
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
    Literal,
    Node,
    Not,
    Or,
    Rule,
    TextMatch,
    Value,
)

__all__ = [
    "COMPUTED",
    "CONSENT_CHANNELS",
    "PREDICTED",
    "RFM_FIELDS",
    "TAG_HEADS",
    "TAG_TYPES",
    "Catalog",
    "check_rule",
    "default_catalog",
    "parse_temporal",
]

# computed customer fields → type; docs/segments.md describes each
COMPUTED = {
    "days_since_last_order": "number",
    "days_since_first_order": "number",
}
RFM_FIELDS = {"r_score": "number", "f_score": "number", "m_score": "number", "rfm_segment": "text"}
# predicted fields → (the table of stored predictions, type); the latest prediction at or
# before as_of is used
PREDICTED = {
    "clv": ("clv_scores", "number"),
    "p_alive": ("clv_scores", "number"),
    "expected_purchases": ("clv_scores", "number"),
    "expected_value": ("clv_scores", "number"),
    "churn_risk": ("churn_scores", "number"),
    "status_stage": ("lifecycle_stages", "text"),
    "funnel_stage": ("lifecycle_stages", "text"),
}
PREDICTED_BY = {
    "clv_scores": "kequn clv predict",
    "churn_scores": "kequn churn predict",
    "lifecycle_stages": "kequn lifecycle",
}
# tag fields: ``tag.NAME`` (or ``标签.NAME``) is the tag's latest stored value at or before
# as_of (kequn/tags); the catalogue's tag type → the rule language's type
TAG_HEADS = ("tag", "标签")
TAG_TYPES = {"flag": "boolean", "category": "text", "number": "number", "score": "number"}
# consent.<channel>: the customer's latest consent status for it (opt_in, opt_out, or null
# when none is recorded); see docs/privacy.md
CONSENT_CHANNELS = ("email", "sms", "im", "phone")
# the JSON text columns whose keys a rule may name with dots
JSON_COLUMNS = {"customers": ("attributes",), "orders": (), "events": ("properties",)}
SOURCE_TABLE = {"orders": "orders", "returns": "orders", "all_orders": "orders", "events": "events"}
ORDERABLE = ("number", "date", "timestamp", "text", "json")


def type_name(dtype: dt.DataType) -> str:
    """The rule language's type for an Ibis column type."""
    if dtype.is_string():
        return "text"
    if dtype.is_numeric():
        return "number"
    if dtype.is_boolean():
        return "boolean"
    if dtype.is_timestamp():
        return "timestamp"
    if dtype.is_date():
        return "date"
    if dtype.is_json():
        return "json"
    return "other"


@dataclass(frozen=True)
class Catalog:
    """The fields a rule can use, with their types (text, number, boolean, date, timestamp)."""

    customers: Mapping[str, str]
    tables: Mapping[str, Mapping[str, str]]  # orders / events row fields
    rfm: bool = False
    computed: Mapping[str, str] = field(default_factory=lambda: dict(COMPUTED))
    predictions: frozenset[str] = frozenset()  # tables of stored predictions that have rows
    # fields the rule's author may not use (normalised name → the grant it needs) and who
    # the author is, for the message; see kequn.privacy.check_rule_grants
    denied: Mapping[str, str] = field(default_factory=dict)
    principal: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # catalogued tag → tag type
    tag_values: frozenset[str] = frozenset()  # tags with stored values

    @classmethod
    def from_schemas(
        cls,
        schemas: Mapping[str, object],
        rfm: bool = False,
        predictions: frozenset[str] = frozenset(),
        tags: Mapping[str, str] | None = None,
        tag_values: frozenset[str] = frozenset(),
    ) -> Catalog:
        def fields(name: str) -> dict[str, str]:
            schema = schemas[name]
            return {col: type_name(schema[col]) for col in schema.names}  # type: ignore[index]

        return cls(
            customers=fields("customers"),
            tables={"orders": fields("orders"), "events": fields("events")},
            rfm=rfm,
            predictions=predictions,
            tags=dict(tags or {}),
            tag_values=tag_values,
        )

    def customer_names(self) -> list[str]:
        names = [n for n in self.customers if n not in JSON_COLUMNS["customers"]]
        names += list(self.computed)
        names += list(RFM_FIELDS)
        names += list(PREDICTED)
        return names


def default_catalog() -> Catalog:
    """The catalog of the canonical schemas, for checking rules without a workspace."""
    from kequn import store

    return Catalog.from_schemas(
        {"customers": store.CUSTOMERS, "orders": store.ORDERS, "events": store.EVENTS}
    )


def parse_temporal(text: str) -> date | datetime | None:
    """ISO date or date-time text → date / naive datetime; None when it is neither."""
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=None)


def check_rule(
    rule: Rule,
    catalog: Catalog,
    *,
    text: str | None = None,
    lookup: Callable[[str], str | None] | None = None,
    segment: str | None = None,
) -> Rule:
    """Check a parsed rule and return it with ``in segment`` references expanded.

    ``text`` is the rule's source (for caret messages); ``lookup(name)`` returns another
    segment's rule text or None; ``segment`` is the name of the segment being checked, so a
    segment that refers to itself through others is reported as a cycle.
    """
    stack = (segment,) if segment else ()
    return _Checker(catalog, lookup, text, stack, {}).rule(rule, None)


class _Checker:
    def __init__(
        self,
        catalog: Catalog,
        lookup: Callable[[str], str | None] | None,
        text: str | None,
        stack: tuple[str, ...],
        cache: dict[str, Rule],
    ) -> None:
        self.catalog = catalog
        self.lookup = lookup
        self.text = text
        self.stack = stack
        self.cache = cache

    def error(self, message: str, kind: str, node: Node) -> RuleError:
        start, end = node.span
        if self.text is None or (start, end) == (0, 0):
            return RuleError(message, kind=kind)
        return RuleError(message, kind=kind, text=self.text, start=start, end=end)

    # --- rules --------------------------------------------------------------------------------

    def rule(self, node: Rule, source: str | None) -> Rule:
        """``source`` is None for customer rules, else the table a ``where`` filters."""
        if isinstance(node, And):
            return And(tuple(self.rule(i, source) for i in node.items), span=node.span)
        if isinstance(node, Or):
            return Or(tuple(self.rule(i, source) for i in node.items), span=node.span)
        if isinstance(node, Not):
            return Not(self.rule(node.item, source), span=node.span)
        if isinstance(node, Const):
            return node
        if isinstance(node, InSegment):
            if source is not None:
                raise self.error(
                    "'in segment' is about customers; it cannot filter single orders or events",
                    "segment_in_filter",
                    node,
                )
            return self.segment(node)
        if isinstance(node, Compare):
            kind = self.value(node.left, source)
            if node.op not in ("=", "!=") and kind == "boolean":
                raise self.error(
                    f"{self.describe(node.left)} is true/false; compare it with = or !=",
                    "type_mismatch",
                    node,
                )
            self.literal(node.right, kind, node.left)
            return node
        if isinstance(node, InList):
            kind = self.value(node.left, source)
            types = {_lit_type(v) for v in node.values}
            if len(types) > 1:
                raise self.error(
                    "the list mixes text and numbers; quote all values or none",
                    "mixed_list",
                    node,
                )
            for lit in node.values:
                self.literal(lit, kind, node.left)
            return node
        if isinstance(node, Between):
            kind = self.value(node.left, source)
            if kind == "boolean":
                raise self.error(
                    f"{self.describe(node.left)} is true/false; 'between' needs numbers, dates "
                    "or text",
                    "type_mismatch",
                    node,
                )
            low = self.literal(node.low, kind, node.left)
            high = self.literal(node.high, kind, node.left)
            try:
                empty = low > high  # type: ignore[operator]
            except TypeError:
                empty = False
            if empty:
                raise self.error(
                    f"between {node.low.value!r} and {node.high.value!r} is empty: the first "
                    "bound is larger; write the smaller one first",
                    "empty_range",
                    node,
                )
            return node
        if isinstance(node, TextMatch):
            kind = self.value(node.left, source)
            if kind not in ("text", "json"):
                raise self.error(
                    f"{node.op.replace('_', ' ')!r} works on text, but "
                    f"{self.describe(node.left)} is {_article(kind)}",
                    "type_mismatch",
                    node,
                )
            if not isinstance(node.value.value, str):
                raise self.error(
                    f"{node.op.replace('_', ' ')!r} needs text in quotes, not {node.value.value!r}",
                    "type_mismatch",
                    node.value,
                )
            return node
        if isinstance(node, IsNull):
            self.value(node.left, source)
            return node
        raise TypeError(f"cannot check a {type(node).__name__} node")

    def segment(self, node: InSegment) -> Rule:
        name = node.name
        if name in self.stack:
            path = " → ".join((*self.stack[self.stack.index(name) :], name))
            raise self.error(
                f"segments refer to each other in a cycle: {path}", "segment_cycle", node
            )
        if name in self.cache:
            return self.cache[name]
        text = self.lookup(name) if self.lookup else None
        if text is None:
            raise self.error(f"unknown segment {name!r}", "unknown_segment", node)
        from kequn.segments.parser import parse_rule

        try:
            parsed = parse_rule(text)
            inner = _Checker(self.catalog, self.lookup, text, (*self.stack, name), self.cache)
            checked = inner.rule(parsed, None)
        except RuleError as exc:
            if exc.kind == "segment_cycle":
                raise
            raise exc.in_segment(name) from None
        self.cache[name] = checked
        return checked

    # --- values -------------------------------------------------------------------------------

    def describe(self, value: Value) -> str:
        if isinstance(value, Field):
            return repr(value.dotted)
        return f"{value.func}(...)"

    def value(self, node: Value, source: str | None) -> str:
        if isinstance(node, Aggregate):
            if source is not None:
                raise self.error(
                    f"{node.func}(...) cannot be used inside a 'where' filter; filters test one "
                    "order or event at a time",
                    "aggregate_in_filter",
                    node,
                )
            return self.aggregate(node)
        if isinstance(node, Field):
            return self.field(node, source)
        raise TypeError(f"cannot check a {type(node).__name__} value")

    def grant(self, node: Field) -> None:
        """Refuse a field the author lacks the grant for (``Catalog.denied``)."""
        head, rest = node.path[0], node.path[1:]
        name = rest[0] if head in JSON_COLUMNS["customers"] and rest else head
        need = self.catalog.denied.get(re.sub(r"[\s\-]+", "_", name.strip().lower()))
        if need is None:
            return
        who = f"token {self.catalog.principal!r}" if self.catalog.principal else "this caller"
        raise self.error(
            f"field {node.dotted!r} is {need}; {who} lacks the {need!r} grant needed to use "
            f"it in a rule (an admin creates a token with `--grant {need}`)",
            "sensitive_field",
            node,
        )

    def field(self, node: Field, source: str | None) -> str:
        head, rest = node.path[0], node.path[1:]
        if source is None and self.catalog.denied:
            self.grant(node)
        if source is None and head == "consent" and "consent" not in self.catalog.customers:
            if len(rest) != 1 or rest[0] not in CONSENT_CHANNELS:
                raise self.error(
                    f"{node.dotted!r}: name a channel, e.g. consent.email = 'opt_in' "
                    f"(channels: {', '.join(CONSENT_CHANNELS)})",
                    "unknown_field",
                    node,
                )
            return "text"
        if source is None:
            fields: Mapping[str, str] = {
                k: v
                for k, v in self.catalog.customers.items()
                if k not in JSON_COLUMNS["customers"]
            }
            json_cols = JSON_COLUMNS["customers"]
            where = "customers"
            if head in TAG_HEADS and head not in fields:
                return self.tag(node)
            if head in self.catalog.computed and not rest:
                return self.catalog.computed[head]
            if head in RFM_FIELDS and not rest:
                if not self.catalog.rfm:
                    raise self.error(
                        f"{head!r} needs stored RFM scores and the workspace has none; run "
                        "`kequn rfm` first",
                        "no_rfm_scores",
                        node,
                    )
                return RFM_FIELDS[head]
            if head in PREDICTED and not rest:
                table, kind = PREDICTED[head]
                if table not in self.catalog.predictions:
                    raise self.error(
                        f"{head!r} needs stored predictions and the workspace has none; run "
                        f"`{PREDICTED_BY[table]}` first",
                        "no_predictions",
                        node,
                    )
                return kind
            names = self.catalog.customer_names()
        else:
            table = SOURCE_TABLE[source]
            fields = self.catalog.tables[table]
            json_cols = JSON_COLUMNS[table]
            where = table
            names = [n for n in fields if n not in json_cols]
        if head in json_cols:
            if not rest:
                raise self.error(
                    f"{head!r} holds JSON; name a key inside it, e.g. {head}.category",
                    "unknown_field",
                    node,
                )
            return "json"
        if head in fields:
            if rest:
                raise self.error(
                    f"{head!r} is {_article(fields[head])}, it has no parts; only "
                    + " and ".join(f"{c}.*" for c in json_cols or ("properties",))
                    + " can be read with dots",
                    "not_json",
                    node,
                )
            return fields[head]
        hint = ""
        if source is None:
            for table in ("orders", "events"):
                if head in self.catalog.tables.get(table, {}):
                    if table == "orders":
                        example = f"sum(orders.{head}, last 30 days) > 0"
                    else:
                        key = node.dotted if rest or head not in JSON_COLUMNS[table] else head
                        example = f"count(events where {key} = '...', last 30 days) > 0"
                    hint = f"; {head!r} is a field of {table}: aggregate it, e.g. {example}"
                    break
        raise self.error(
            f"unknown field {node.dotted!r} in {where}" + (hint or closest(head, names)),
            "unknown_field",
            node,
        )

    def tag(self, node: Field) -> str:
        """``tag.NAME``: a catalogued tag with stored values; its type from the catalogue."""
        if len(node.path) != 2:
            raise self.error(
                f"{node.dotted!r}: name one tag after the dot, e.g. tag.high_intent",
                "unknown_tag",
                node,
            )
        name = node.path[1]
        kind = self.catalog.tags.get(name)
        if kind is None:
            hint = closest(name, self.catalog.tags) or "; `kequn tag list` shows the tags"
            raise self.error(f"unknown tag {name!r}{hint}", "unknown_tag", node)
        if name not in self.catalog.tag_values:
            raise self.error(
                f"tag {name!r} has no stored values yet; run `kequn tag refresh {name}` first",
                "no_tag_values",
                node,
            )
        return TAG_TYPES.get(kind, "text")

    def aggregate(self, node: Aggregate) -> str:
        if node.where is not None:
            self.rule(node.where, node.source)
        if node.then is not None:
            if node.func != "count":
                raise self.error(
                    f"a sequence (then ... within) is counted: write count(...), not "
                    f"{node.func}(...)",
                    "bad_aggregate",
                    node,
                )
            if node.then.where is not None:
                self.rule(node.then.where, node.then.source)
        if node.func == "count":
            if node.field is not None:
                raise self.error(
                    f"count counts {node.source}; write count({node.source}) or "
                    f"count_distinct({node.source}.{node.field.dotted})",
                    "bad_aggregate",
                    node,
                )
            return "number"
        if node.field is None:
            example = "amount" if SOURCE_TABLE[node.source] == "orders" else "properties.price"
            raise self.error(
                f"{node.func} needs a field, e.g. {node.func}({node.source}.{example})",
                "bad_aggregate",
                node,
            )
        kind = self.field(node.field, node.source)
        if node.func == "count_distinct":
            return "number"
        allowed = ("number", "json") if node.func in ("sum", "avg") else ORDERABLE
        if kind not in allowed:
            raise self.error(
                f"{node.func} needs numbers, but {node.field.dotted!r} is {_article(kind)}",
                "type_mismatch",
                node.field,
            )
        return "number" if kind == "json" else kind

    def literal(self, lit: Literal, kind: str, left: Value) -> object:
        """Check that ``lit`` fits a value of type ``kind``; return it as compared."""
        value = lit.value
        name = self.describe(left)
        if kind == "json":
            return value
        if kind == "text":
            if not isinstance(value, str):
                raise self.error(
                    f"{name} is text but {value!r} is not; put it in quotes: '{value}'",
                    "type_mismatch",
                    lit,
                )
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(
                    f"{name} is a number but {value!r} is "
                    + ("true/false" if isinstance(value, bool) else "text; remove the quotes"),
                    "type_mismatch",
                    lit,
                )
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise self.error(
                    f"{name} is true/false; compare it with true or false, not {value!r}",
                    "type_mismatch",
                    lit,
                )
            return value
        if kind in ("date", "timestamp"):
            if not isinstance(value, str):
                raise self.error(
                    f"{name} is a date; compare it with a date in quotes such as '2024-01-31', "
                    f"not {value!r}",
                    "type_mismatch",
                    lit,
                )
            moment = parse_temporal(value)
            if moment is None:
                raise self.error(
                    f"{value!r} is not a date; write YYYY-MM-DD or YYYY-MM-DD HH:MM",
                    "bad_date",
                    lit,
                )
            return (
                moment
                if isinstance(moment, datetime)
                else datetime.combine(moment, datetime.min.time())
            )
        raise self.error(f"{name} cannot be compared in rules", "type_mismatch", lit)


def _lit_type(lit: Literal) -> str:
    value = lit.value
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "text"


def _article(kind: str) -> str:
    return {
        "text": "text",
        "number": "a number",
        "boolean": "true/false",
        "date": "a date",
        "timestamp": "a date and time",
        "json": "JSON",
    }.get(kind, kind)
