"""Merges that keep data: which value a merged profile shows, and where the others go.

When identity resolution makes several source records one customer, the records may
disagree on a field (two cities, two names). A rule from ``kequn.toml`` picks the value the
profile shows::

    [identity]
    merge_rule = "newest"            # or "most_frequent", "source_priority"
    source_priority = ["crm", "shop"]

- ``newest``: the latest observation wins (the value of this import; within one import the
  last row); this is what imports did before the rule existed.
- ``most_frequent``: the value the most source records give wins (each record's latest
  value counts once: a re-export of the same record does not vote twice); ties go to the
  newest.
- ``source_priority``: the value of the earliest source in ``source_priority`` wins;
  sources not listed come after the listed ones; ties go to the newest.

Nothing is dropped: table ``customer_history`` holds every value a source record gave for a
field of the customer (standard columns and keys of ``attributes``), with its source, source
id, import and when it was observed. ``superseded_at`` is empty while the value is the one
the profile shows and set, with a ``reason``, once it is not: ``merge: lost to newest``
(``most frequent``, ``source priority``) when a value of another record won, ``replaced by
import ID`` when the same record (or data from before history was kept) brought a new one,
``replaced via API`` when a ``POST /v1/customers`` upsert changed it. An observation the
record already gave is not written again, so re-imports add no rows.

This is storage code (the import's and the service's DuckDB connection); profiles read the
history through Ibis (:func:`history`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from kequn.errors import WorkspaceError
from kequn.ingest import parse

if TYPE_CHECKING:
    from kequn.config import Config
    from kequn.workspace import Workspace

__all__ = ["FIELDS", "MERGE_RULES", "MergeRule", "history", "merge_customers", "merge_rule"]

MERGE_RULES = ("newest", "most_frequent", "source_priority")

# the customers columns a merge decides (customer_id and updated_at are kequn's own)
FIELDS: dict[str, str] = {
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
}

_COLUMNS = ("customer_id", *FIELDS, "updated_at", "attributes")
_HISTORY_COLUMNS = (
    "customer_id, field, value, source, source_id, import_id, observed_at, superseded_at, reason"
)


@dataclass(frozen=True)
class MergeRule:
    """The ``[identity]`` settings: the rule and, for ``source_priority``, the order."""

    rule: str = "newest"
    source_priority: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The rule as it reads in a history reason (``merge: lost to most frequent``)."""
        return self.rule.replace("_", " ")


def merge_rule(config: Config) -> MergeRule:
    """The workspace's merge rule from ``[identity]`` in kequn.toml (``newest`` if absent)."""
    section = config.raw.get("identity", {})
    if not isinstance(section, dict):
        raise WorkspaceError(f"[identity] must be a table, not {section!r}")
    rule = section.get("merge_rule", "newest")
    if rule not in MERGE_RULES:
        raise WorkspaceError(
            f"[identity] merge_rule = {rule!r}; use one of {', '.join(map(repr, MERGE_RULES))}"
        )
    priority = section.get("source_priority", [])
    if not isinstance(priority, list) or not all(isinstance(s, str) for s in priority):
        raise WorkspaceError(
            f"[identity] source_priority = {priority!r}; use a list of source names, "
            'e.g. ["crm", "shop"]'
        )
    if rule == "source_priority" and not priority:
        raise WorkspaceError(
            '[identity] merge_rule = "source_priority" needs source_priority = [...], the '
            'import --source names from most to least trusted, e.g. ["crm", "shop"]'
        )
    return MergeRule(rule, tuple(priority))


def _long(rows: str, keys: tuple[str, ...]) -> str:
    """The rows of ``rows`` (SQL of a relation) as ``(*keys, field, value, json)``: standard
    columns, then the keys of ``attributes``.

    ``value`` is text (dates and times as DuckDB writes them); ``json`` keeps an attribute's
    JSON value so that a winner is written back with its type. Empty values are no
    observation.
    """
    casts = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in FIELDS)
    standard = ", ".join(parse.quote_str(c) for c in _COLUMNS)
    plain = ", ".join(keys)
    return f"""
        SELECT {plain}, field, value, CAST(NULL AS JSON) AS json
        FROM (UNPIVOT (SELECT {plain}, {casts} FROM {rows})
              ON {", ".join(FIELDS)} INTO NAME field VALUE value)
        WHERE trim(value) <> ''
        UNION ALL
        SELECT {", ".join(f"t.{k}" for k in keys)}, j.key, json_extract_string(j.value, '$'),
               j.value
        FROM {rows} t, json_each(t.attributes) j
        WHERE j.type <> 'NULL' AND trim(json_extract_string(j.value, '$')) <> ''
          AND j.key NOT IN ({standard})
    """


