"""Export a segment's members with chosen customer columns to CSV, Excel, Parquet or JSON.

Members are the ones the latest ``apply`` recorded, or — with ``as_of`` — the stored rule
evaluated afresh at that time. CSV gets a UTF-8 BOM so that Excel shows Chinese correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kequn.errors import InputError
from kequn.export import EXPORT_TYPES, check_out_path, write_frame
from kequn.segments.engine import _require, current_members, members
from kequn.segments.errors import closest
from kequn.workspace import WorkspaceLike, opened

__all__ = ["DEFAULT_COLUMNS", "EXPORT_TYPES", "export_segment"]

DEFAULT_COLUMNS = ("customer_id", "name", "city", "channel", "email", "phone")


def export_segment(
    workspace: WorkspaceLike,
    name: str,
    out: str | Path,
    *,
    columns: Sequence[str] | None = None,
    as_of: object = None,
) -> int:
    """Write the members of a stored segment to ``out`` (type from the suffix); return rows."""
    path = check_out_path(out)
    with opened(workspace) as ws:
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
    write_frame(frame, path, sheet=name or "segment")
    return len(frame)
