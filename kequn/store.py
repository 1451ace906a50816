"""The storage layer: canonical tables on an Ibis backend (embedded DuckDB by default).

Everything above this module works with Ibis expressions over the tables defined here and
never with a particular engine. The few things Ibis does not abstract — transactions and
bulk loading of Arrow data — live here, with a fast path for DuckDB and a portable one
for any other backend.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa

from kequn.errors import WorkspaceError

# One row per customer; unknown input columns are kept in ``attributes`` (JSON text) so
# nothing a user imports is lost.
CUSTOMERS = ibis.schema(
    {
        "customer_id": "string",
        "name": "string",
        "name_en": "string",
        "gender": "string",
        "birth_date": "date",
        "age_band": "string",
        "city": "string",
        "province": "string",
        "channel": "string",
        "email": "string",
        "phone": "string",
        "created_at": "timestamp",
        "updated_at": "timestamp",
        "attributes": "string",
    }
)

# One row per order (order lines are aggregated on import). Returns and cancellations
# are kept with ``is_return`` set and a negative amount; they are not purchases.
ORDERS = ibis.schema(
    {
        "order_id": "string",
        "customer_id": "string",
        "ordered_at": "timestamp",
        "amount": "float64",
        "quantity": "float64",
        "lines": "int64",
        "status": "string",
        "is_return": "boolean",
        "channel": "string",
        "source": "string",
        "import_id": "string",
    }
)

# Order lines with a product, kept when the input names products (for personas and
# "bought product X" rules). ``line_no`` is the line's data row in its source file.
ORDER_LINES = ibis.schema(
    {
        "order_id": "string",
        "line_no": "int64",
        "product_id": "string",
        "product_name": "string",
        "category": "string",
        "quantity": "float64",
        "unit_price": "float64",
        "amount": "float64",
    }
)

EVENTS = ibis.schema(
    {
        "event_id": "string",
        "customer_id": "string",
        "occurred_at": "timestamp",
        "type": "string",
        "properties": "string",
        "source": "string",
        "import_id": "string",
    }
)

IDENTITIES = ibis.schema(
    {
        "source": "string",
        "source_id": "string",
        "customer_id": "string",
        "matched_on": "string",
        "email_norm": "string",
        "phone_norm": "string",
        "created_at": "timestamp",
    }
)

QUARANTINE = ibis.schema(
    {
        "import_id": "string",
        "kind": "string",
        "source": "string",
        "row_number": "int64",
        "raw": "string",
        "reason": "string",
        "created_at": "timestamp",
    }
)

IMPORTS = ibis.schema(
    {
        "import_id": "string",
        "kind": "string",
        "source": "string",
        "path": "string",
        "sha256": "string",
        "started_at": "timestamp",
        "finished_at": "timestamp",
        "rows_read": "int64",
        "duplicates": "int64",
        "quarantined": "int64",
        "returns": "int64",
        "imported": "int64",
        "customers_new": "int64",
        "customers_merged": "int64",
    }
)

# Segment definitions, one row per segment × evaluation, and membership intervals
# (``exited_at`` NULL while the customer is a member); see kequn/segments/engine.py.
SEGMENTS = ibis.schema(
    {
        "name": "string",
        "label_zh": "string",
        "label_en": "string",
        "description": "string",
        "owner": "string",
        "tags": "string",
        "rule": "string",
        "source": "string",
        "updated_at": "timestamp",
        "schedule": "string",  # refresh schedule: "1d", "6h", a cron expression or NULL
    }
)

SEGMENT_RUNS = ibis.schema(
    {
        "segment": "string",
        "as_of": "timestamp",
        "size": "int64",
        "entered": "int64",
        "exited": "int64",
        "computed_at": "timestamp",
        "data_as_of": "timestamp",  # the newest order/event at or before as_of it saw
    }
)

MEMBERSHIPS = ibis.schema(
    {
        "segment": "string",
        "customer_id": "string",
        "entered_at": "timestamp",
        "exited_at": "timestamp",
    }
)

# Predicted value per customer at an as_of: BG/NBD or Pareto/NBD with Gamma-Gamma
# (kequn/models/clv.py); one row per customer × as_of × model × horizon.
CLV_SCORES = ibis.schema(
    {
        "customer_id": "string",
        "as_of": "timestamp",
        "model": "string",
        "horizon_days": "int64",
        "expected_purchases": "float64",
        "p_alive": "float64",
        "expected_value": "float64",
        "clv": "float64",
        "computed_at": "timestamp",
    }
)

# Stored RFM runs, one row per customer × as_of × scheme (kequn/features/rfm.py).
RFM_SCORES = ibis.schema(
    {
        "customer_id": "string",
        "as_of": "date",
        "scheme": "string",
        "recency_days": "int64",
        "frequency": "int64",
        "monetary": "float64",
        "avg_order_value": "float64",
        "r_score": "int64",
        "f_score": "int64",
        "m_score": "int64",
        "rfm_segment": "string",
        "first_purchase_date": "date",
        "last_purchase_date": "date",
        "bins": "int64",
        "method": "string",
        "net_returns": "boolean",
        "computed_at": "timestamp",
    }
)

# Churn risk per customer at an as_of (kequn/models/churn_store.py); one row per
# customer × as_of × model (e.g. churn-hgb-90d).
CHURN_SCORES = ibis.schema(
    {
        "customer_id": "string",
        "as_of": "timestamp",
        "churn_risk": "float64",
        "model": "string",
        "computed_at": "timestamp",
    }
)

# K-means runs (kequn/insight): assignments per customer × run, and one row per run with
# its features, silhouette curve and each cluster's explanation rule (JSON text).
CLUSTERS = ibis.schema(
    {
        "customer_id": "string",
        "run_id": "string",
        "as_of": "timestamp",
        "cluster": "int64",
        "computed_at": "timestamp",
    }
)

CLUSTER_RUNS = ibis.schema(
    {
        "run_id": "string",
        "as_of": "timestamp",
        "k": "int64",
        "features": "string",
        "silhouette": "float64",
        "curve": "string",
        "method": "string",
        "rules": "string",
        "computed_at": "timestamp",
    }
)

# Lifecycle stages per customer at an as_of (kequn/insight/lifecycle.py); a day as_of is
# recorded as its 00:00; one run per as_of.
LIFECYCLE_STAGES = ibis.schema(
    {
        "customer_id": "string",
        "as_of": "timestamp",
        "status_stage": "string",
        "funnel_stage": "string",
        "computed_at": "timestamp",
    }
)

# One row per customer the first time an experiment assigns them (kequn/act/experiments.py);
# the arm is a pure function of (experiment, customer), this records when and from which trigger.
EXPERIMENT_ASSIGNMENTS = ibis.schema(
    {
        "experiment": "string",
        "customer_id": "string",
        "variant": "string",
        "trigger": "string",
        "segment": "string",
        "assigned_at": "timestamp",
    }
)

# API tokens (kequn/access/tokens.py): only a SHA-256 hash of each secret and a short prefix
# to recognise it by; ``revoked_at`` is set when the token is revoked (the row stays).
API_TOKENS = ibis.schema(
    {
        "name": "string",
        "role": "string",
        "token_hash": "string",
        "prefix": "string",
        "created_at": "timestamp",
        "created_by": "string",
        "revoked_at": "timestamp",
        # comma-separated field-class grants (``sensitive``, ``personal``); docs/privacy.md
        "grants": "string",
    }
)

# The append-only audit log (kequn/access/audit.py): rule changes, exports, token use.
# ``seq`` orders entries written in the same instant; ``detail`` is JSON text.
AUDIT_LOG = ibis.schema(
    {
        "seq": "int64",
        "at": "timestamp",
        "actor": "string",
        "action": "string",
        "target": "string",
        "detail": "string",
    }
)

# Triggers (kequn/act/triggers.py): one row per trigger; ``config`` is the whole definition
# as JSON text (settings, cap, quiet hours, experiment). Env-var references stay unresolved.
TRIGGERS = ibis.schema(
    {
        "name": "string",
        "segment": "string",
        "on": "string",
        "channel": "string",
        "config": "string",
        "updated_at": "timestamp",
    }
)

# The delivery outbox (kequn/act/outbox.py): one row per transition × trigger, written in the
# transaction that records the transition; ``payload`` is the JSON body sent, ``status`` one
# of pending, sent, dead, holdout, capped.
DELIVERIES = ibis.schema(
    {
        "delivery_id": "string",
        "idempotency_key": "string",
        "trigger": "string",
        "segment": "string",
        "customer_id": "string",
        "kind": "string",
        "channel": "string",
        "variant": "string",
        "payload": "string",
        "status": "string",
        "attempts": "int64",
        "next_attempt_at": "timestamp",
        "last_error": "string",
        "created_at": "timestamp",
        "sent_at": "timestamp",
        "updated_at": "timestamp",
    }
)

# Tags (kequn/tags/): the catalogue, one row per tag (``definition`` is JSON text: the rule,
# cases, interest or score settings); values are stored as changes — a row per customer
# whose value changed at a refresh (NULL value and number when it was lost) — so the
# latest row at or before as_of is the value then; one row per refresh in ``tag_runs``.
TAGS = ibis.schema(
    {
        "name": "string",
        "label_zh": "string",
        "label_en": "string",
        "type": "string",
        "layer": "string",
        "owner": "string",
        "description": "string",
        "source": "string",
        "definition": "string",
        "schedule": "string",
        "updated_at": "timestamp",
    }
)

TAG_VALUES = ibis.schema(
    {
        "customer_id": "string",
        "tag": "string",
        "value": "string",
        "number": "float64",
        "as_of": "timestamp",
        "computed_at": "timestamp",
    }
)

TAG_RUNS = ibis.schema(
    {
        "tag": "string",
        "as_of": "timestamp",
        "computed_at": "timestamp",
        "kind": "string",
        "valued": "int64",
        "compared": "int64",
        "changed": "int64",
        "written": "int64",
    }
)

# Campaign costs (kequn/economics/costs.py): one row per imported cost line.
CAMPAIGN_COSTS = ibis.schema(
    {
        "campaign": "string",
        "channel": "string",
        "period_start": "date",
        "period_end": "date",
        "labour": "float64",
        "technology": "float64",
        "material": "float64",
        "source": "string",
        "imported_at": "timestamp",
    }
)

# Privacy (kequn/privacy/, docs/privacy.md). Consent per customer × channel, latest ``at`` wins.
CONSENTS = ibis.schema(
    {
        "customer_id": "string",
        "channel": "string",
        "status": "string",
        "at": "timestamp",
        "source": "string",
        "recorded_at": "timestamp",
        "recorded_by": "string",
    }
)

# Field classes found by imports (columns that look personal); kequn.toml [privacy.fields] wins.
FIELD_CLASSES = ibis.schema(
    {
        "field": "string",
        "class": "string",
        "reason": "string",
        "import_id": "string",
        "detected_at": "timestamp",
    }
)

# Erasures (right to be forgotten): who, when, which tables and how many rows — never the
# data. ``erasure_keys`` holds salted SHA-256 hashes of the person's identifiers, so a later
# import can recognise (and quarantine) them without storing them.
ERASURES = ibis.schema(
    {
        "erasure_id": "string",
        "erased_at": "timestamp",
        "actor": "string",
        "keys": "int64",
        "tables": "string",
    }
)

ERASURE_KEYS = ibis.schema(
    {
        "erasure_id": "string",
        "kind": "string",
        "key_hash": "string",
        "erased_at": "timestamp",
    }
)

# What erased people's orders and events leave behind: anonymous sums per day × kind ×
# channel (orders) or type (events), merged into the existing row so no row is one person's.
ERASED_TOTALS = ibis.schema(
    {
        "day": "date",
        "kind": "string",
        "category": "string",
        "rows": "int64",
        "amount": "float64",
        "quantity": "float64",
    }
)

# The workspace's random salt for the erasure hashes (one row).
PRIVACY_SALT = ibis.schema({"salt": "string", "created_at": "timestamp"})

# Every value a source record gave for a customer field (columns and ``attributes`` keys), as
# text (kequn/ingest/merge.py): ``superseded_at`` empty while the profile shows it, set with
# the ``reason`` once a merge rule, a newer import or an API upsert replaced it.
CUSTOMER_HISTORY = ibis.schema(
    {
        "customer_id": "string",
        "field": "string",
        "value": "string",
        "source": "string",
        "source_id": "string",
        "import_id": "string",
        "observed_at": "timestamp",
        "superseded_at": "timestamp",
        "reason": "string",
    }
)

TABLES: dict[str, ibis.Schema] = {
    "customers": CUSTOMERS,
    "orders": ORDERS,
    "order_lines": ORDER_LINES,
    "events": EVENTS,
    "identities": IDENTITIES,
    "quarantine": QUARANTINE,
    "imports": IMPORTS,
    "segments": SEGMENTS,
    "segment_runs": SEGMENT_RUNS,
    "memberships": MEMBERSHIPS,
    "clv_scores": CLV_SCORES,
    "rfm_scores": RFM_SCORES,
    "churn_scores": CHURN_SCORES,
    "clusters": CLUSTERS,
    "cluster_runs": CLUSTER_RUNS,
    "lifecycle_stages": LIFECYCLE_STAGES,
    "experiment_assignments": EXPERIMENT_ASSIGNMENTS,
    "triggers": TRIGGERS,
    "deliveries": DELIVERIES,
    "api_tokens": API_TOKENS,
    "audit_log": AUDIT_LOG,
    "consents": CONSENTS,
    "field_classes": FIELD_CLASSES,
    "erasures": ERASURES,
    "erasure_keys": ERASURE_KEYS,
    "erased_totals": ERASED_TOTALS,
    "privacy_salt": PRIVACY_SALT,
    "customer_history": CUSTOMER_HISTORY,
    "tags": TAGS,
    "tag_values": TAG_VALUES,
    "tag_runs": TAG_RUNS,
    "campaign_costs": CAMPAIGN_COSTS,
}


# Columns added to a table after workspaces with it existed: ``ensure_tables`` adds them
# (at the end, NULL in existing rows) when a workspace from before opens.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "segments": ("schedule",),
    "segment_runs": ("data_as_of",),
    "api_tokens": ("grants",),
}


STREAM_MEMORY = "128MB"  # DuckDB's memory_limit while a stream is open (Store.batches)
SORT_ROWS = 1_000_000  # Store.batches sorts results up to this many rows
_streams = {"open": 0, "before": None}  # open streams share the limit; the last restores it
_streams_lock = threading.Lock()


def _limit_memory(cursor: Any, memory: str) -> None:
    with _streams_lock:
        if _streams["open"] == 0:
            (_streams["before"],) = cursor.execute(
                "SELECT current_setting('memory_limit')"
            ).fetchone()
            cursor.execute("SET memory_limit = $1", [memory])
        _streams["open"] += 1


def _close_cursor(cursor: Any) -> None:
    """End a stream's read-only transaction and put the memory limit back after the last."""
    with contextlib.suppress(Exception):
        cursor.execute("ROLLBACK")
    with _streams_lock:
        _streams["open"] -= 1
        if _streams["open"] == 0:
            with contextlib.suppress(Exception):
                cursor.execute("SET memory_limit = $1", [_streams["before"]])
    with contextlib.suppress(Exception):
        cursor.close()


