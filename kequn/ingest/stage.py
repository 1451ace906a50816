"""Staging: one file's rows parsed into the ``_stage`` temporary table, duplicates marked.

Each file is read as Arrow batches and turned, in one SQL statement, into typed fields and
the reason a row cannot be used (the first failed check). Nothing here writes to the
workspace's tables; :mod:`kequn.ingest.load` does that in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from kequn.errors import InputError
from kequn.ingest import parse
from kequn.ingest.mapping import Mapping
from kequn.ingest.readers import Source

Q = parse.quote_ident

_STAGE_COLUMNS = {
    "customers": {
        "source_id": "VARCHAR",
        "name": "VARCHAR",
        "name_en": "VARCHAR",
        "gender": "VARCHAR",
        "birth_date": "DATE",
        "age_band": "VARCHAR",
        "city": "VARCHAR",
        "province": "VARCHAR",
        "channel": "VARCHAR",
        "email": "VARCHAR",
        "phone": "VARCHAR",
        "created_at": "TIMESTAMP",
        "attributes": "VARCHAR",
    },
    "orders": {
        "source_id": "VARCHAR",
        "order_id": "VARCHAR",
        "ordered_at": "TIMESTAMP",
        "line_amount": "DOUBLE",
        "quantity": "DOUBLE",
        "unit_price": "DOUBLE",
        "status": "VARCHAR",
        "is_return": "BOOLEAN",
        "channel": "VARCHAR",
        "product_id": "VARCHAR",
        "product_name": "VARCHAR",
        "category": "VARCHAR",
        "email": "VARCHAR",
        "phone": "VARCHAR",
    },
    "events": {
        "source_id": "VARCHAR",
        "event_id": "VARCHAR",
        "occurred_at": "TIMESTAMP",
        "type": "VARCHAR",
        "properties": "VARCHAR",
        "channel": "VARCHAR",
        "email": "VARCHAR",
        "phone": "VARCHAR",
    },
}


def create_stage(engine, kind: str) -> None:
    cols = ", ".join(f"{name} {typ}" for name, typ in _STAGE_COLUMNS[kind].items())
    engine.execute("CREATE OR REPLACE TEMP TABLE _files (_file USMALLINT, path VARCHAR)")
    engine.execute(
        f"""CREATE OR REPLACE TEMP TABLE _stage (
            _file USMALLINT, _row BIGINT, _hash UBIGINT, _reason VARCHAR, _raw VARCHAR,
            _has_products BOOLEAN, _id_made BOOLEAN, {cols})"""
    )


def stage_file(engine, kind, index: int, src: Source, mapping: Mapping, cfg, tick) -> int:
    """Read one file into ``_stage``, parsed, with a reason on every unusable row.

    Three query levels so that each value is parsed once: cells → parsed fields (``_f_``)
    → derived fields (``_g_``) → the reason a row cannot be used (first failed check).
    """

    def open_rows() -> tuple[Iterator[pa.RecordBatch], pa.RecordBatch | None]:
        batches = src.batches(None if src.parts else tick)
        return batches, next(batches, None)

    multiline = src.multiline
    try:
        batches, first = open_rows()
    except InputError:
        if multiline or not src.multiline:
            raise
        batches, first = open_rows()  # a line break inside a value: read the slow way
    if first is None:
        return 0
    if src.parts:  # the first batch only gives the types and the dates' format
        batches.close()
    schema = first.schema
    types = {name: schema.field(name).type for name in schema.names}
    f = mapping.fields
    parsed: dict[str, str] = {}  # level 1, over the cells
    derived: dict[str, str] = {}  # level 2, over parsed fields
    checks: list[tuple[str, str]] = []  # level 3: (condition, reason), first match wins

    cleaned: dict[str, str] = {}  # level 0: each text cell a parser reads, trimmed once

    def col(name: str) -> str:
        if not cl(name):
            return Q(f[name])
        cleaned[f[name]] = parse.clean(Q(f[name]))
        return Q("_t_" + f[name])

    def typ(name: str) -> pa.DataType:
        return types[f[name]]

    def cl(name: str) -> bool:
        return parse.is_text(typ(name))

    def P(name: str) -> str:
        return Q("_f_" + name)

    def text_field(name: str) -> None:
        if name in f:
            parsed[name] = parse.text(col(name), typ(name), clean=cl(name))

    def time_field(name: str, required: bool) -> None:
        if name not in f:
            return
        preferred = None
        if pa.types.is_string(typ(name)) or pa.types.is_large_string(typ(name)):
            preferred = parse.sniff_date_format(engine, first.column(f[name]), cfg.date_order)
        parsed[name] = parse.timestamp(
            col(name),
            typ(name),
            date_order=cfg.date_order,
            timezone=cfg.timezone,
            preferred=preferred,
            clean=cl(name),
        )
        if required:
            checks.append((parse.blank(col(name), typ(name), clean=cl(name)), f"missing {name}"))
        checks.append(
            (
                f"NOT {parse.blank(col(name), typ(name), clean=cl(name))} AND {P(name)} IS NULL",
                f"unparseable {name}",
            )
        )

    def number_field(name: str) -> str | None:
        if name not in f:
            return None
        parsed[name] = parse.number(
            col(name), typ(name), decimal_comma=cfg.decimal_comma, clean=cl(name)
        )
        checks.append(
            (
                f"NOT {parse.blank(col(name), typ(name), clean=cl(name))} AND {P(name)} IS NULL",
                f"unparseable {name}",
            )
        )
        return P(name)

    for name in ("email", "phone", "channel"):
        text_field(name)
    if "customer_id" in f:
        parsed["source_id"] = parse.identifier(
            col("customer_id"), typ("customer_id"), clean=cl("customer_id")
        )
    missing_customer = (f"{Q('_g_source_id')} IS NULL", "missing customer_id")

    if kind == "customers":
        for name in ("name", "name_en", "gender", "age_band", "city", "province"):
            text_field(name)
        time_field("created_at", required=False)
        time_field("birth_date", required=False)
        if "source_id" in parsed:
            derived["source_id"] = P("source_id")
        else:  # no id column: the e-mail or phone is the id in this source
            keys = [parse.email_norm(P("email"))] if "email" in f else []
            keys += [parse.phone_norm(P("phone"))] if "phone" in f else []
            derived["source_id"] = f"coalesce({', '.join(keys)})"
        if "birth_date" in parsed:
            derived["birth_date"] = f"CAST({P('birth_date')} AS DATE)"
        if mapping.unused:
            pairs = ", ".join(f"{parse.quote_str(h)}, {Q(h)}" for h in mapping.unused)
            parsed["attributes"] = f"CAST(json_object({pairs}) AS VARCHAR)"
        checks.insert(0, missing_customer)
    elif kind == "orders":
        derived["source_id"] = P("source_id")
        time_field("ordered_at", required=True)
        amount = number_field("amount")
        qty = number_field("quantity")
        price = number_field("unit_price")
        computed = f"{qty} * {price}" if qty and price else price
        derived["line_amount"] = (
            f"coalesce({amount}, {computed})" if amount and computed else amount or computed
        )
        for name in ("status", "product_id", "product_name", "category"):
            text_field(name)
        if "order_id" in f:
            parsed["order_id"] = parse.identifier(
                col("order_id"), typ("order_id"), clean=cl("order_id")
            )
        else:  # one order per row, named by its content so re-imports find it again
            parsed["order_id"] = "'r' || substr(md5(" + _row_text(schema) + "), 1, 20)"
        parsed["_id_made"] = "false" if "order_id" in f else "true"
        returns = [f"{Q('_g_line_amount')} < 0"]
        if qty:
            returns.append(f"{qty} < 0")
        if "order_id" in f:
            returns.append(f"regexp_matches({P('order_id')}, '^[Cc]\\d+$')")
        if "status" in f:
            returns.append(
                f"regexp_matches(lower(coalesce({P('status')}, '')), '{parse.RETURN_WORDS}')"
            )
        has_products = any(n in f for n in ("product_id", "product_name", "category"))
        parsed["_has_products"] = "true" if has_products else "false"
        checks.insert(0, missing_customer)
        if "order_id" in f:
            checks.insert(1, (f"{P('order_id')} IS NULL", "missing order_id"))
        checks.append((f"{Q('_g_line_amount')} IS NULL", "missing amount"))
        is_return = "coalesce(" + " OR ".join(returns) + ", false)"
    else:  # events
        derived["source_id"] = P("source_id")
        time_field("occurred_at", required=True)
        text_field("type")
        if "event_id" in f:
            parsed["event_id"] = parse.identifier(
                col("event_id"), typ("event_id"), clean=cl("event_id")
            )
        else:
            parsed["event_id"] = "'e' || substr(md5(" + _row_text(schema) + "), 1, 20)"
        parsed["_id_made"] = "false" if "event_id" in f else "true"
        props = None
        if "properties" in f:
            parsed["properties"] = parse.text(
                col("properties"), typ("properties"), clean=cl("properties")
            )
            props = P("properties")
            checks.append(
                (
                    f"{props} IS NOT NULL AND NOT coalesce(json_valid({props}), false)",
                    "invalid properties JSON",
                )
            )
        if mapping.unused:
            pairs = ", ".join(f"{parse.quote_str(h)}, {Q(h)}" for h in mapping.unused)
            extra = f"json_object({pairs})"
            props = (
                f"CAST(json_merge_patch({extra}, "
                f"CASE WHEN json_valid({props}) THEN {props} ELSE '{{}}' END) AS VARCHAR)"
                if props
                else f"CAST({extra} AS VARCHAR)"
            )
        derived["properties"] = props or "'{}'"
        checks.insert(0, missing_customer)
        checks.append((f"{P('type')} IS NULL", "missing type"))

    reason = "CASE " + " ".join(f"WHEN {c} THEN {parse.quote_str(w)}" for c, w in checks)
    reason += " END"
    names = [n for n in schema.names if n != "_row"]
    raw_pairs = ", ".join(f"{parse.quote_str(h)}, {Q(h)}" for h in names)
    level0 = "".join(f", {e} AS {Q('_t_' + h)}" for h, e in cleaned.items())
    level1 = ", ".join(f"{e} AS {P(n)}" for n, e in parsed.items())
    level2 = ", ".join(f"{e} AS {Q('_g_' + n)}" for n, e in derived.items())
    outputs = {n: P(n) for n in parsed} | {n: Q("_g_" + n) for n in derived}
    if kind == "orders":
        outputs["is_return"] = is_return
    wanted = set(_STAGE_COLUMNS[kind]) | {"_has_products", "_id_made"}
    final = ", ".join(f"{e} AS {Q(n)}" for n, e in outputs.items() if n in wanted)

    def insert(rows: str) -> None:
        cells = f"(SELECT *{level0} FROM {rows})"
        engine.execute(
            f"""
            INSERT INTO _stage BY NAME
            SELECT {index} AS _file, _row,
                   hash({", ".join(Q(n) for n in names)}) AS _hash, _reason,
                   CASE WHEN _reason IS NOT NULL
                        THEN CAST(json_object({raw_pairs}) AS VARCHAR) END AS _raw,
                   {final}
            FROM (SELECT *, {reason} AS _reason
                  FROM (SELECT *, {level2} FROM (SELECT *, {level1} FROM {cells})))
            """
        )

    if src.parts:  # DuckDB reads the file itself, part by part (the progress bar moves)
        for rows, done in src.parts:
            insert(rows)
            if tick:
                tick(done)
    else:
        multiline = src.multiline
        while True:
            engine.register("_reader", _stream(first, batches))
            try:
                insert("_reader")
                break
            except Exception:
                if multiline or not src.multiline:
                    raise
                # The fast CSV reader met a line break inside a quoted value: the failed
                # statement wrote nothing; read the file again, finding row ends the slow way.
                engine.execute("DELETE FROM _stage WHERE _file = ?", [index])
                multiline = True
                batches, first = open_rows()
            finally:
                engine.unregister("_reader")
    if src.invalid:
        _add_ragged(engine, index, src.invalid)
    return engine.execute("SELECT count(*) FROM _stage WHERE _file = ?", [index]).fetchall()[0][0]


def _stream(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> pa.RecordBatchReader:
    def gen() -> Iterator[pa.RecordBatch]:
        yield first
        yield from rest

    return pa.RecordBatchReader.from_batches(first.schema, gen())


def _add_ragged(engine, index: int, invalid: list[tuple[int, str, str]]) -> None:
    """Quarantine rows the reader could not split, and give the good rows their true numbers.

    The reader numbered only the rows it kept; a kept row with provisional number r is
    preceded by every skipped row j (1-based, at true row b_j) with b_j - j < r.
    """
    bad = pa.table(
        {
            "pos": [b for b, _, _ in invalid],
            "j": list(range(1, len(invalid) + 1)),
            "reason": [r for _, r, _ in invalid],
            "line": [t for _, _, t in invalid],
        }
    )
    engine.register("_ragged", bad)
    try:
        engine.execute(
            """
            UPDATE _stage SET _row = _row + (
                SELECT count(*) FROM _ragged WHERE _ragged.pos - _ragged.j < _stage._row)
            WHERE _file = ?
            """,
            [index],
        )
        engine.execute(
            """
            INSERT INTO _stage (_file, _row, _hash, _reason, _raw)
            SELECT ?, pos, hash(line, pos), reason, json_object('line', line)::VARCHAR
            FROM _ragged
            """,
            [index],
        )
    finally:
        engine.unregister("_ragged")


def _row_text(schema: pa.Schema) -> str:
    cols = [f"coalesce(CAST({Q(n)} AS VARCHAR), '')" for n in schema.names if n != "_row"]
    return "concat_ws(chr(31), " + ", ".join(cols) + ")"


def deduplicate(engine, kind: str, rows_read: int, *, keep: bool) -> int:
    """Drop exact duplicate rows of a file (same text in every column), keeping the first.

    Rows are compared by a 64-bit hash of all their cells; only the few hashes seen more
    than once are looked at row by row, so a file without duplicates costs one aggregate.
    With ``keep``, the copies stay and their content-made ids get a suffix (-2, -3, ...).
    """
    # The one aggregate over all rows; the rest only runs when it found something.
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _repeated AS
        SELECT _file, _hash FROM _stage GROUP BY _file, _hash HAVING count(*) > 1
        """
    )
    try:
        if not engine.execute("SELECT count(*) FROM _repeated").fetchall()[0][0]:
            return 0
        return _drop_repeats(engine, kind, rows_read, keep=keep)
    finally:
        engine.execute("DROP TABLE IF EXISTS _repeated")