def merge_customers(engine, *, source: str, import_id: str, rule: MergeRule, now: datetime) -> int:
    """Write this import's customer fields into the profiles by ``rule``; keep every value.

    Reads temp tables ``_stage`` (a customers file's rows) and ``_resolved`` (each source id's
    customer); runs inside the import's transaction. Returns the customers touched.
    """
    src = parse.quote_str(source)
    imp = parse.quote_str(import_id)
    lost = parse.quote_str(f"merge: lost to {rule.label}")
    replaced = parse.quote_str(f"replaced by import {import_id}")
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _rows AS
        SELECT r.customer_id, s.source_id, s._file::BIGINT * 4294967296 + s._row AS ord, s.*
            EXCLUDE (source_id, _file, _row)
        FROM _stage s JOIN _resolved r USING (source_id) WHERE s._reason IS NULL
        """
    )
    present = {r[0] for r in engine.execute("DESCRIBE _rows").fetchall()}
    for column in (*FIELDS, "attributes"):  # a file without the column: no observation
        if column not in present:
            kind = FIELDS.get(column, "VARCHAR")
            engine.execute(f"ALTER TABLE _rows ADD COLUMN {column} {kind}")
    # This import's observations: each source record's last value of each field.
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _obs AS
        SELECT customer_id, source_id, field, arg_max(value, ord) AS value,
               arg_max(json, ord) AS json, max(ord) AS ord
        FROM ({_long("_rows", ("customer_id", "source_id", "ord"))})
        GROUP BY ALL
        """
    )
    engine.execute(
        "CREATE OR REPLACE TEMP TABLE _keys AS SELECT DISTINCT customer_id, field FROM _obs"
    )
    # What the profiles show now, for the fields this import observed.
    mine = (
        "(SELECT *, coalesce(updated_at, created_at, TIMESTAMP '1970-01-01') AS seen_at "
        "FROM customers WHERE customer_id IN (SELECT customer_id FROM _keys))"
    )
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _cur AS
        SELECT l.* FROM ({_long(mine, ("customer_id", "seen_at"))}) l
        SEMI JOIN _keys USING (customer_id, field)
        """
    )
    # History of these fields: each source record's latest value, and the values shown now.
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _latest AS
        SELECT h.customer_id, h.field, h.source, h.source_id,
               arg_max(h.value, h.observed_at) AS value, max(h.observed_at) AS observed_at
        FROM customer_history h SEMI JOIN _keys k USING (customer_id, field)
        WHERE h.source_id IS NOT NULL
        GROUP BY ALL
        """
    )
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _shown AS
        SELECT DISTINCT h.customer_id, h.field, h.value
        FROM customer_history h SEMI JOIN _keys k USING (customer_id, field)
        WHERE h.superseded_at IS NULL
        """
    )
    # The candidates: each record's latest value (a record observed again by this import
    # counts with its new observation), this import's observations, and a stored value no
    # history row accounts for (data from before history was kept, without a record).
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _cand AS
        SELECT l.customer_id, l.field, l.value, to_json(l.value) AS json, l.source,
               l.source_id, l.observed_at, 0::BIGINT AS ord, false AS incoming
        FROM _latest l
        ANTI JOIN (SELECT customer_id, field, {src} AS source, source_id FROM _obs)
            USING (customer_id, field, source, source_id)
        UNION ALL
        SELECT customer_id, field, value, coalesce(json, to_json(value)), {src}, source_id,
               $now, ord, true
        FROM _obs
        UNION ALL
        SELECT c.customer_id, c.field, c.value, coalesce(c.json, to_json(c.value)), NULL, NULL,
               c.seen_at, 0, false
        FROM _cur c ANTI JOIN _shown USING (customer_id, field, value)
        """,
        {"now": now},
    )
    # The winner of each field, by hash aggregates (no sorting): first per value (its votes,
    # its newest observation, its best source rank and the record that stands for it), then
    # per field. The value itself breaks the last ties, so the choice is deterministic.
    newest = "{'i': incoming, 't': observed_at, 'o': ord}"
    ranked = f"{{'r': -rank, 'n': {newest}}}"
    by_value = {
        "newest": "{'s': seen, 'v': value}",
        "most_frequent": "{'c': votes, 's': seen, 'v': value}",
        "source_priority": "{'p': best, 'v': value}",
    }[rule.rule]
    record = ranked if rule.rule == "source_priority" else newest
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _win AS
        SELECT customer_id, field, w.value, w.json, w.source, w.source_id
        FROM (
            SELECT customer_id, field,
                   arg_max({{'value': value, 'json': r.json, 'source': r.source,
                             'source_id': r.source_id}}, {by_value}) AS w
            FROM (
                SELECT customer_id, field, value, count(*) AS votes, max({newest}) AS seen,
                       max({ranked}) AS best,
                       arg_max({{'json': json, 'source': source, 'source_id': source_id}},
                               {record}) AS r
                FROM (SELECT *, coalesce(list_position($priority::VARCHAR[], source), 1000000)
                                    AS rank FROM _cand)
                GROUP BY customer_id, field, value
            )
            GROUP BY customer_id, field
        )
        """,
        {"priority": list(rule.source_priority)},
    )
    reason_for = (
        f"CASE WHEN h.source IS NOT DISTINCT FROM w.source "
        f"AND h.source_id IS NOT DISTINCT FROM w.source_id THEN {replaced} ELSE {lost} END"
    )
    # Stored values from before history: a row for the one that loses now.
    engine.execute(
        f"""
        INSERT INTO customer_history ({_HISTORY_COLUMNS})
        SELECT c.customer_id, c.field, c.value, NULL, NULL, NULL, c.seen_at, $now, {replaced}
        FROM _cur c JOIN _win w USING (customer_id, field)
        ANTI JOIN _shown s ON s.customer_id = c.customer_id AND s.field = c.field
            AND s.value = c.value
        WHERE c.value <> w.value
        """,
        {"now": now},
    )
    engine.execute(
        f"""
        UPDATE customer_history h SET superseded_at = $now, reason = {reason_for}
        FROM (SELECT DISTINCT w.* FROM _win w JOIN _shown s USING (customer_id, field)
              WHERE s.value <> w.value) w
        WHERE h.customer_id = w.customer_id AND h.field = w.field
          AND h.superseded_at IS NULL AND h.value <> w.value
        """,
        {"now": now},
    )
    # This import's observations, unless the record gave the value before and its standing
    # (shown or not) is unchanged: re-imports write nothing. After the update above, the
    # rows still shown are those of _shown with the winning value.
    engine.execute(
        f"""
        INSERT INTO customer_history ({_HISTORY_COLUMNS})
        SELECT o.customer_id, o.field, o.value, {src}, o.source_id, {imp}, $now,
               CASE WHEN o.value = w.value THEN NULL ELSE $now END,
               CASE WHEN o.value = w.value THEN NULL ELSE {lost} END
        FROM _obs o JOIN _win w USING (customer_id, field)
        LEFT JOIN (SELECT * FROM _latest WHERE source = {src}) l
             ON l.customer_id = o.customer_id AND l.field = o.field
             AND l.source_id = o.source_id
        LEFT JOIN _shown s ON s.customer_id = o.customer_id AND s.field = o.field
             AND s.value = o.value
        WHERE l.value IS DISTINCT FROM o.value OR (o.value = w.value AND s.value IS NULL)
        """,
        {"now": now},
    )
    # The winners that differ from what the profile shows go into customers.
    engine.execute(
        """
        CREATE OR REPLACE TEMP TABLE _change AS
        SELECT w.customer_id, w.field, w.value, w.json
        FROM _win w LEFT JOIN _cur c USING (customer_id, field)
        WHERE c.value IS DISTINCT FROM w.value
        """
    )
    columns = ", ".join(
        f"max(value) FILTER (WHERE field = {parse.quote_str(c)}) AS {c}" for c in FIELDS
    )
    standard = ", ".join(parse.quote_str(c) for c in _COLUMNS)
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _set AS
        SELECT t.customer_id, {", ".join(f"c.{c}" for c in FIELDS)}, a.attrs
        FROM (SELECT DISTINCT customer_id FROM _rows) t
        LEFT JOIN (SELECT customer_id, {columns} FROM _change GROUP BY customer_id) c
            USING (customer_id)
        LEFT JOIN (SELECT customer_id, json_group_object(field, json) AS attrs FROM _change
                   WHERE field NOT IN ({standard}) GROUP BY customer_id) a USING (customer_id)
        """
    )
    sets = ", ".join(f"{c} = coalesce(CAST(s.{c} AS {t}), c.{c})" for c, t in FIELDS.items())
    engine.execute(
        f"""
        UPDATE customers c SET {sets},
            attributes = CASE WHEN s.attrs IS NULL THEN c.attributes ELSE CAST(
                json_merge_patch(coalesce(c.attributes, '{{}}')::JSON, s.attrs) AS VARCHAR) END,
            updated_at = $now
        FROM _set s WHERE c.customer_id = s.customer_id
        """,
        {"now": now},
    )
    touched = engine.execute("SELECT count(*) FROM _set").fetchall()[0][0]
    engine.execute("DROP TABLE _change")
    engine.execute("DROP TABLE _set")
    for name in ("_rows", "_obs", "_keys", "_cur", "_latest", "_shown", "_cand", "_win"):
        engine.execute(f"DROP TABLE IF EXISTS {name}")
    return int(touched)


