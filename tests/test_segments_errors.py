"""Bad rules: each kind of mistake gives its own ``kind``, a position and what is allowed.

Rules are checked against the canonical schemas (no workspace needed), so these tests run
no query; the few that need stored segments or RFM scores say so.
"""

from __future__ import annotations

import pytest

from kequn.errors import InputError, KequnError
from kequn.segments import RuleError, parse_rule
from kequn.segments.check import check_rule, default_catalog

SEGMENTS = {
    "a": "in segment 'b' and city = '北京'",
    "b": "count(orders) > 0 and in segment 'a'",
    "self": "in segment 'self'",
    "broken": "city = ",
    "ok": "city = '北京'",
}


def check(text: str, rfm: bool = False) -> None:
    catalog = default_catalog()
    if rfm:
        from dataclasses import replace

        catalog = replace(catalog, rfm=True)
    check_rule(parse_rule(text), catalog, text=text, lookup=SEGMENTS.get)


# (rule, kind, words the message must contain, "line:col" of the caret)
ERRORS = [
    ("ctiy = '北京'", "unknown_field", ["'ctiy'", "did you mean 'city'"], "1:1"),
    ("city = '北京' and chanel = 'app'", "unknown_field", ["'channel'"], "1:17"),
    ("amount > 100", "unknown_field", ["field of orders", "sum(orders.amount"], "1:1"),
    ("count(events where typ = 'x') > 0", "unknown_field", ["did you mean 'type'"], "1:20"),
    ("cnt(orders) > 1", "unknown_function", ["'cnt'", "did you mean 'count'"], "1:1"),
    ("count(order) > 1", "unknown_source", ["'order'", "did you mean 'orders'"], "1:7"),
    ("count(orders, last 3 dayz) > 1", "bad_window", ["'dayz'", "days, weeks"], "1:22"),
    ("count(orders, last 0 days) > 1", "bad_window", ["at least 1"], "1:20"),
    ("count(orders, last 1.5 days) > 1", "bad_window", ["whole number"], "1:20"),
    ("count(orders, recently) > 1", "bad_window", ["expected a window"], "1:15"),
    (
        "count(orders, between '2024-02-01' and '2024-01-01') > 0",
        "bad_window",
        ["ends (2024-01-01) before it starts"],
        "1:40",
    ),
    ("city = 3", "type_mismatch", ["'city' is text", "'3'"], "1:8"),
    ("sum(orders.amount) > '100'", "type_mismatch", ["is a number", "remove the quotes"], "1:22"),
    ("days_since_last_order contains '3'", "type_mismatch", ["works on text"], "1:1"),
    ("sum(events.type) > 1", "type_mismatch", ["sum needs numbers"], "1:12"),
    ("created_at > 20240101", "type_mismatch", ["is a date"], "1:14"),
    ("(city = '北京'", "unbalanced_paren", ["never closed"], "1:1"),
    ("count(orders, last 30 days > 1", "unexpected_token", ["expected ',' and a window"], "1:28"),
    ("count(orders", "unbalanced_paren", ["count( is never closed"], "1:6"),
    ("city = '北京')", "unmatched_paren", ["closes nothing"], "1:12"),
    ("city in ('北京', '上海'", "unbalanced_paren", ["never closed"], "1:9"),
    ("city = '北京", "unterminated_string", ["closing '"], "1:8"),
    ("city = “北京", "unterminated_string", ["closing ”"], "1:8"),
    ("in segment 'nope'", "unknown_segment", ["'nope'"], "1:1"),
    ("in segment 'a'", "segment_cycle", ["a → b → a"], None),
    ("in segment 'self'", "segment_cycle", ["self → self"], None),
    ("in segment 'broken'", "expected_value", ["in segment 'broken'"], "1:8"),
    ("created_at > '2024-13-01'", "bad_date", ["'2024-13-01' is not a date"], "1:14"),
    ("count(orders, between '2024-1-1' and '2024-02-01') > 0", "bad_date", ["YYYY-MM-DD"], "1:23"),
    ("city = null", "null_comparison", ["is null"], "1:8"),
    ("", "empty_rule", ["empty"], None),
    ("   # only a comment", "empty_rule", ["empty"], None),
    ("city '北京'", "expected_operator", ["after 'city'", "=, !="], "1:6"),
    ("city = @", "bad_character", ["'@'"], "1:8"),
    ("count(orders where count(events) > 1) > 0", "aggregate_in_filter", ["filter"], "1:20"),
    ("count(orders where in segment 'ok') > 0", "segment_in_filter", ["single orders"], "1:20"),
    ("sum(orders) > 1", "bad_aggregate", ["sum needs a field", "orders.amount"], "1:1"),
    ("count(orders.amount) > 1", "bad_aggregate", ["count_distinct(orders.amount)"], "1:1"),
    ("city in ('北京', 1)", "mixed_list", ["mixes text and numbers"], "1:1"),
    ("days_since_last_order between 30 and 10", "empty_range", ["smaller one first"], "1:1"),
    ("city.name = 'x'", "not_json", ["no parts", "attributes.*"], "1:1"),
    ("attributes = 'x'", "unknown_field", ["holds JSON", "attributes.category"], "1:1"),
    ("r_score >= 4", "no_rfm_scores", ["kequn rfm"], "1:1"),
    ("count(orders, last 30days) > 0", "bad_number", ["'30days'", "space"], "1:20"),
    ("city = '北京' and", "incomplete_rule", ["ends too early"], "1:16"),
    ("city = 北京", "expected_value", ["put text in quotes: '北京'"], "1:8"),
    ("city = '北京' city = '上海'", "unexpected_token", ["expected 'and', 'or'"], "1:13"),
    ("city is '北京'", "unexpected_token", ["expected 'null' after 'is'"], "1:9"),
    ("is_return = true", "unknown_field", ["field of orders"], "1:1"),
    ("count(all_orders where is_return > true) > 0", "type_mismatch", ["true/false"], "1:24"),
    ("gender starts '男'", "unexpected_token", ["expected 'with'"], "1:15"),
]


