"""Export a segment's members with chosen customer columns to CSV, Excel, Parquet or JSON.

Members are the ones the latest ``apply`` recorded, or — with ``as_of`` — the stored rule
evaluated afresh at that time. CSV gets a UTF-8 BOM so that Excel shows Chinese correctly.

Exports stream: the members are counted first (one query), then read from the store in
Arrow batches and written as they come (:meth:`kequn.store.Store.batches`,
:func:`kequn.export.write_batches`), so ten million members take the memory of one batch.
Rows are sorted by ``customer_id`` up to :data:`kequn.store.SORT_ROWS`; larger exports
come in storage order. Excel holds at most :data:`kequn.export.EXCEL_MAX_ROWS` rows and
is refused above that before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kequn.errors import InputError
from kequn.export import EXPORT_TYPES, STREAM_TYPES, check_out_path, write_batches
from kequn.segments.engine import _require, current_members, members
from kequn.segments.errors import closest
from kequn.store import BatchStream
from kequn.workspace import Workspace, WorkspaceLike, opened

__all__ = ["DEFAULT_COLUMNS", "EXPORT_TYPES", "export_segment", "member_rows"]

DEFAULT_COLUMNS = ("customer_id", "name", "city", "channel", "email", "phone")


def member_rows(
    ws: Workspace,
    name: str,
    *,
    columns: Sequence[str] | None = None,
    as_of: object = None,
    batch_size: int = 65_536,
) -> BatchStream:
    """The members' customer rows as a counted stream of Arrow batches (close it after)."""
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
    table = customers.semi_join(ids, customers.customer_id == ids.customer_id).select(*chosen)
    return ws.store.batches(table, order_by=("customer_id",), batch_size=batch_size)


def export_segment(
    workspace: WorkspaceLike,
    name: str,
    out: str | Path,
    *,
    columns: Sequence[str] | None = None,
    as_of: object = None,
    on_count: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the members of a stored segment to ``out`` (type from the suffix); return rows.

    ``on_count`` hears the number of rows before writing starts, ``progress`` the rows of
    each batch written (a progress bar needs both). ``.jsonl`` writes JSON Lines.
    """
    path = check_out_path(out, STREAM_TYPES)
    with opened(workspace) as ws, member_rows(ws, name, columns=columns, as_of=as_of) as rows:
        if on_count is not None:
            on_count(rows.rows)
        return write_batches(
            rows, rows.schema, path, rows=rows.rows, sheet=name or "segment", progress=progress
        )
