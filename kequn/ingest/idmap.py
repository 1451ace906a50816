"""Explicit identity maps: "source id X of system S is customer C", from a file.

For people no e-mail or phone can link (a loyalty card bought with cash, an account
opened by an assistant), a team keeps a mapping table. Importing it records each pair in
``identities`` (``matched_on = 'id_map'``) so that later imports of that source join the
right customer. A pair that contradicts an identity already recorded is quarantined with
the reason, never applied silently.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from kequn.errors import MappingError, WorkspaceError
from kequn.ingest.mapping import normalise
from kequn.ingest.readers import expand, open_source
from kequn.workspace import Workspace

_FIELDS = {
    "source": ("source", "system", "来源", "来源系统", "系统"),
    "source_id": ("sourceid", "externalid", "memberid", "来源id", "来源编号", "外部id", "会员编号"),
    "customer_id": ("customerid", "客户id", "客户编号", "统一客户id"),
}


@dataclass
class IdMapReport:
    import_id: str
    rows_read: int = 0
    added: int = 0
    already_known: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    customers_new: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def import_id_map(
    workspace: Workspace, paths: list[str | Path], *, source: str | None = None
) -> IdMapReport:
    """Record (source, source_id) → customer_id pairs; ``source`` fills a missing column."""
    store = workspace.store
    if not store.is_duckdb:
        raise WorkspaceError("identity maps are imported through the DuckDB engine for now")
    rows: list[dict] = []
    for path in expand(paths):
        src = open_source(path)
        by_norm = {normalise(h): h for h in src.headers}
        cols = {}
        for name, aliases in _FIELDS.items():
            cols[name] = next((by_norm[a] for a in aliases if a in by_norm), None)
        if cols["source"] is None and source is None:
            raise MappingError(f"{str(path)!r} has no source column; add one or pass --source NAME")
        for name in ("source_id", "customer_id"):
            if cols[name] is None:
                raise MappingError(
                    f"{str(path)!r}: no column for {name} "
                    f"(columns: {', '.join(map(repr, src.headers))})"
                )
        for batch in src.batches(None):
            data = batch.to_pydict()
            for i, row_no in enumerate(data["_row"]):
                raw = {h: data[h][i] for h in src.headers}
                rows.append(
                    {
                        "file": str(path),
                        "row": row_no,
                        "raw": json.dumps(raw, ensure_ascii=False, default=str),
                        "source": _clean(data[cols["source"]][i]) if cols["source"] else source,
                        "source_id": _clean(data[cols["source_id"]][i]),
                        "customer_id": _clean(data[cols["customer_id"]][i]),
                    }
                )
    report = IdMapReport(import_id=uuid.uuid4().hex[:12], rows_read=len(rows))
    if not rows:
        return report
    engine = store.duck
    engine.register("_idmap", pa.Table.from_pylist(rows))
    try:
        with store.transaction():
            _apply(engine, report)
    finally:
        engine.unregister("_idmap")
    return report


def _apply(engine, report: IdMapReport) -> None:
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _idmap_checked AS
        SELECT m.*, d.customer_id AS known,
               CASE WHEN m.source IS NULL OR m.source_id IS NULL OR m.customer_id IS NULL
                        THEN 'missing source, source_id or customer_id'
                    WHEN d.customer_id IS NOT NULL AND d.customer_id <> m.customer_id
                        THEN 'already mapped to another customer'
                    WHEN count(DISTINCT m.customer_id) OVER (PARTITION BY m.source, m.source_id) > 1
                        THEN 'mapped to several customers in the file'
               END AS reason
        FROM _idmap m
        LEFT JOIN identities d ON d.source = m.source AND d.source_id = m.source_id
        """
    )
    now = datetime.now()
    engine.execute(
        """
        INSERT INTO quarantine
        SELECT ?, 'identities', file, row, raw, reason, ? FROM _idmap_checked
        WHERE reason IS NOT NULL
        """,
        [report.import_id, now],
    )
    report.quarantined = dict(
        engine.execute(
            "SELECT reason, count(*) FROM _idmap_checked WHERE reason IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    report.already_known = engine.execute(
        "SELECT count(*) FROM _idmap_checked WHERE reason IS NULL AND known IS NOT NULL"
    ).fetchall()[0][0]
    report.customers_new = engine.execute(
        """
        INSERT INTO customers (customer_id)
        SELECT DISTINCT customer_id FROM _idmap_checked
        WHERE reason IS NULL AND customer_id NOT IN (SELECT customer_id FROM customers)
        """
    ).fetchall()[0][0]
    report.added = engine.execute(
        """
        INSERT INTO identities
        SELECT DISTINCT source, source_id, customer_id, 'id_map', NULL, NULL, ?
        FROM _idmap_checked WHERE reason IS NULL AND known IS NULL
        """,
        [now],
    ).fetchall()[0][0]
    engine.execute("DROP TABLE _idmap_checked")


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text or None
