"""The service's write path: what it accepted, in order, durable before it answers.

Every accepted item (an event, an order, a customer upsert) gets a row in ``ingest_log``
with a sequence number, keyed by its id: a retried request finds its key and is accepted
once. The item itself goes to the canonical table (events, orders, customers) in the same
DuckDB transaction, so after ``kill -9`` either both are there or neither; DuckDB syncs its
write-ahead log at commit, so a committed batch is on disk when the HTTP answer leaves.

``service_state`` holds the sequence number up to which the live evaluator has recorded the
consequences (memberships, deliveries). On restart, the customers of every later row are
re-evaluated: processing resumes where it stopped.

This is storage code: it speaks DuckDB SQL through ``ws.store.duck`` (the primary key that
makes retries idempotent has no Ibis equivalent), and the service refuses other backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from kequn.errors import WorkspaceError
from kequn.ingest.merge import record_upserts
from kequn.store import CUSTOMERS, EVENTS, ORDERS
from kequn.workspace import Workspace

__all__ = ["Accepted", "Journal"]

_LOG_DDL = """
CREATE TABLE IF NOT EXISTS ingest_log (
    key VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    customer_id VARCHAR,
    detail VARCHAR,
    received_at TIMESTAMP NOT NULL
)"""
_STATE_DDL = "CREATE TABLE IF NOT EXISTS service_state (key VARCHAR PRIMARY KEY, value BIGINT)"


@dataclass
class Accepted:
    """What one write stored: keys new and already seen, and who needs re-evaluation."""

    new: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # keys of people erased (forget)
    # customer id → reasons: ("event", type), ("order", ""), ("customer", "")
    dirty: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    last_seq: int = 0


class Journal:
    """The ingest log and the processing cursor of one workspace."""

    def __init__(self, ws: Workspace) -> None:
        if not ws.store.is_duckdb:
            raise WorkspaceError(
                "kequn serve needs the DuckDB backend (it relies on DuckDB's primary keys "
                'and write-ahead log); set [store] backend = "duckdb" in kequn.toml'
            )
        self.ws = ws
        self.duck = ws.store.duck
        self.duck.execute(_LOG_DDL)
        self.duck.execute(_STATE_DDL)
        row = self.duck.execute("SELECT coalesce(max(seq), 0) FROM ingest_log").fetchall()
        self.seq = int(row[0][0])

    # --- the processing cursor ------------------------------------------------------------

    def processed(self, ws: Workspace | None = None) -> int:
        duck = (ws or self.ws).store.duck
        rows = duck.execute(
            "SELECT value FROM service_state WHERE key = 'processed_seq'"
        ).fetchall()
        return int(rows[0][0]) if rows else 0

    def set_processed(self, seq: int, ws: Workspace | None = None) -> None:
        """Advance the cursor; call inside the transaction that records the consequences.

        ``ws`` is the connection of that transaction (the evaluator's), not the writer's.
        """
        (ws or self.ws).store.duck.execute(
            "INSERT INTO service_state VALUES ('processed_seq', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = greatest(service_state.value, excluded.value)",
            [seq],
        )

    def unprocessed(
        self, ws: Workspace | None = None
    ) -> tuple[dict[str, set[tuple[str, str]]], int]:
        """Customers whose items were accepted but not yet evaluated (after a crash)."""
        rows = (
            (ws or self.ws)
            .store.duck.execute(
                "SELECT customer_id, kind, detail, seq FROM ingest_log WHERE seq > ? ORDER BY seq",
                [self.processed(ws)],
            )
            .fetchall()
        )
        dirty: dict[str, set[tuple[str, str]]] = {}
        last = 0
        for customer_id, kind, detail, seq in rows:
            if customer_id is not None:
                dirty.setdefault(customer_id, set()).add((kind, detail or ""))
            last = max(last, int(seq))
        return dirty, last

    # --- writing ------------------------------------------------------------------------------

    def write(
        self,
        *,
        events: Sequence[dict[str, Any]] = (),
        orders: Sequence[dict[str, Any]] = (),
        customers: Sequence[dict[str, Any]] = (),
        now: datetime,
    ) -> Accepted:
        """Store a batch in one transaction; items whose key was seen before are skipped."""
        result = Accepted()
        items: list[tuple[str, str, dict[str, Any]]] = []  # (key, kind, row)
        for row in events:
            items.append((f"event:{row['event_id']}", "event", row))
        for row in orders:
            items.append((f"order:{row['order_id']}", "order", row))
        for row in customers:
            # upserts have no natural id: each is its own item, in arrival order
            items.append(
                (f"customer:{row['customer_id']}:{self.seq + len(items) + 1}", "customer", row)
            )
        if not items:
            return result
        erased = self._erased({row["customer_id"] for _, _, row in items})
        if erased:
            result.erased = [key for key, _, row in items if row["customer_id"] in erased]
            items = [item for item in items if item[2]["customer_id"] not in erased]
            if not items:
                return result
        seen: set[str] = set()
        log_rows = []
        for key, kind, row in items:
            if key in seen:  # the same id twice in one request counts once
                result.duplicates.append(key)
                continue
            seen.add(key)
            self.seq += 1
            detail = row.get("type", "") if kind == "event" else ""
            log_rows.append((key, self.seq, kind, row["customer_id"], detail, now))
        log = pa.table(
            {
                "key": [r[0] for r in log_rows],
                "seq": pa.array([r[1] for r in log_rows], pa.int64()),
                "kind": [r[2] for r in log_rows],
                "customer_id": [r[3] for r in log_rows],
                "detail": [r[4] for r in log_rows],
                "received_at": pa.array([r[5] for r in log_rows], pa.timestamp("us")),
            }
        )
        duck = self.duck
        store = self.ws.store
        with store.transaction():
            duck.register("_kequn_log", log)
            try:
                inserted = duck.execute(
                    "INSERT INTO ingest_log SELECT * FROM _kequn_log "
                    "ON CONFLICT DO NOTHING RETURNING key"
                ).fetchall()
            finally:
                duck.unregister("_kequn_log")
            fresh = {r[0] for r in inserted}
            kinds: dict[str, list[dict[str, Any]]] = {"event": [], "order": [], "customer": []}
            for key, kind, row in items:
                if key in fresh:
                    fresh.discard(key)  # first occurrence only
                    kinds[kind].append(row)
                    result.new.append(key)
                    reason = (kind, row.get("type", "") if kind == "event" else "")
                    result.dirty.setdefault(row["customer_id"], set()).add(reason)
                elif key not in result.duplicates and key not in result.new:
                    result.duplicates.append(key)
            self._upsert_customers(kinds["customer"], now)
            referenced = {r["customer_id"] for r in kinds["event"] + kinds["order"]}
            self._add_unknown_customers(referenced, now)
            store.append("events", _table(kinds["event"], EVENTS))
            store.append("orders", _table(kinds["order"], ORDERS))
        result.last_seq = self.seq
        return result

    def _erased(self, ids: set[str]) -> set[str]:
        """Customer ids of people erased with ``kequn forget``: their data is not taken again."""
        if not self.duck.execute("SELECT count(*) FROM erasure_keys").fetchall()[0][0]:
            return set()
        self.duck.register("_kequn_probe", pa.table({"customer_id": sorted(ids)}))
        try:
            rows = self.duck.execute(
                "SELECT p.customer_id FROM _kequn_probe p, privacy_salt s, erasure_keys k "
                "WHERE k.key_hash = sha256(s.salt || 'id:' || p.customer_id)"
            ).fetchall()
        finally:
            self.duck.unregister("_kequn_probe")
        return {r[0] for r in rows}

    def _add_unknown_customers(self, ids: set[str], now: datetime) -> None:
        """An event from a customer not seen before creates the customer, so rules see them."""
        if not ids:
            return
        self.duck.register("_kequn_probe", pa.table({"customer_id": sorted(ids)}))
        try:
            self.duck.execute(
                "INSERT INTO customers (customer_id, created_at, updated_at) "
                "SELECT p.customer_id, $now, $now FROM _kequn_probe p "
                "ANTI JOIN customers c ON c.customer_id = p.customer_id",
                {"now": now},
            )
        finally:
            self.duck.unregister("_kequn_probe")

    def _upsert_customers(self, rows: list[dict[str, Any]], now: datetime) -> None:
        """Merge attributes into existing customers: fields not given are kept, never lost."""
        if not rows:
            return
        merged: dict[str, dict[str, Any]] = {}
        ids = {r["customer_id"] for r in rows}
        probe = pa.table({"customer_id": sorted(ids)})
        self.duck.register("_kequn_probe", probe)
        try:
            current = (
                self.duck.execute(
                    "SELECT c.* FROM customers c JOIN _kequn_probe p USING (customer_id)"
                )
                .to_arrow_table()
                .to_pylist()
            )
        finally:
            self.duck.unregister("_kequn_probe")
        before = {row["customer_id"]: dict(row) for row in current}
        for row in current:
            merged[row["customer_id"]] = row
        for row in rows:  # in arrival order: later upserts win field by field
            base = merged.setdefault(
                row["customer_id"], {"customer_id": row["customer_id"], "created_at": now}
            )
            attrs = json.loads(base.get("attributes") or "{}")
            for name, value in row.items():
                if name == "attributes":
                    attrs.update(value or {})
                elif name in CUSTOMERS.names:
                    base[name] = value
                else:
                    attrs[name] = value
            base["attributes"] = json.dumps(attrs, ensure_ascii=False) if attrs else None
            base["updated_at"] = now
        self.ws.store.delete("customers", customer_id=sorted(merged))
        self.ws.store.append("customers", _table(list(merged.values()), CUSTOMERS))
        record_upserts(self.duck, before, merged, now)  # replaced values stay in history


def _table(rows: list[dict[str, Any]], schema) -> pa.Table:
    target = schema.to_pyarrow()
    return pa.table(
        {
            name: pa.array([r.get(name) for r in rows], target.field(name).type)
            for name in target.names
        }
    )
