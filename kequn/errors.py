"""The exceptions kequn raises, in one tree.

Every error a user can cause is a ``KequnError``; most are also the builtin that fits,
so ``except ValueError`` keeps working for callers who do not know kequn::

    KequnError
    ├── WorkspaceError            no workspace, bad config, unknown backend
    │   └── WorkspaceNotFound (FileNotFoundError)
    ├── InputError (ValueError)   a file or argument kequn cannot use
    │   ├── SourceNotFound (FileNotFoundError)
    │   ├── EmptySource
    │   ├── MappingError          a column mapping that names no column / no field
    │   └── RuleError             a segment rule that does not parse or check; it points
    │                             at the bad part (line:col and a caret under the text)
    ├── NotFittedError (AttributeError)   a model used before ``fit``
    ├── AuthError                 no API token, or one that is unknown or revoked (401)
    └── PermissionDenied (PermissionError)   a role that may not do this action (403)

Messages quote the bad value with ``!r``, say where it was found and what is allowed.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable


class KequnError(Exception):
    """Base class of every error kequn raises on purpose."""

    exit_code = 1


class WorkspaceError(KequnError):
    """The workspace is missing, unreadable or misconfigured."""

    exit_code = 3


class WorkspaceNotFound(WorkspaceError, FileNotFoundError):
    """No ``kequn.toml`` in the folder given (or the current one)."""


class InputError(KequnError, ValueError):
    """An input file or argument kequn cannot use."""

    exit_code = 2


class SourceNotFound(InputError, FileNotFoundError):
    """A file named on the command line (or matched by a glob) does not exist."""


class EmptySource(InputError):
    """A file with no header or no data rows."""


class MappingError(InputError):
    """A column mapping that cannot be applied (unknown source column or target field)."""


class RuleError(InputError):
    """A segment rule that is not valid; the message points at the bad part of the rule."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        text: str | None = None,
        start: int | None = None,
        end: int | None = None,
        segment: str | None = None,
    ) -> None:
        self.message = message
        self.kind = kind
        self.text = text
        self.start = start
        self.end = end
        self.segment = segment
        super().__init__(self._render())

    @property
    def line(self) -> int | None:
        if self.text is None or self.start is None:
            return None
        return self.text.count("\n", 0, self.start) + 1

    @property
    def column(self) -> int | None:
        if self.text is None or self.start is None:
            return None
        return self.start - (self.text.rfind("\n", 0, self.start) + 1) + 1

    def _render(self) -> str:
        where = f"in segment {self.segment!r}: " if self.segment else ""
        if self.text is None or self.start is None:
            return where + self.message
        line_no, col = self.line, self.column
        lines = self.text.split("\n")
        src = lines[line_no - 1]
        begin = self.start - (col - 1)
        stop = min(self.end if self.end is not None else self.start + 1, begin + len(src))
        pad = _width(src[: col - 1])
        marks = max(1, _width(src[col - 1 : stop - begin]))
        caret = " " * pad + "^" * marks
        return f"{where}{self.message} (at {line_no}:{col})\n  {src}\n  {caret}"

    def in_segment(self, name: str) -> RuleError:
        """The same error, saying which stored or file segment's rule it is in."""
        if self.segment is not None:
            return self
        return RuleError(
            self.message,
            kind=self.kind,
            text=self.text,
            start=self.start,
            end=self.end,
            segment=name,
        )


def _width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' ; did you mean 'a', 'b'?' for the closest choices, or '' when none is close."""
    choices = list(choices)
    near = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not near:
        lowered = {c.lower(): c for c in choices}
        near = [lowered[m] for m in difflib.get_close_matches(word.lower(), lowered, n=n)]
    if not near:
        return ""
    return "; did you mean " + ", ".join(repr(c) for c in near) + "?"


class NotFittedError(KequnError, AttributeError):
    """A model method that needs ``fit`` was called before it."""


class AuthError(KequnError):
    """No API token, or one that is unknown or revoked; HTTP 401 in the server."""

    exit_code = 4
    status_code = 401


class PermissionDenied(KequnError, PermissionError):
    """A valid token whose role may not do the action asked; HTTP 403 in the server."""

    exit_code = 4
    status_code = 403
