"""Print a syntax tree back as rule text: ``parse_rule(format_rule(node)) == node``.

Used to show a rule in one canonical spelling (English keywords, single quotes) and by the
property tests, which generate trees and check that they read back unchanged.
"""

from __future__ import annotations

from decimal import Decimal

from kequn.segments.nodes import (
    Aggregate,
    And,
    Between,
    Compare,
    Const,
    Ever,
    Field,
    InList,
    InSegment,
    IsNull,
    Last,
    Literal,
    Node,
    Not,
    Or,
    TextMatch,
    Then,
    WindowBetween,
)

__all__ = ["format_rule"]

_TEXT_OPS = {"contains": "contains", "starts_with": "starts with", "ends_with": "ends with"}


def format_rule(node: Node) -> str:
    """Rule text for a tree; nested and/or are parenthesised so the tree reads back as is."""
    if isinstance(node, And | Or):
        word = " and " if isinstance(node, And) else " or "
        return word.join(_group(item) for item in node.items)
    if isinstance(node, Not):
        return "not " + _group(node.item)
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, InSegment):
        return "in segment " + _quote(node.name)
    if isinstance(node, Compare):
        return f"{format_rule(node.left)} {node.op} {format_rule(node.right)}"
    if isinstance(node, InList):
        items = ", ".join(format_rule(v) for v in node.values)
        return f"{format_rule(node.left)} {'not in' if node.negated else 'in'} ({items})"
    if isinstance(node, Between):
        word = "not between" if node.negated else "between"
        low, high = format_rule(node.low), format_rule(node.high)
        return f"{format_rule(node.left)} {word} {low} and {high}"
    if isinstance(node, TextMatch):
        word = ("not " if node.negated else "") + _TEXT_OPS[node.op]
        return f"{format_rule(node.left)} {word} {format_rule(node.value)}"
    if isinstance(node, IsNull):
        return f"{format_rule(node.left)} is {'not ' if node.negated else ''}null"
    if isinstance(node, Field):
        return node.dotted
    if isinstance(node, Literal):
        return _literal(node.value)
    if isinstance(node, Aggregate):
        inner = node.source + ("." + node.field.dotted if node.field else "")
        if node.where is not None:
            inner += " where " + format_rule(node.where)
        if node.then is not None:
            inner += " " + format_rule(node.then)
        if not isinstance(node.window, Ever):
            inner += ", " + format_rule(node.window)
        return f"{node.func}({inner})"
    if isinstance(node, Then):
        step = ("then no " if node.negated else "then ") + node.source
        if node.where is not None:
            step += " where " + format_rule(node.where)
        return f"{step} within {node.n} {node.unit}{'s' if node.n != 1 else ''}"
    if isinstance(node, Last):
        return f"last {node.n} {node.unit}{'s' if node.n != 1 else ''}"
    if isinstance(node, WindowBetween):
        return f"between {_quote(node.start.isoformat())} and {_quote(node.end.isoformat())}"
    if isinstance(node, Ever):
        return "ever"
    raise TypeError(f"cannot format a {type(node).__name__} node")


def _group(node: Node) -> str:
    text = format_rule(node)
    return f"({text})" if isinstance(node, And | Or) else text


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return _quote(str(value))
