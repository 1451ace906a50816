"""What every route module shares: the error type and the shape of answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

__all__ = ["HTTPProblem", "jsonable", "validation_body"]


class HTTPProblem(Exception):
    """An answer other than 2xx, as ``{"error", "field", "detail"}`` (see schemas.Problem)."""

    def __init__(self, status: int, error: str, field: str | None = None, detail: Any = None):
        super().__init__(error)
        self.status, self.error, self.field, self.detail = status, error, field, detail


def validation_body(errors: list[dict[str, Any]], prefix: str | None = None) -> dict[str, Any]:
    """422 body: the first problem in words, every problem with its field path."""
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if prefix:
            loc = [prefix, *loc]
        problems.append({"field": ".".join(loc), "reason": err.get("msg", "invalid")})
    first = problems[0] if problems else {"field": None, "reason": "invalid request"}
    return {
        "error": f"{first['field']}: {first['reason']}" if first["field"] else first["reason"],
        "field": first["field"],
        "detail": problems,
    }


def jsonable(value: Any) -> Any:
    """Plain JSON data: datetimes as ISO text, NumPy scalars as numbers, Chinese kept."""
    return json.loads(json.dumps(value, default=_default, ensure_ascii=False))


def _default(value: Any) -> Any:
    if isinstance(value, datetime) or hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
