"""The rule language's syntax tree: small, immutable, typed nodes.

A rule is a tree of these frozen dataclasses. Nodes compare and hash by meaning only: the
source position (``span``) is kept for error messages but ignored by ``==``, so two equal
aggregates written in different places are computed once. :func:`kequn.segments.format_rule`
prints a tree back as rule text (``parse(format(node)) == node``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = [
    "AGGREGATES",
    "COMPARISONS",
    "Aggregate",
    "And",
    "Between",
    "Compare",
    "Const",
    "Ever",
    "Field",
    "InList",
    "InSegment",
    "IsNull",
    "Last",
    "Literal",
    "Node",
    "Not",
    "Or",
    "Rule",
    "TextMatch",
    "Then",
    "Value",
    "Window",
    "WindowBetween",
]

Span = tuple[int, int]
Scalar = str | int | float | bool | date | datetime

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
AGGREGATES = ("count", "sum", "avg", "min", "max", "count_distinct")


@dataclass(frozen=True)
class Node:
    """Base of every node; ``span`` is (start, end) offsets in the rule text."""

    span: Span = field(default=(0, 0), compare=False, repr=False, kw_only=True)


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal(Node):
    """A constant written in the rule: text, a number or true/false."""

    value: Scalar


@dataclass(frozen=True)
class Field(Node):
    """A name: ``city``, ``days_since_last_order``, ``attributes.会员等级``, ``properties.a.b``."""

    path: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Window(Node):
    """Base of the time windows of an aggregate."""


@dataclass(frozen=True)
class Last(Window):
    """The last ``n`` days / weeks / months / years up to ``as_of``."""

    n: int
    unit: str  # day, week, month, year


@dataclass(frozen=True)
class WindowBetween(Window):
    """From the start of day ``start`` to the end of day ``end`` (both included)."""

    start: date
    end: date


@dataclass(frozen=True)
class Ever(Window):
    """Everything up to ``as_of``."""


@dataclass(frozen=True)
class Then(Node):
    """The second step of a sequence: ``then [no] source [where rule] within N unit``.

    ``count(A then B within 1 day, window)`` counts the rows of A in the window followed by
    a row of B of the same customer at most ``n`` ``unit`` later; with ``negated`` (``then
    no B``), the rows of A whose whole follow-up period has passed by as_of without any B.
    """

    source: str  # orders, returns, all_orders, events
    where: Rule | None
    n: int
    unit: str  # minute, hour, day, week
    negated: bool = False


@dataclass(frozen=True)
class Aggregate(Node):
    """``func(source[.field] [where rule] [then ...], window)`` over a customer's rows.

    ``then`` (only with ``count``) makes it a sequence: see :class:`Then`.
    """

    func: str  # one of AGGREGATES
    source: str  # orders, returns, all_orders, events
    field: Field | None
    where: Rule | None
    window: Window
    then: Then | None = None


Value = Field | Aggregate


# --- conditions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare(Node):
    left: Value
    op: str  # one of COMPARISONS
    right: Literal


@dataclass(frozen=True)
class InList(Node):
    left: Value
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between(Node):
    """``left between low and high``, both ends included."""

    left: Value
    low: Literal
    high: Literal
    negated: bool = False


@dataclass(frozen=True)
class TextMatch(Node):
    left: Value
    op: str  # contains, starts_with, ends_with
    value: Literal
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    left: Value
    negated: bool = False


@dataclass(frozen=True)
class InSegment(Node):
    """Membership of another segment, by name; its rule is evaluated at the same as_of."""

    name: str


@dataclass(frozen=True)
class Const(Node):
    """``true`` (every customer) or ``false`` (none)."""

    value: bool


@dataclass(frozen=True)
class And(Node):
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Or(Node):
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Not(Node):
    item: Rule


Rule = Compare | InList | Between | TextMatch | IsNull | InSegment | Const | And | Or | Not
