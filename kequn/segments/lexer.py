"""The tokenizer: rule text → tokens with their positions.

Identifiers may be Chinese (``城市``, ``属性.品类``); strings take ASCII quotes and the
Chinese ones an input method types (‘…’, “…”); full-width punctuation (（）＝，＞ …) reads as
its ASCII twin, so a rule typed with a Chinese keyboard layout still parses.
"""

from __future__ import annotations

from dataclasses import dataclass

from kequn.segments.errors import RuleError

__all__ = ["Token", "tokenize"]

# full-width punctuation an IME produces → ASCII
_FULL_WIDTH = str.maketrans("（）＝，＜＞！．", "()=,<>!.")
_QUOTES = {"'": "'", '"': '"', "‘": "’", "“": "”", "「": "」"}
_OPERATORS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">", "(", ")", ",", ".", "-")


@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, string, op, end
    value: str | int | float
    start: int
    end: int
    text: str  # as written (keywords are matched on this, case-insensitively)

    def is_word(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.lower() in words


def _ident_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def tokenize(source: str) -> list[Token]:
    """Split rule text into tokens; raises :class:`RuleError` on a bad character or string."""
    text = source.translate(_FULL_WIDTH)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "#":  # comment to the end of the line
            while i < n and text[i] != "\n":
                i += 1
            continue
        if ch in _QUOTES:
            i = _string(source, text, i, tokens)
            continue
        if ch.isdigit():
            j = i
            while j < n and text[j].isdigit():
                j += 1
            is_float = j + 1 < n and text[j] == "." and text[j + 1].isdigit()
            if is_float:
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
            if j < n and _ident_char(text[j]) and not text[j].isdigit():
                k = j
                while k < n and _ident_char(text[k]):
                    k += 1
                raise RuleError(
                    f"{source[i:k]!r} is not a number; put a space between a number and a word",
                    kind="bad_number",
                    text=source,
                    start=i,
                    end=k,
                )
            raw = text[i:j]
            value: int | float = float(raw) if is_float else int(raw)
            tokens.append(Token("number", value, i, j, raw))
            i = j
            continue
        if _ident_char(ch):
            j = i
            while j < n and _ident_char(text[j]):
                j += 1
            tokens.append(Token("ident", text[i:j], i, j, text[i:j]))
            i = j
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                value = {"<>": "!=", "==": "="}.get(op, op)
                tokens.append(Token("op", value, i, i + len(op), op))
                i += len(op)
                break
        else:
            raise RuleError(
                f"unexpected character {source[i]!r}",
                kind="bad_character",
                text=source,
                start=i,
                end=i + 1,
            )
    tokens.append(Token("end", "", n, n, ""))
    return tokens


def _string(source: str, text: str, i: int, tokens: list[Token]) -> int:
    """Read a quoted string starting at ``i``; a doubled or backslashed quote is kept."""
    close = _QUOTES[text[i]]
    j = i + 1
    out: list[str] = []
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text):
            out.append(source[j + 1])
            j += 2
            continue
        if ch == close:
            if j + 1 < len(text) and text[j + 1] == close and close in "'\"":
                out.append(ch)
                j += 2
                continue
            tokens.append(Token("string", "".join(out), i, j + 1, source[i : j + 1]))
            return j + 1
        if ch == "\n":
            break
        out.append(source[j])
        j += 1
    raise RuleError(
        f"unterminated string: add the closing {close} on the same line",
        kind="unterminated_string",
        text=source,
        start=i,
        end=j,
    )