class BatchStream:
    """Rows of one query as Arrow record batches: ``rows`` (counted first), then iterate.

    Batches are read as the consumer asks for them; the stream closes itself at the end,
    or call :meth:`close` (or use ``with``) to stop early.
    """

    def __init__(self, rows: int, reader: pa.RecordBatchReader, cursor: Any = None) -> None:
        self.rows = rows
        self.schema: pa.Schema = reader.schema
        self._reader = reader
        self._cursor = cursor

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._reader
        finally:
            self.close()

    def close(self) -> None:
        """End the stream (nothing to keep: it only read) and free its cursor."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            _close_cursor(cursor)

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # an abandoned stream still gives its memory limit back
        self.close()


# values no data holds, rendered while compiling and replaced by placeholders
_SENTINELS = {"timestamp": datetime(2199, 12, 31, 23, 59, 58, 123457)}


class Store:
    """An Ibis connection plus the canonical tables, created on first use."""

    def __init__(self, con: ibis.BaseBackend) -> None:
        self.con = con
        self._tables: dict[str, ibis.Table] = {}
        self.is_duckdb = con.name == "duckdb"
        if self.is_duckdb:
            # Progress bars from DuckDB corrupt non-interactive output; kequn draws its own.
            self.duck.execute("SET enable_progress_bar = false")

    @classmethod
    def connect(cls, backend: str, base: Path, db_path: str) -> Store:
        """Open the backend named in the config (``duckdb``, ``spark`` or an Ibis URL)."""
        try:
            if backend == "duckdb":
                con = ibis.duckdb.connect(str((base / db_path).resolve()))
            elif backend == "duckdb-memory":
                con = ibis.duckdb.connect(":memory:")
            elif backend == "spark":  # settings in [store.spark]; see docs/scale.md
                from kequn.spark import store_backend

                con = store_backend(base)
            else:
                con = ibis.connect(backend)
        except Exception as exc:  # the driver's message is the useful part
            raise WorkspaceError(f"cannot open store {backend!r}: {exc}") from exc
        store = cls(con)
        store.ensure_tables()
        return store

    @property
    def duck(self):
        """The raw DuckDB connection; only for DuckDB fast paths inside the storage layer."""
        if not self.is_duckdb:
            raise WorkspaceError("this operation needs the DuckDB backend")
        return self.con.con

    def ensure_tables(self) -> None:
        existing = set(self.con.list_tables())
        for name, schema in TABLES.items():
            if name not in existing:
                self.con.create_table(name, schema=schema)
            elif name in ADDED_COLUMNS:
                self._add_columns(name, schema, ADDED_COLUMNS[name])

    def _add_columns(self, name: str, schema: ibis.Schema, columns: tuple[str, ...]) -> None:
        import sqlglot as sg

        present = set(self.con.get_schema(name).names)
        for column in columns:
            if column in present:
                continue
            kind = self.con.compiler.type_mapper.from_ibis(schema[column])
            statement = sg.exp.Alter(
                this=sg.table(name, quoted=True),
                kind="TABLE",
                actions=[sg.exp.ColumnDef(this=sg.to_identifier(column, quoted=True), kind=kind)],
            )
            self.con.raw_sql(statement.sql(self.con.dialect))

    def table(self, name: str) -> ibis.Table:
        """A table expression; canonical ones are looked up once per connection.

        Looking a table up asks the database for its schema (a query); the canonical
        schemas are fixed, and the service looks tables up thousands of times a second.
        """
        if name not in TABLES:
            return self.con.table(name)
        found = self._tables.get(name)
        if found is None:
            found = self._tables[name] = self.con.table(name)
        return found

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: a crash or an error inside leaves the tables as they were."""
        if self.is_duckdb:
            self.duck.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                self.duck.execute("ROLLBACK")
                raise
            else:
                self.duck.execute("COMMIT")
        else:
            with self.con.begin():
                yield

    def append(self, name: str, data: pa.Table) -> None:
        """Append Arrow rows to a canonical table, casting to its schema.

        Columns the data lacks are left empty (NULL): a writer that predates a column added
        to the schema keeps working.
        """
        if data.num_rows == 0:
            return
        schema = TABLES[name].to_pyarrow()
        for field in schema:
            if field.name not in data.column_names:
                data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
        data = data.select(schema.names).cast(schema)
        if self.is_duckdb:
            self.duck.register("_kequn_append", data)
            try:
                self.duck.execute(f'INSERT INTO "{name}" SELECT * FROM _kequn_append')
            finally:
                self.duck.unregister("_kequn_append")
        else:
            # Only columns with values: some Ibis backends cannot bind all-null timestamps.
            keep = [c for c in data.column_names if data[c].null_count < data.num_rows]
            self.con.insert(name, data.select(keep))

    def delete(self, table: str, /, **equals: object) -> None:
        """``DELETE FROM table WHERE col = value AND col2 IN (...)``, built as a syntax tree.

        A list or tuple value matches any of its items; dates and datetimes become typed
        literals, so the comparison is exact on every backend.
        """
        import sqlglot as sg

        where = None
        for column, value in equals.items():
            col = sg.column(column, quoted=True)
            if isinstance(value, list | tuple):
                cond = col.isin(*[sg.exp.convert(v) for v in value])
            else:
                cond = col.eq(sg.exp.convert(value))
            where = cond if where is None else sg.and_(where, cond)
        self.con.raw_sql(sg.delete(sg.table(table, quoted=True), where=where).sql(self.con.dialect))

    def update(self, table: str, values: dict[str, object], /, **equals: object) -> None:
        """``UPDATE table SET col = value, ... WHERE ...`` (matching as in :meth:`delete`).

        One statement, so it is atomic on its own and safe inside or outside a transaction.
        """
        import sqlglot as sg

        where = None
        for column, value in equals.items():
            col = sg.column(column, quoted=True)
            if isinstance(value, list | tuple):
                cond = col.isin(*[sg.exp.convert(v) for v in value])
            else:
                cond = col.eq(sg.exp.convert(value))
            where = cond if where is None else sg.and_(where, cond)
        sets = {sg.column(c, quoted=True): sg.exp.convert(v) for c, v in values.items()}
        statement = sg.exp.update(sg.table(table, quoted=True), sets, where=where)
        self.con.raw_sql(statement.sql(self.con.dialect))

    def with_parameter(self, expr: ibis.Expr, param: ibis.Scalar, name: str) -> str:
        """SQL for ``expr`` with the Ibis parameter ``param`` left as ``$name``.

        Compiling an Ibis expression costs tens of milliseconds; a hot path (the live
        evaluator, the delivery poll) compiles once and runs the text with
        :meth:`query_arrow` and a new value each time. Ibis renders parameters as literals,
        so a sentinel value is rendered and swapped for the placeholder.
        """
        sentinel = _SENTINELS[str(param.type())]
        sql = str(self.con.compile(expr, params={param: sentinel}))
        rendered = str(self.con.compile(ibis.literal(sentinel, type=param.type())))
        literal = rendered.split("SELECT ", 1)[1].rsplit(" AS ", 1)[0]
        return sql.replace(literal, f"${name}")  # absent when expr does not use it

    def query_arrow(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        """Run SQL compiled by Ibis for DuckDB (cached by the caller) and fetch Arrow.

        ``params`` fill ``$name`` placeholders: one compiled query serves many values.
        """
        return self.duck.execute(sql, params or {}).to_arrow_table()

    def batches(
        self,
        expr: ibis.Table,
        *,
        order_by: Sequence[str] = (),
        sort_rows: int = SORT_ROWS,
        batch_size: int = 65_536,
        memory: str = STREAM_MEMORY,
    ) -> BatchStream:
        """Stream an expression's rows as Arrow record batches, with the row count first.

        For exports of any size: the rows are counted and then read in one snapshot (a
        transaction on a cursor of its own, so other queries on this connection may run
        while the stream is read) and never held whole in memory. ``order_by`` sorts up to
        ``sort_rows`` rows; larger results come in storage order, since sorting them would
        cost memory or a second pass. On DuckDB the database's ``memory_limit`` is ``memory``
        while any stream is open (joins spill to DuckDB's temp folder, scanned blocks are
        not cached), and is put back when the last one closes: queries running alongside a
        long export may spill too. Close the stream (or read it to the end).
        """
        if not self.is_duckdb:
            total = int(expr.count().execute())
            if order_by and total <= sort_rows:
                expr = expr.order_by(list(order_by))
            return BatchStream(total, expr.to_pyarrow_batches(chunk_size=batch_size))
        sql = str(self.con.compile(expr))
        cursor = self.duck.cursor()
        _limit_memory(cursor, memory)
        try:
            cursor.execute("BEGIN TRANSACTION")
            (total,) = cursor.execute(f"SELECT count(*) FROM ({sql})").fetchone()
            if order_by and total <= sort_rows:
                sql = str(self.con.compile(expr.order_by(list(order_by))))
            reader = cursor.execute(sql).to_arrow_reader(batch_size)
        except BaseException:
            _close_cursor(cursor)
            raise
        return BatchStream(int(total), reader, cursor)

    def close_intervals(self, rows: pa.Table) -> None:
        """Set ``exited_at`` on the open memberships named by ``rows``.

        ``rows`` has ``segment``, ``customer_id`` and ``exited_at``; closed intervals are
        history and are never touched.
        """
        if rows.num_rows == 0:
            return
        self.duck.register("_kequn_exits", rows)
        try:
            self.duck.execute(
                "UPDATE memberships m SET exited_at = x.exited_at FROM _kequn_exits x "
                "WHERE m.segment = x.segment AND m.customer_id = x.customer_id "
                "AND m.exited_at IS NULL"
            )
        finally:
            self.duck.unregister("_kequn_exits")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.disconnect()
