"""Access requests (查阅/复制请求, GDPR art. 15 / PIPL art. 45): a person's data as JSON.

Every row about the person from every table: each table with a ``*customer_id`` column
(customers, identities, orders, events, memberships, scores, consents, deliveries, ...),
their order lines, the quarantined rows naming them and the audit entries about them.
The export itself is audited (``person.export``).
"""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kequn.workspace import Workspace

__all__ = ["export_person", "person_data"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def person_data(ws: Workspace, key: str) -> dict[str, Any]:
    """Everything stored about the person ``key`` names (customer id, source id, e-mail,
    phone): ``{"customer_id", "generated_at", "tables": {table: [rows]}}``."""
    from kequn.access.audit import _now
    from kequn.privacy.forget import _customer_columns, _quarantine_rows, person_keys
    from kequn.profiles import find_customer

    customer_id = find_customer(ws, key)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, columns in sorted(_customer_columns(ws).items()):
        t = ws.con.table(table)
        cond = None
        for column in columns:
            c = t[column] == customer_id
            cond = c if cond is None else cond | c
        rows = t.filter(cond).to_pyarrow().to_pylist()
        for row in rows:
            for name in ("attributes", "properties", "payload", "detail"):
                if isinstance(row.get(name), str):
                    with contextlib.suppress(ValueError):
                        row[name] = json.loads(row[name])
        if rows:
            tables[table] = rows
    order_ids = [r["order_id"] for r in tables.get("orders", [])]
    if order_ids:
        lines = ws.table("order_lines")
        found = lines.filter(lines.order_id.isin(order_ids)).to_pyarrow().to_pylist()
        if found:
            tables["order_lines"] = found
    wanted = _quarantine_rows(ws, person_keys(ws, customer_id))
    if wanted:
        q = ws.table("quarantine")
        rows = []
        for w in wanted:
            rows += (
                q.filter(
                    q.import_id == w["import_id"],
                    q.source == w["source"],
                    q.row_number == w["row_number"],
                )
                .to_pyarrow()
                .to_pylist()
            )
        tables["quarantine"] = rows
    log = ws.table("audit_log")
    about = log.filter(log.target == customer_id).order_by("seq").to_pyarrow().to_pylist()
    if about:
        tables["audit_log"] = about
    return _jsonable({"customer_id": customer_id, "generated_at": _now(ws), "tables": tables})


def export_person(
    ws: Workspace, key: str, out: str | Path | None = None, *, actor: str | None = None
) -> dict[str, Any]:
    """:func:`person_data`, written to ``out`` as UTF-8 JSON when given; audited."""
    from kequn.access import audit, local_actor

    data = person_data(ws, key)
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    rows = sum(len(v) for v in data["tables"].values())
    audit(
        ws,
        actor or local_actor(),
        "person.export",
        data["customer_id"],
        {"rows": rows, "tables": sorted(data["tables"]), "file": str(out) if out else None},
    )
    return data
