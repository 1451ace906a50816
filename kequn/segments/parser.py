"""The parser: rule text → syntax tree, by recursive descent over :mod:`lexer` tokens.

Grammar (keywords are case-insensitive; Chinese aliases in ``docs/segments.md``)::

    rule       := and_rule ( OR and_rule )*
    and_rule   := not_rule ( AND not_rule )*
    not_rule   := NOT not_rule | primary
    primary    := '(' rule ')' | TRUE | FALSE | IN SEGMENT string | condition
    condition  := value ( cmp literal | [NOT] IN '(' literal, ... ')'
                        | [NOT] BETWEEN literal AND literal | [NOT] CONTAINS literal
                        | [NOT] STARTS WITH literal | [NOT] ENDS WITH literal
                        | IS [NOT] NULL )
    value      := name ( '.' name )* | function '(' source [ '.' name ( '.' name )* ]
                                         [ WHERE rule ]
                                         [ THEN [NO] source [ WHERE rule ] within ]
                                         [ ',' window ] ')'
    within     := WITHIN number gap_unit | number gap_unit [内]   (gap_unit: minutes … weeks)
    window     := LAST number unit | BETWEEN string AND string | EVER

A ``then`` step makes the aggregate a sequence (only ``count``): ``count(events where type =
'add_to_cart' then no orders within 1 day, last 30 days)``.

The parser only builds the tree; names, types and segment references are checked by
:mod:`kequn.segments.check` against a workspace's tables.
"""

from __future__ import annotations

from datetime import date

from kequn.segments.errors import RuleError, closest
from kequn.segments.lexer import Token, tokenize
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
    Not,
    Or,
    Rule,
    TextMatch,
    Then,
    Value,
    Window,
    WindowBetween,
)

__all__ = ["FUNCTIONS", "KEYWORDS", "SOURCES", "UNITS", "parse_rule"]

AND = ("and", "且", "并且", "而且")
OR = ("or", "或", "或者")
NOT = ("not", "非", "不")
IN = ("in", "属于")
NOT_IN = ("不属于",)
BETWEEN = ("between", "介于")
BETWEEN_AND = (*AND, "和", "到", "至")
CONTAINS = ("contains", "包含")
NOT_CONTAINS = ("不包含",)
STARTS = ("starts", "开头是")
ENDS = ("ends", "结尾是")
IS_NULL = ("为空",)
IS_NOT_NULL = ("不为空",)
SEGMENT = ("segment", "分群")
TRUE = ("true", "真")
FALSE = ("false", "假")
WHERE = ("where", "其中", "满足")
LAST = ("last", "最近", "过去")
EVER = ("ever", "全部", "历史", "全部时间")
THEN = ("then", "然后", "之后", "随后")
NO = ("no", "没有", "无", "未")
WITHIN = ("within", "在")
WITHIN_END = ("内", "以内", "之内")

KEYWORDS = frozenset(
    (*AND, *OR, *NOT, *IN, *NOT_IN, *BETWEEN, *CONTAINS, *NOT_CONTAINS, *STARTS, *ENDS)
    + (*IS_NULL, *IS_NOT_NULL, *TRUE, *FALSE, *WHERE, "is", "null", "属于分群", "不属于分群")
    + (*THEN, "within")
)

FUNCTIONS = {
    "count": "count",
    "计数": "count",
    "次数": "count",
    "sum": "sum",
    "总和": "sum",
    "合计": "sum",
    "求和": "sum",
    "avg": "avg",
    "average": "avg",
    "mean": "avg",
    "平均": "avg",
    "均值": "avg",
    "min": "min",
    "最小": "min",
    "最小值": "min",
    "max": "max",
    "最大": "max",
    "最大值": "max",
    "count_distinct": "count_distinct",
    "distinct_count": "count_distinct",
    "去重计数": "count_distinct",
}
SOURCES = {
    "orders": "orders",
    "订单": "orders",
    "returns": "returns",
    "退货": "returns",
    "all_orders": "all_orders",
    "全部订单": "all_orders",
    "events": "events",
    "事件": "events",
}
UNITS = {
    "day": "day",
    "days": "day",
    "天": "day",
    "日": "day",
    "week": "week",
    "weeks": "week",
    "周": "week",
    "星期": "week",
    "month": "month",
    "months": "month",
    "月": "month",
    "个月": "month",
    "year": "year",
    "years": "year",
    "年": "year",
}
# the gap of a sequence step (``within 2 hours``): fixed lengths only
GAP_UNITS = {
    "minute": "minute",
    "minutes": "minute",
    "分钟": "minute",
    "hour": "hour",
    "hours": "hour",
    "小时": "hour",
    "day": "day",
    "days": "day",
    "天": "day",
    "日": "day",
    "week": "week",
    "weeks": "week",
    "周": "week",
    "星期": "week",
}
_CMP = ("=", "!=", "<", "<=", ">", ">=")
_SEQUENCE_EXAMPLE = "count(events where type = 'add_to_cart' then orders within 1 day) > 0"