@pytest.mark.parametrize(("rule", "kind", "words", "where"), ERRORS, ids=[e[0] for e in ERRORS])
def test_rule_error(rule: str, kind: str, words: list[str], where: str | None) -> None:
    with pytest.raises(RuleError) as info:
        check(rule)
    err = info.value
    message = str(err)
    assert err.kind == kind, message
    for word in words:
        assert word in message, message
    if where is not None:
        assert f"(at {where})" in message
        assert "^" in message.splitlines()[-1]


def test_at_least_fifteen_kinds() -> None:
    assert len({e[1] for e in ERRORS}) >= 15


def test_error_tree() -> None:
    with pytest.raises(RuleError) as info:
        check("ctiy = 1")
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, KequnError)
    assert info.value.exit_code == 2


def test_caret_lines_up_under_chinese_text() -> None:
    with pytest.raises(RuleError) as info:
        check("city = '北京' and chanel = 'app'")
    source, caret = str(info.value).splitlines()[1:]
    # '北京' is four columns wide in a terminal, so the caret moves two columns further
    assert source == "  city = '北京' and chanel = 'app'"
    assert caret == "  " + " " * 18 + "^" * 6


def test_position_on_a_later_line() -> None:
    text = "city = '北京'\n  and count(orders, last 3 fortnights) > 0"
    with pytest.raises(RuleError) as info:
        check(text)
    err = info.value
    assert (err.line, err.column) == (2, 28)
    assert "  and count(orders, last 3 fortnights) > 0" in str(err)


def test_error_inside_another_segment_names_it() -> None:
    with pytest.raises(RuleError, match="in segment 'broken'") as info:
        check("city = '上海' or in segment 'broken'")
    assert info.value.segment == "broken"
    assert "city = " in str(info.value)


def test_rfm_fields_are_known_when_scores_exist() -> None:
    check("r_score >= 4 and rfm_segment = 'champions'", rfm=True)
