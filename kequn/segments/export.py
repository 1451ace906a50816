"""Export a segment's members with chosen customer columns to CSV, Excel, Parquet or JSON.

Members are the ones the latest ``apply`` recorded, or — with ``as_of`` — the stored rule
evaluated afresh at that time. CSV gets a UTF-8 BOM so that Excel shows Chinese correctly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from kequn.errors import InputError
from kequn.segments.engine import WorkspaceLike, _opened, _require, current_members, members
from kequn.segments.errors import closest

__all__ = ["DEFAULT_COLUMNS", "EXPORT_TYPES", "export_segment"]

EXPORT_TYPES = (".csv", ".xlsx", ".parquet", ".json")
DEFAULT_COLUMNS = ("customer_id", "name", "city", "channel", "email", "phone")
EXCEL_MAX_ROWS = 1_048_575


def export_segment(
    workspace: WorkspaceLike,
    name: str,
    out: str | Path,
    *,
    columns: Sequence[str] | None = None,
    as_of: object = None,
) -> int:
    """Write the members of a stored segment to ``out`` (type from the suffix); return rows."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_TYPES:
        raise InputError(
            f"--out {str(path)!r}: unknown file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(EXPORT_TYPES)}"
        )
    with _opened(workspace) as ws:
        _require(ws, name)
        ids = current_members(ws, name) if as_of is None else members(ws, name, as_of)
        customers = ws.table("customers")
        available = list(customers.columns)
        chosen = list(columns) if columns else [c for c in DEFAULT_COLUMNS if c in available]
        for col in chosen:
            if col not in available:
                raise InputError(
                    f"unknown column {col!r}; customers have: {', '.join(available)}"
                    + closest(col, available)
                )
        if "customer_id" not in chosen:
            chosen.insert(0, "customer_id")
        table = (
            customers.semi_join(ids, customers.customer_id == ids.customer_id)
            .select(*chosen)
            .order_by("customer_id")
        )
        frame = table.to_pandas()
    if suffix == ".xlsx" and len(frame) > EXCEL_MAX_ROWS:
        raise InputError(
            f"--out {str(path)!r}: {len(frame):,} rows do not fit in one Excel sheet; "
            "write .csv or .parquet instead"
        )
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False, encoding="utf-8-sig")
        elif suffix == ".xlsx":
            frame.to_excel(path, index=False, sheet_name=_sheet(name))
        elif suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            records = json.loads(frame.to_json(orient="records", date_format="iso"))
            path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {str(path)!r}: cannot write: {exc.strerror or exc}") from exc
    return len(frame)


def _sheet(name: str) -> str:
    """An Excel sheet name: at most 31 characters, none of []:*?/\\."""
    clean = "".join("_" if ch in "[]:*?/\\" else ch for ch in name)[:31]
    return clean or "segment"