def _drop_repeats(engine, kind: str, rows_read: int, *, keep: bool) -> int:
    repeats = """
        SELECT rowid AS rid, row_number() OVER (PARTITION BY _file, _hash ORDER BY _row) AS k
        FROM _stage
        WHERE (_file, _hash) IN (SELECT (_file, _hash) FROM _repeated)
        QUALIFY k > 1
    """
    if not keep:
        engine.execute(f"DELETE FROM _stage WHERE rowid IN (SELECT rid FROM ({repeats}))")
        return rows_read - engine.execute("SELECT count(*) FROM _stage").fetchall()[0][0]
    key = {"orders": "order_id", "events": "event_id"}.get(kind)
    columns = [r[0] for r in engine.execute("DESCRIBE _stage").fetchall()]
    if key in columns:
        engine.execute(
            f"""
            UPDATE _stage SET {key} = {key} || '-' || d.k
            FROM ({repeats}) d
            WHERE _stage.rowid = d.rid AND _stage._id_made
            """
        )
    return 0


def check_orders(engine) -> None:
    """An order id used for lines of different customers is ambiguous: quarantine it.

    min <> max finds them without a distinct count per order (usable rows always have a
    customer id); the update's second pass over the rows runs only when there are some.
    """
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ambiguous AS
        SELECT order_id FROM _stage WHERE _reason IS NULL
        GROUP BY order_id HAVING min(source_id) <> max(source_id)
        """
    )
    try:
        if not engine.execute("SELECT count(*) FROM _ambiguous").fetchall()[0][0]:
            return
        engine.execute(
            """
            UPDATE _stage SET _reason = 'order lines of several customers',
                   _raw = '{"order_id": ' || to_json(order_id) || ', "customer_id": '
                          || to_json(source_id) || '}'
            WHERE _reason IS NULL AND order_id IN (SELECT order_id FROM _ambiguous)
            """
        )
    finally:
        engine.execute("DROP TABLE IF EXISTS _ambiguous")