def _text(value: Any) -> str | None:
    """A value as history stores it: as DuckDB casts it to text, JSON for nested data."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _fields(row: Mapping[str, Any]) -> dict[str, str | None]:
    out = {name: _text(row.get(name)) for name in FIELDS}
    try:
        attrs = json.loads(row.get("attributes") or "{}")
    except ValueError:
        attrs = {}
    for name, value in attrs.items() if isinstance(attrs, dict) else ():
        if name not in _COLUMNS:
            out[name] = _text(value)
    return out


def record_upserts(
    duck,
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> None:
    """Keep the values an API upsert replaced (``replaced via API``) and note the new ones.

    ``before``/``after``: customer id → the customers row before and after the upsert (as
    :mod:`kequn.server.journal` holds them). Runs in the journal's transaction. The API
    is the source ``api`` with the customer id as its record, so merge rules see API
    values like any source's.
    """
    import pyarrow as pa

    changes: list[tuple[str, str, str | None, str | None, datetime]] = []
    for customer_id, row in after.items():
        old_row = before.get(customer_id, {})
        old, new = _fields(old_row), _fields(row)
        at = old_row.get("updated_at") or old_row.get("created_at") or now
        for name in old.keys() | new.keys():
            if old.get(name) != new.get(name):
                changes.append((customer_id, name, old.get(name), new.get(name), at))
    if not changes:
        return
    table = pa.table(
        {
            "customer_id": [c[0] for c in changes],
            "field": [c[1] for c in changes],
            "old": pa.array([c[2] for c in changes], pa.string()),
            "new": pa.array([c[3] for c in changes], pa.string()),
            "seen_at": pa.array([c[4] for c in changes], pa.timestamp("us")),
        }
    )
    reason = "'replaced via API'"
    duck.register("_kequn_changes", table)
    try:
        duck.execute(
            f"""
            INSERT INTO customer_history ({_HISTORY_COLUMNS})
            SELECT customer_id, field, old, NULL, NULL, NULL, seen_at, $now, {reason}
            FROM _kequn_changes c
            WHERE old IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM customer_history h WHERE h.customer_id = c.customer_id
                AND h.field = c.field AND h.superseded_at IS NULL AND h.value = c.old)
            """,
            {"now": now},
        )
        duck.execute(
            f"""
            UPDATE customer_history h SET superseded_at = $now, reason = {reason}
            FROM _kequn_changes c
            WHERE h.customer_id = c.customer_id AND h.field = c.field
              AND h.superseded_at IS NULL AND h.value IS DISTINCT FROM c.new
            """,
            {"now": now},
        )
        duck.execute(
            f"""
            INSERT INTO customer_history ({_HISTORY_COLUMNS})
            SELECT customer_id, field, new, 'api', customer_id, NULL, $now, NULL, NULL
            FROM _kequn_changes WHERE new IS NOT NULL
            """,
            {"now": now},
        )
    finally:
        duck.unregister("_kequn_changes")


def history(ws: Workspace, customer_id: str) -> list[dict[str, Any]]:
    """The values a customer's profile no longer shows, newest first.

    Each entry's ``value`` is ``{field: value}``, so that masking by field name
    (:func:`kequn.access.mask_record`) masks a personal field's old values and hides a
    sensitive one's like the field itself.
    """
    import ibis

    h = ws.table("customer_history")
    rows = (
        h.filter((h.customer_id == customer_id) & h.superseded_at.notnull())
        .order_by([ibis.desc("superseded_at"), "field", ibis.desc("observed_at")])
        .select(
            "field",
            "value",
            "source",
            "source_id",
            "import_id",
            "observed_at",
            "superseded_at",
            "reason",
        )
        .to_pyarrow()
        .to_pylist()
    )
    out = []
    for r in rows:
        entry = {"field": r["field"], "value": {r["field"]: r["value"]}}
        for key in ("source", "source_id", "import_id", "reason"):
            entry[key] = r[key]
        for key in ("observed_at", "superseded_at"):
            entry[key] = r[key].isoformat() if r[key] is not None else None
        out.append(entry)
    return out