def parse_rule(text: str) -> Rule:
    """Parse rule text into a syntax tree; raises :class:`RuleError` pointing at the problem."""
    if not isinstance(text, str):
        raise RuleError(f"a rule is text, not {type(text).__name__}", kind="empty_rule")
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # --- helpers ------------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def error(self, message: str, kind: str, tok: Token | None = None, end: int | None = None):
        tok = tok or self.tok
        return RuleError(
            message, kind=kind, text=self.text, start=tok.start, end=end if end else tok.end
        )

    def expect_op(self, op: str, what: str) -> Token:
        if self.tok.kind == "op" and self.tok.value == op:
            return self.advance()
        raise self.error(f"expected {op!r} {what}, found {self._found()}", "unexpected_token")

    def _found(self) -> str:
        tok = self.tok
        return "the end of the rule" if tok.kind == "end" else repr(tok.text)

    def span(self, start: int) -> tuple[int, int]:
        prev = self.tokens[self.i - 1] if self.i else self.tok
        return (start, prev.end)

    # --- rules --------------------------------------------------------------------------------

    def parse(self) -> Rule:
        if self.tok.kind == "end":
            raise RuleError("the rule is empty", kind="empty_rule", text=self.text or None)
        rule = self.rule()
        tok = self.tok
        if tok.kind == "op" and tok.value == ")":
            raise self.error("unbalanced parentheses: this ')' closes nothing", "unmatched_paren")
        if tok.is_word(*THEN):
            raise self.stray_then()
        if tok.kind != "end":
            raise self.error(
                f"expected 'and', 'or' or the end of the rule, found {tok.text!r}",
                "unexpected_token",
            )
        return rule

    def rule(self) -> Rule:
        start = self.tok.start
        items = [self.and_rule()]
        while self.tok.is_word(*OR):
            self.advance()
            items.append(self.and_rule())
        return items[0] if len(items) == 1 else Or(tuple(items), span=self.span(start))

    def and_rule(self) -> Rule:
        start = self.tok.start
        items = [self.not_rule()]
        while self.tok.is_word(*AND):
            self.advance()
            items.append(self.not_rule())
        return items[0] if len(items) == 1 else And(tuple(items), span=self.span(start))

    def not_rule(self) -> Rule:
        start = self.tok.start
        if self.tok.is_word(*NOT):
            self.advance()
            return Not(self.not_rule(), span=self.span(start))
        if self.tok.is_word("不属于分群"):
            self.advance()
            return Not(self._segment_name(start), span=self.span(start))
        return self.primary()

    def primary(self) -> Rule:
        tok = self.tok
        start = tok.start
        if tok.kind == "op" and tok.value == "(":
            self.advance()
            if self.tok.kind == "end":
                raise self.error(
                    "unbalanced parentheses: this '(' is never closed", "unbalanced_paren", tok
                )
            inner = self.rule()
            if not (self.tok.kind == "op" and self.tok.value == ")"):
                if self.tok.kind == "end":
                    raise self.error(
                        "unbalanced parentheses: this '(' is never closed", "unbalanced_paren", tok
                    )
                if self.tok.is_word(*THEN):
                    raise self.stray_then()
                raise self.error(
                    f"expected ')' or 'and'/'or', found {self._found()}", "unexpected_token"
                )
            self.advance()
            return inner
        if tok.is_word(*TRUE) or tok.is_word(*FALSE):
            self.advance()
            return Const(tok.text.lower() in TRUE, span=self.span(start))
        if tok.is_word(*IN) and self.peek().is_word(*SEGMENT):
            self.advance()
            self.advance()
            return self._segment_name(start)
        if tok.is_word("属于分群"):
            self.advance()
            return self._segment_name(start)
        if tok.kind == "end":
            raise self.error("the rule ends too early: a condition is missing", "incomplete_rule")
        return self.condition()

    def stray_then(self) -> RuleError:
        return self.error(
            f"{self.tok.text!r} joins the two steps of a sequence inside count(...), e.g. "
            + _SEQUENCE_EXAMPLE,
            "bad_sequence",
        )

    def _segment_name(self, start: int) -> InSegment:
        tok = self.tok
        if tok.kind == "string" or (tok.kind == "ident" and tok.text.lower() not in KEYWORDS):
            self.advance()
            name = str(tok.value).strip()
            if not name:
                raise self.error("a segment name cannot be empty", "unknown_segment", tok)
            return InSegment(name, span=self.span(start))
        raise self.error(
            f"expected a segment name after 'in segment', found {self._found()}",
            "unexpected_token",
        )

    def condition(self) -> Rule:
        start = self.tok.start
        left = self.value()
        tok = self.tok
        if tok.kind == "op" and tok.value in _CMP:
            self.advance()
            right = self.literal(f"after {tok.text!r}")
            return Compare(left, str(tok.value), right, span=self.span(start))
        if tok.is_word("is"):
            self.advance()
            negated = False
            if self.tok.is_word(*NOT):
                self.advance()
                negated = True
            if not self.tok.is_word("null"):
                raise self.error(
                    f"expected 'null' after 'is{' not' if negated else ''}', found {self._found()}",
                    "unexpected_token",
                )
            self.advance()
            return IsNull(left, negated, span=self.span(start))
        if tok.is_word(*IS_NULL) or tok.is_word(*IS_NOT_NULL):
            self.advance()
            return IsNull(left, tok.text in IS_NOT_NULL, span=self.span(start))
        negated = False
        if tok.is_word(*NOT):
            self.advance()
            negated = True
        elif tok.is_word(*NOT_IN) or tok.is_word(*NOT_CONTAINS):
            negated = True
        tok = self.tok
        if tok.is_word(*IN) or tok.is_word(*NOT_IN):
            self.advance()
            return InList(left, self.literal_list(), negated, span=self.span(start))
        if tok.is_word(*BETWEEN):
            self.advance()
            low = self.literal("after 'between'")
            if not self.tok.is_word(*BETWEEN_AND):
                raise self.error(
                    f"expected 'and' between the two bounds, found {self._found()}",
                    "unexpected_token",
                )
            self.advance()
            high = self.literal("after 'and'")
            return Between(left, low, high, negated, span=self.span(start))
        if tok.is_word(*CONTAINS) or tok.is_word(*NOT_CONTAINS):
            self.advance()
            lit = self.literal("after 'contains'")
            return TextMatch(left, "contains", lit, negated, span=self.span(start))
        if tok.is_word(*STARTS) or tok.is_word(*ENDS):
            self.advance()
            op = "starts_with" if tok.text.lower() in STARTS else "ends_with"
            if tok.text.lower() in ("starts", "ends"):
                if not self.tok.is_word("with"):
                    raise self.error(
                        f"expected 'with' after {tok.text!r}, found {self._found()}",
                        "unexpected_token",
                    )
                self.advance()
            lit = self.literal(f"after '{op.replace('_', ' ')}'")
            return TextMatch(left, op, lit, negated, span=self.span(start))
        name = left.dotted if isinstance(left, Field) else f"{left.func}(...)"
        raise self.error(
            f"expected a comparison after {name!r} (=, !=, <, <=, >, >=, in (...), between, "
            f"contains, starts with, is null), found {self._found()}",
            "expected_operator",
        )

    # --- values -------------------------------------------------------------------------------

    def name(self, what: str) -> Token:
        tok = self.tok
        if tok.kind == "ident" and tok.text.lower() not in KEYWORDS:
            return self.advance()
        if tok.kind == "ident":
            raise self.error(f"{tok.text!r} is a keyword, not {what}", "unexpected_token")
        raise self.error(f"expected {what}, found {self._found()}", "unexpected_token")

    def path(self, first: Token) -> tuple[str, ...]:
        parts = [str(first.value)]
        while self.tok.kind == "op" and self.tok.value == ".":
            self.advance()
            parts.append(str(self.name("a name after '.'").value))
        return tuple(parts)

    def value(self) -> Value:
        first = self.name("a field or a function such as count(...)")
        nxt = self.tok
        if nxt.kind == "op" and nxt.value == "(":
            return self.aggregate(first)
        return Field(self.path(first), span=self.span(first.start))

    def aggregate(self, func_tok: Token) -> Aggregate:
        func = FUNCTIONS.get(func_tok.text.lower())
        if func is None:
            raise self.error(
                f"unknown function {func_tok.text!r}; use count, sum, avg, min, max or "
                f"count_distinct" + closest(func_tok.text.lower(), FUNCTIONS),
                "unknown_function",
                func_tok,
            )
        open_tok = self.advance()
        src_tok = self.name("orders, returns, all_orders or events")
        source = SOURCES.get(src_tok.text.lower())
        if source is None:
            raise self.error(
                f"unknown table {src_tok.text!r} in {func}(...); use orders, returns, "
                "all_orders or events" + closest(src_tok.text.lower(), SOURCES),
                "unknown_source",
                src_tok,
            )
        field = None
        if self.tok.kind == "op" and self.tok.value == ".":
            self.advance()
            first = self.name("a field name after '.'")
            field = Field(self.path(first), span=self.span(first.start))
        where = None
        if self.tok.is_word(*WHERE):
            self.advance()
            where = self.rule()
        then = None
        if self.tok.is_word(*THEN):
            then = self.then_step()
        window: Window = Ever()
        if self.tok.kind == "op" and self.tok.value == ",":
            self.advance()
            window = self.window()
        if not (self.tok.kind == "op" and self.tok.value == ")"):
            if self.tok.is_word(*THEN) and then is not None:
                raise self.two_steps()
            if self.tok.is_word(*THEN):
                raise self.error(
                    f"{self.tok.text!r} must come before the window: count(A then B within "
                    "1 day, last 30 days)",
                    "bad_sequence",
                )
            if self.tok.kind == "end":
                raise self.error(
                    f"unbalanced parentheses: the '(' of {func_tok.text}( is never closed",
                    "unbalanced_paren",
                    open_tok,
                )
            raise self.error(
                f"expected ',' and a window, or ')', in {func_tok.text}(...), found "
                f"{self._found()}",
                "unexpected_token",
            )
        self.advance()
        return Aggregate(func, source, field, where, window, then, span=self.span(func_tok.start))

    def then_step(self) -> Then:
        """``then [no] source [where rule] within N unit`` (the ``then`` is the current token)."""
        then_tok = self.advance()
        start = then_tok.start
        negated = False
        if self.tok.is_word(*NO):
            self.advance()
            negated = True
        src_tok = self.tok
        source = SOURCES.get(src_tok.text.lower()) if src_tok.kind == "ident" else None
        if source is None:
            if src_tok.kind == "ident" and src_tok.text.lower() not in KEYWORDS:
                raise self.error(
                    f"unknown table {src_tok.text!r} after {then_tok.text!r}; use orders, "
                    "returns, all_orders or events" + closest(src_tok.text.lower(), SOURCES),
                    "unknown_source",
                )
            raise self.error(
                f"expected what follows after {then_tok.text!r}: [no] orders, returns, "
                f"all_orders or events, found {self._found()}",
                "bad_sequence",
            )
        self.advance()
        if self.tok.kind == "op" and self.tok.value == ".":
            raise self.error(
                f"the step after {then_tok.text!r} is a table, not a field; filter it with "
                f"where, e.g. then {src_tok.text} where amount > 100 within 1 day",
                "bad_sequence",
            )
        where = None
        if self.tok.is_word(*WHERE):
            self.advance()
            where = self.rule()
        if self.tok.is_word(*THEN):
            raise self.two_steps()
        n, unit = self.within(then_tok)
        return Then(source, where, n, unit, negated, span=self.span(start))

    def two_steps(self) -> RuleError:
        return self.error(
            "a sequence has two steps; combine more with 'and', e.g. count(A then B within "
            "1 day) > 0 and count(B then C within 1 day) > 0",
            "bad_sequence",
        )

    def within(self, then_tok: Token) -> tuple[int, str]:
        if self.tok.is_word(*WITHIN):
            self.advance()
        elif self.tok.kind != "number":
            raise self.error(
                f"a sequence needs a time limit: add 'within N days' (or minutes, hours, "
                f"weeks) after the step that follows {then_tok.text!r}, e.g. "
                f"{_SEQUENCE_EXAMPLE}; found {self._found()}",
                "bad_sequence",
            )
        num = self.tok
        if num.kind != "number" or not isinstance(num.value, int) or num.value <= 0:
            raise self.error(
                f"expected a whole number of at least 1 after 'within' (e.g. within 1 day), "
                f"found {self._found()}",
                "bad_sequence",
            )
        self.advance()
        unit_tok = self.tok
        word = unit_tok.text.lower() if unit_tok.kind == "ident" else ""
        for suffix in WITHIN_END:  # 1 天内, 2 小时以内
            if word.endswith(suffix) and word[: -len(suffix)] in GAP_UNITS:
                word = word[: -len(suffix)]
                break
        unit = GAP_UNITS.get(word)
        if unit is None:
            hint = ""
            if word in UNITS:
                hint = "; months and years vary in length, write days or weeks"
            raise self.error(
                f"unknown time unit {unit_tok.text or 'at the end'!r} in 'within'; use "
                "minutes, hours, days or weeks" + (hint or closest(word, GAP_UNITS)),
                "bad_sequence",
                unit_tok,
            )
        self.advance()
        if self.tok.is_word(*WITHIN_END):
            self.advance()
        return int(num.value), unit

    def window(self) -> Window:
        tok = self.tok
        start = tok.start
        if tok.is_word(*LAST):
            self.advance()
            num = self.tok
            if num.kind != "number" or not isinstance(num.value, int):
                raise self.error(
                    f"expected a whole number after {tok.text!r} (e.g. last 30 days), "
                    f"found {self._found()}",
                    "bad_window",
                )
            self.advance()
            if num.value <= 0:
                raise self.error(
                    f"a window must be at least 1 long, not {num.value}", "bad_window", num
                )
            unit_tok = self.tok
            unit = UNITS.get(unit_tok.text.lower()) if unit_tok.kind == "ident" else None
            if unit is None:
                raise self.error(
                    f"unknown time unit {unit_tok.text or 'at the end'!r}; use days, weeks, "
                    "months or years" + closest(unit_tok.text.lower(), UNITS),
                    "bad_window",
                    unit_tok,
                )
            self.advance()
            return Last(int(num.value), unit, span=self.span(start))
        if tok.is_word(*EVER):
            self.advance()
            return Ever(span=self.span(start))
        if tok.is_word(*BETWEEN):
            self.advance()
            first = self.date_literal()
            if not self.tok.is_word(*BETWEEN_AND):
                raise self.error(
                    f"expected 'and' between the two dates, found {self._found()}",
                    "unexpected_token",
                )
            self.advance()
            end_tok = self.tok
            last = self.date_literal()
            if last < first:
                raise self.error(
                    f"the window ends ({last}) before it starts ({first})", "bad_window", end_tok
                )
            return WindowBetween(first, last, span=self.span(start))
        raise self.error(
            f"expected a window (last 30 days, between '2024-01-01' and '2024-03-31', ever), "
            f"found {self._found()}",
            "bad_window",
        )

    def date_literal(self) -> date:
        tok = self.tok
        if tok.kind != "string":
            raise self.error(
                f"expected a date in quotes such as '2024-01-31', found {self._found()}",
                "bad_date",
            )
        self.advance()
        try:
            return date.fromisoformat(str(tok.value).strip())
        except ValueError:
            raise self.error(
                f"{tok.value!r} is not a date; write YYYY-MM-DD such as '2024-01-31'",
                "bad_date",
                tok,
            ) from None

    # --- literals -----------------------------------------------------------------------------

    def literal(self, where: str) -> Literal:
        tok = self.tok
        start = tok.start
        if tok.kind == "string":
            self.advance()
            return Literal(str(tok.value), span=(tok.start, tok.end))
        if tok.kind == "number":
            self.advance()
            return Literal(tok.value, span=(tok.start, tok.end))
        if tok.kind == "op" and tok.value == "-" and self.peek().kind == "number":
            self.advance()
            num = self.advance()
            return Literal(-num.value, span=(start, num.end))  # type: ignore[operator]
        if tok.is_word(*TRUE) or tok.is_word(*FALSE):
            self.advance()
            return Literal(tok.text.lower() in TRUE, span=(tok.start, tok.end))
        if tok.is_word("null"):
            raise self.error(
                "a comparison with null is never true; write 'is null' or 'is not null'",
                "null_comparison",
            )
        if tok.kind == "ident":
            raise self.error(
                f"expected a value {where}, found the name {tok.text!r}; put text in quotes: "
                f"'{tok.text}'",
                "expected_value",
            )
        raise self.error(f"expected a value {where}, found {self._found()}", "expected_value")

    def literal_list(self) -> tuple[Literal, ...]:
        open_tok = self.tok
        self.expect_op("(", "to start the list after 'in'")
        items = [self.literal("in the list")]
        while self.tok.kind == "op" and self.tok.value == ",":
            self.advance()
            items.append(self.literal("in the list"))
        if not (self.tok.kind == "op" and self.tok.value == ")"):
            if self.tok.kind == "end":
                raise self.error(
                    "unbalanced parentheses: this '(' is never closed", "unbalanced_paren", open_tok
                )
            raise self.error(
                f"expected ',' or ')' in the list, found {self._found()}", "expected_value"
            )
        self.advance()
        return tuple(items)
