"""The import pipeline: files → staged rows → clean, deduplicated, merged tables.

Stages, all in SQL over whole columns:

1. *stage* each file: map headers to fields, parse values, give every row a reason when
   it cannot be used (missing required field, unparseable value);
2. *deduplicate*: exact duplicate rows of a file are dropped and counted;
3. *resolve identities* of the customers the rows refer to (:mod:`kequn.ingest.identity`);
4. *write*, in one transaction: quarantined rows, customers (merged by the workspace's
   merge rule, the losing values kept in ``customer_history``; :mod:`kequn.ingest.merge`),
   identities, orders (order lines aggregated, returns flagged), events, and the import's
   own record. Rows whose key
   (order id, event id) is already stored are skipped, so re-importing never doubles.

A crash before the commit leaves the workspace exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kequn.config import zone_info
from kequn.errors import InputError, WorkspaceError
from kequn.ingest import parse
from kequn.ingest.identity import resolve
from kequn.ingest.mapping import KINDS, map_columns
from kequn.ingest.merge import MergeRule, merge_customers, merge_rule
from kequn.ingest.readers import Source, expand, open_source
from kequn.ingest.stage import check_orders, create_stage, deduplicate, stage_file
from kequn.privacy.tombstones import detect_personal, mark_erased
from kequn.workspace import Workspace

Q = parse.quote_ident


@dataclass
class FileReport:
    path: str
    format: str
    encoding: str | None
    rows: int
    mapping: dict[str, str]
    unused_columns: list[str]
    skipped: str | None = None


@dataclass
class ImportReport:
    """What one ``kequn import`` did; every input row is accounted for."""

    import_id: str
    kind: str
    source: str
    files: list[FileReport] = field(default_factory=list)
    rows_read: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    rows_used: int = 0
    imported: int = 0
    already_present: int = 0
    returns: int = 0
    customers_new: int = 0
    customers_matched: int = 0
    customers_merged_by: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # columns kept in attributes/properties that look personal: {column: {class, reason}}
    personal_fields: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "files"}
        data["files"] = [f.__dict__ for f in self.files]
        data["quarantined_total"] = self.quarantined_total
        return data


def import_files(
    workspace: Workspace,
    kind: str,
    paths: list[str | Path],
    *,
    source: str = "default",
    column_map: dict[str, str] | None = None,
    keep_duplicates: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import customers, orders or events from CSV/Excel/Parquet files (paths or globs).

    All files of one call are one unit: either everything is written or nothing.
    Exact duplicate rows of a file are dropped unless ``keep_duplicates`` (for files such
    as CDNow's, where identical rows are separate transactions without an id).
    ``progress(done_bytes, total_bytes)`` is called while files are read.
    """
    if kind not in KINDS:
        raise InputError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    started = time.perf_counter()
    started_at = datetime.now()
    files = expand(paths)
    store = workspace.store
    if not store.is_duckdb:
        raise WorkspaceError(
            "import writes through the DuckDB engine for now; import into a DuckDB "
            "workspace, then copy the tables to your backend"
        )
    engine = store.duck
    cfg = workspace.config
    if kind == "customers":
        merge_rule(cfg)  # a bad [identity] setting fails before any work
    with _engine_settings(engine, cfg):
        report = ImportReport(import_id=uuid.uuid4().hex[:12], kind=kind, source=source)
        sources = [open_source(p) for p in files]  # fail early on a bad or empty file
        mappings = [
            map_columns(kind, s.headers, column_map, cfg.column_map, source_name=repr(str(s.path)))
            for s in sources
        ]
        total = sum(s.size for s in sources)
        done = 0
        create_stage(engine, kind)
        digests: list[tuple[Source, str]] = []
        for src, mapping in zip(sources, mappings, strict=True):
            digest = _sha256(src.path)
            seen = engine.execute(
                "SELECT import_id, finished_at FROM imports WHERE kind = ? AND sha256 = ? LIMIT 1",
                [kind, digest],
            ).fetchall()
            file_report = FileReport(
                str(src.path), src.format, src.encoding, 0, mapping.fields, mapping.unused
            )
            report.files.append(file_report)
            if seen:
                file_report.skipped = (
                    f"already imported (import {seen[0][0]}, {seen[0][1]:%Y-%m-%d})"
                )
                done += src.size
                continue

            def tick(pos: int, base: int = done) -> None:
                if progress:
                    progress(base + pos, total)

            index = len(digests)
            engine.execute("INSERT INTO _files VALUES (?, ?)", [index, str(src.path)])
            file_report.rows = stage_file(engine, kind, index, src, mapping, cfg, tick)
            done += src.size
            digests.append((src, digest))
        report.rows_read = sum(f.rows for f in report.files)
        if progress:
            progress(total, total)
        if not digests:
            report.seconds = time.perf_counter() - started
            return report

        report.duplicates = deduplicate(engine, kind, report.rows_read, keep=keep_duplicates)
        if kind == "orders":
            check_orders(engine)
        mark_erased(engine, kind)  # rows of erased people: quarantined, never written
        report.quarantined = dict(
            engine.execute(
                "SELECT _reason, count(*) FROM _stage WHERE _reason IS NOT NULL "
                "GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        report.rows_used = report.rows_read - report.duplicates - report.quarantined_total

        store_tx = store.transaction()
        store_tx.__enter__()
        try:
            _resolve_customers(engine, kind, source, report)
            _write_quarantine(engine, kind, report)
            unused = [h for m in mappings for h in m.unused]
            report.personal_fields = detect_personal(
                engine, kind, unused, report.import_id, cfg.raw
            )
            if kind == "customers":
                now = datetime.now(zone_info(cfg.timezone)).replace(tzinfo=None)
                _write_customers(engine, source, merge_rule(cfg), report, now)
            elif kind == "orders":
                _write_orders(engine, source, report)
            else:
                _write_events(engine, source, report)
            now = datetime.now()
            for src, digest in digests:
                rows = next(f.rows for f in report.files if f.path == str(src.path))
                engine.execute(
                    "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        report.import_id,
                        kind,
                        source,
                        str(src.path.resolve()),
                        digest,
                        started_at,
                        now,
                        rows,
                        report.duplicates,
                        report.quarantined_total,
                        report.returns,
                        report.imported,
                        report.customers_new,
                        report.customers_matched,
                    ],
                )
        except BaseException as exc:
            store_tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            store_tx.__exit__(None, None, None)
        finally:
            for name in ("_stage", "_files", "_incoming", "_resolved", "_orders_new", "_rows"):
                engine.execute(f"DROP TABLE IF EXISTS {name}")
        report.seconds = time.perf_counter() - started
        return report


@contextlib.contextmanager
def _engine_settings(engine, cfg) -> Iterator[None]:
    """Import-time DuckDB settings, restored afterwards.

    Row numbers come from the reader, so DuckDB may reorder rows: it then streams large
    inserts instead of buffering them; the memory cap makes it spill to disk instead of
    growing (``[import] memory_limit``).
    """
    engine.execute("SET preserve_insertion_order = false")
    try:
        engine.execute(f"SET memory_limit = {parse.quote_str(cfg.import_memory_limit)}")
    except Exception as exc:  # DuckDB's message names the accepted forms
        engine.execute("RESET preserve_insertion_order")
        raise WorkspaceError(f"[import] memory_limit = {cfg.import_memory_limit!r}: {exc}") from exc
    try:
        yield
    finally:
        engine.execute("RESET memory_limit")
        engine.execute("RESET preserve_insertion_order")


def _resolve_customers(engine, kind: str, source: str, report: ImportReport) -> None:
    email = parse.email_norm("email")
    phone = parse.phone_norm("phone")
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _incoming AS
        SELECT source_id,
               arg_max({email}, _row) FILTER (WHERE ({email}) IS NOT NULL) AS email_norm,
               arg_max({phone}, _row) FILTER (WHERE ({phone}) IS NOT NULL) AS phone_norm
        FROM _stage WHERE _reason IS NULL GROUP BY source_id
        """
    )
    resolve(engine, source)
    src = parse.quote_str(source)
    # New customers get a row (attributes follow for customer files); new source ids an
    # identity; known ones refresh the e-mail / phone they were last seen with.
    engine.execute(
        "INSERT INTO customers (customer_id) SELECT customer_id FROM _resolved WHERE is_new"
    )
    engine.execute(
        f"""
        INSERT INTO identities
        SELECT {src}, r.source_id, r.customer_id, r.matched_on, i.email_norm, i.phone_norm,
               now()::TIMESTAMP
        FROM _resolved r JOIN _incoming i USING (source_id)
        WHERE r.matched_on <> 'id'
        """
    )
    engine.execute(
        f"""
        UPDATE identities d SET email_norm = coalesce(i.email_norm, d.email_norm),
                                phone_norm = coalesce(i.phone_norm, d.phone_norm)
        FROM _incoming i
        WHERE d.source = {src} AND d.source_id = i.source_id
        """
    )
    report.customers_new = engine.execute("SELECT count(*) FROM _resolved WHERE is_new").fetchall()[
        0
    ][0]
    merged = engine.execute(
        "SELECT matched_on, count(*) FROM _resolved WHERE NOT is_new GROUP BY 1"
    ).fetchall()
    report.customers_merged_by = dict(merged)
    report.customers_matched = sum(report.customers_merged_by.values())


def _write_quarantine(engine, kind: str, report: ImportReport) -> None:
    engine.execute(
        f"""
        INSERT INTO quarantine
        SELECT {parse.quote_str(report.import_id)}, {parse.quote_str(kind)}, f.path, _row,
               _raw, _reason, now()::TIMESTAMP
        FROM _stage JOIN _files f USING (_file)
        WHERE _reason IS NOT NULL ORDER BY _file, _row
        """
    )


def _write_customers(
    engine, source: str, rule: MergeRule, report: ImportReport, now: datetime
) -> None:
    """Merge the rows into the unified profiles by the workspace's merge rule; the values
    that lose stay in ``customer_history`` (:mod:`kequn.ingest.merge`)."""
    report.imported = merge_customers(
        engine, source=source, import_id=report.import_id, rule=rule, now=now
    )


def _write_orders(engine, source: str, report: ImportReport) -> None:
    # Lines → orders first, then one join per order (not per line): check_orders left
    # one customer per order id among the usable rows.
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _orders_new AS
        SELECT s.order_id, r.customer_id, s.* EXCLUDE (order_id, source_id)
        FROM (SELECT order_id, any_value(source_id) AS source_id,
                     min(ordered_at) AS ordered_at,
                     round(CASE WHEN bool_or(is_return) THEN -abs(sum(line_amount))
                                ELSE sum(line_amount) END, 2) AS amount,
                     sum(quantity) AS quantity, count(*) AS lines,
                     CASE WHEN bool_or(is_return) THEN coalesce(any_value(status), 'return')
                          ELSE coalesce(any_value(status), 'purchase') END AS status,
                     bool_or(is_return) AS is_return,
                     any_value(channel) AS channel, bool_or(_has_products) AS has_products
              FROM _stage WHERE _reason IS NULL GROUP BY order_id) s
        JOIN _resolved r USING (source_id)
        """
    )
    total = engine.execute("SELECT count(*) FROM _orders_new").fetchall()[0][0]
    engine.execute("DELETE FROM _orders_new WHERE order_id IN (SELECT order_id FROM orders)")
    new = engine.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_return) FROM _orders_new"
    ).fetchall()[0]
    report.imported, report.returns = new
    report.already_present = total - report.imported
    engine.execute(
        f"""
        INSERT INTO orders
        SELECT order_id, customer_id, ordered_at, amount, quantity, lines, status, is_return,
               channel, {parse.quote_str(source)}, {parse.quote_str(report.import_id)}
        FROM _orders_new
        """
    )
    # lines of orders that were already stored are not written again
    only_new = (
        "AND s.order_id IN (SELECT order_id FROM _orders_new)" if report.already_present else ""
    )
    engine.execute(
        f"""
        INSERT INTO order_lines
        SELECT s.order_id, s._row, s.product_id, s.product_name, s.category, s.quantity,
               s.unit_price, s.line_amount
        FROM _stage s
        WHERE s._reason IS NULL AND s._has_products {only_new}
        """
    )


def _write_events(engine, source: str, report: ImportReport) -> None:
    rows = engine.execute(
        f"""
        INSERT INTO events
        SELECT s.event_id, any_value(r.customer_id), min(s.occurred_at), any_value(s.type),
               any_value(s.properties), {parse.quote_str(source)},
               {parse.quote_str(report.import_id)}
        FROM _stage s JOIN _resolved r USING (source_id)
        WHERE s._reason IS NULL AND s.event_id NOT IN (SELECT event_id FROM events)
        GROUP BY s.event_id
        """
    ).fetchall()[0][0]
    used = engine.execute(
        "SELECT count(DISTINCT event_id) FROM _stage WHERE _reason IS NULL"
    ).fetchall()[0][0]
    report.imported = rows
    report.already_present = used - rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
