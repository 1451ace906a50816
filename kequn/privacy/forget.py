"""The right to be forgotten (被遗忘权): erase one person from the workspace.

:func:`forget` resolves the person (every identity merged into the customer), then in one
transaction deletes every row keyed by their customer id in every table (customers,
identities, the values merges replaced (``customer_history``), memberships, scores,
clusters, lifecycle stages, experiment assignments, consents, the service's ingest log, and
any later table with a ``*customer_id`` column),
their order lines, the quarantined rows whose raw text names them, and scrubs their
deliveries (the row stays for the trigger's counts, without customer or payload).

What stays is anonymous: orders and events are summed into ``erased_totals`` (one row per
day × kind × channel or event type, merged with what earlier erasures left there, so no
row is one person's history); segment run sizes stay as they were. The erasure itself is
recorded in ``erasures`` (who, when, tables and row counts) and ``erasure_keys`` (salted
SHA-256 hashes of the ids, e-mails and phones), never the data; a later import quarantines
rows that carry those hashes. Text files kequn writes into the workspace (file-trigger
outputs and ``exports/``) lose the lines that name the person. Finally DuckDB is
checkpointed; see :func:`compact` for the bytes DuckDB leaves in free blocks.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.access.masking import _ID, _ID_ZH, _norm

if TYPE_CHECKING:
    from kequn.workspace import Workspace

__all__ = [
    "Erasure",
    "compact",
    "email_norm",
    "erasure_salt",
    "forget",
    "key_hash",
    "person_keys",
    "phone_norm",
]

# tables whose rows are not about one customer, or that this module writes itself
_SKIP = {"erasures", "erasure_keys", "erased_totals", "privacy_salt", "audit_log"}
_ID_FIELDS = {_norm(n) for n in _ID + _ID_ZH}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CN_MOBILE = re.compile(r"^(?:0086|86)?(1[3-9]\d{9})$")


def email_norm(value: object) -> str | None:
    """As the import normalises e-mails (kequn.ingest.parse.email_norm), in Python."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return text if _EMAIL.match(text) else None


def phone_norm(value: object) -> str | None:
    """As the import normalises phones (kequn.ingest.parse.phone_norm), in Python."""
    if value is None:
        return None
    digits = re.sub(r"\D", "", str(value))
    found = _CN_MOBILE.match(digits)
    if found:
        return found[1]
    return digits if len(digits) >= 7 else None


def erasure_salt(ws: Workspace) -> str:
    """The workspace's random salt for identifier hashes, created on first use."""
    import pyarrow as pa

    rows = ws.table("privacy_salt").salt.to_pyarrow().to_pylist()
    if rows:
        return str(rows[0])
    salt = secrets.token_hex(16)
    from kequn.access.audit import _now

    ws.store.append(
        "privacy_salt",
        pa.table({"salt": [salt], "created_at": pa.array([_now(ws)], pa.timestamp("us"))}),
    )
    return salt


def key_hash(salt: str, kind: str, value: str) -> str:
    """Salted SHA-256 of one identifier; the import computes the same in SQL."""
    return hashlib.sha256(f"{salt}{kind}:{value}".encode()).hexdigest()


@dataclass
class Erasure:
    """What :func:`forget` did (the customer id is returned to the caller, never stored)."""

    erasure_id: str
    customer_id: str
    erased_at: datetime
    actor: str
    tables: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    files: dict[str, int] = field(default_factory=dict)
    not_scrubbed: list[str] = field(default_factory=list)
    compacted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def person_keys(ws: Workspace, customer_id: str) -> dict[str, set[str]]:
    """The person's identifiers by kind: ``id`` (customer and source ids), ``email``,
    ``phone`` (normalised as on import) and ``id_number`` (from ID fields in attributes)."""
    keys: dict[str, set[str]] = {"id": {customer_id}, "email": set(), "phone": set()}
    keys["id_number"] = set()
    ids = ws.table("identities")
    for r in (
        ids.filter(ids.customer_id == customer_id)
        .select("source_id", "email_norm", "phone_norm")
        .to_pyarrow()
        .to_pylist()
    ):
        keys["id"].add(r["source_id"])
        if r["email_norm"]:
            keys["email"].add(r["email_norm"])
        if r["phone_norm"]:
            keys["phone"].add(r["phone_norm"])
    c = ws.table("customers")
    for r in (
        c.filter(c.customer_id == customer_id)
        .select("email", "phone", "attributes")
        .to_pyarrow()
        .to_pylist()
    ):
        if email_norm(r["email"]):
            keys["email"].add(email_norm(r["email"]))  # type: ignore[arg-type]
        if phone_norm(r["phone"]):
            keys["phone"].add(phone_norm(r["phone"]))  # type: ignore[arg-type]
        try:
            attrs = json.loads(r["attributes"] or "{}")
        except ValueError:
            attrs = {}
        for name, value in attrs.items() if isinstance(attrs, dict) else ():
            if value in (None, ""):
                continue
            if _norm(name) in _ID_FIELDS:
                keys["id_number"].add(re.sub(r"\s", "", str(value)).upper())
            elif email_norm(value):
                keys["email"].add(email_norm(value))  # type: ignore[arg-type]
    # e-mails, phones and ID numbers the profile had before a merge or an update replaced them
    h = ws.table("customer_history")
    old = h.filter(h.customer_id == customer_id).select("field", "value")
    for r in old.to_pyarrow().to_pylist():
        if r["field"] == "email" and email_norm(r["value"]):
            keys["email"].add(email_norm(r["value"]))  # type: ignore[arg-type]
        elif r["field"] == "phone" and phone_norm(r["value"]):
            keys["phone"].add(phone_norm(r["value"]))  # type: ignore[arg-type]
        elif _norm(r["field"]) in _ID_FIELDS and r["value"]:
            keys["id_number"].add(re.sub(r"\s", "", str(r["value"])).upper())
    keys["id"].discard(None)  # type: ignore[arg-type]
    return keys


def _customer_columns(ws: Workspace) -> dict[str, list[str]]:
    """Every table (canonical or not) with columns naming a customer id."""
    out: dict[str, list[str]] = {}
    for name in ws.con.list_tables():
        if name in _SKIP or name.startswith("_"):
            continue
        cols = [c for c in ws.con.table(name).schema().names if c.endswith("customer_id")]
        if cols:
            out[name] = cols
    return out


def _phone_pattern(digits: str) -> str:
    """A regex finding the number as people write it (spaces, dashes, +86) in raw text."""
    body = r"[\s\-()]*".join(digits)
    return r"(^|[^0-9])(\+?0{0,2}86[\s\-()]*)?" + body + r"([^0-9]|$)"


def _merge_totals(ws: Workspace, new: dict[tuple[date, str, str], list[float]]) -> None:
    """Add sums into ``erased_totals``, merging with the rows already there."""
    import pyarrow as pa

    if not new:
        return
    days = sorted({k[0] for k in new})
    kinds = sorted({k[1] for k in new})
    cats = sorted({k[2] for k in new})
    t = ws.table("erased_totals")
    old = t.filter(t.day.isin(days), t.kind.isin(kinds), t.category.isin(cats))
    merged: dict[tuple[date, str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for r in old.to_pyarrow().to_pylist():
        m = merged[(r["day"], r["kind"], r["category"])]
        m[0] += r["rows"] or 0
        m[1] += r["amount"] or 0.0
        m[2] += r["quantity"] or 0.0
    for key, (n, amount, qty) in new.items():
        m = merged[key]
        m[0] += n
        m[1] += amount
        m[2] += qty
    ws.store.delete("erased_totals", day=days, kind=kinds, category=cats)
    keys = sorted(merged)
    ws.store.append(
        "erased_totals",
        pa.table(
            {
                "day": pa.array([k[0] for k in keys], pa.date32()),
                "kind": [k[1] for k in keys],
                "category": [k[2] for k in keys],
                "rows": pa.array([int(merged[k][0]) for k in keys], pa.int64()),
                "amount": pa.array([round(merged[k][1], 2) for k in keys], pa.float64()),
                "quantity": pa.array([merged[k][2] for k in keys], pa.float64()),
            }
        ),
    )


def _totals(ws: Workspace, customer_id: str) -> dict[tuple[date, str, str], list[float]]:
    import ibis

    out: dict[tuple[date, str, str], list[float]] = {}
    o = ws.table("orders").filter(ibis._.customer_id == customer_id)
    grouped = o.group_by(
        day=o.ordered_at.date(),
        kind=ibis.ifelse(o.is_return.fill_null(False), "returns", "orders"),
        category=o.channel.fill_null(""),
    ).aggregate(rows=o.count(), amount=o.amount.sum(), quantity=o.quantity.sum())
    for r in grouped.to_pyarrow().to_pylist():
        out[(r["day"], r["kind"], r["category"])] = [
            r["rows"],
            r["amount"] or 0.0,
            r["quantity"] or 0.0,
        ]
    e = ws.table("events").filter(ibis._.customer_id == customer_id)
    grouped = e.group_by(
        day=e.occurred_at.date(), kind=ibis.literal("events"), category=e.type.fill_null("")
    ).aggregate(rows=e.count())
    for r in grouped.to_pyarrow().to_pylist():
        out[(r["day"], r["kind"], r["category"])] = [r["rows"], 0.0, 0.0]
    return out


def _quarantine_rows(ws: Workspace, keys: dict[str, set[str]]) -> list[dict[str, Any]]:
    q = ws.table("quarantine")
    raw = q.raw.fill_null("")
    cond = None
    for cid in keys["id"] | keys["id_number"]:
        c = raw.contains(json.dumps(cid, ensure_ascii=False))
        cond = c if cond is None else cond | c
    for email in keys["email"]:
        c = raw.lower().contains(email)
        cond = c if cond is None else cond | c
    for phone in keys["phone"]:
        c = raw.re_search(_phone_pattern(phone))
        cond = c if cond is None else cond | c
    if cond is None:
        return []
    return q.filter(cond).select("import_id", "source", "row_number").to_pyarrow().to_pylist()


def _file_paths(ws: Workspace) -> list[Path]:
    """Text files kequn writes into the workspace: file-trigger outputs and ``exports/``."""
    from kequn.act.triggers import resolve_env, stored_triggers

    paths: list[Path] = []
    for trig in stored_triggers(ws):
        if trig.channel != "file":
            continue
        try:
            path = Path(str(resolve_env(trig.settings["path"]))).expanduser()
        except Exception:  # an unset variable: that file cannot be found anyway
            continue
        paths.append(path if path.is_absolute() else ws.path / path)
    exports = ws.path / "exports"
    if exports.is_dir():
        paths += sorted(p for p in exports.rglob("*") if p.is_file())
    return list(dict.fromkeys(paths))


_TEXT_SUFFIXES = {".csv", ".jsonl", ".json", ".txt", ".tsv", ".ndjson"}


def _scrub_file(path: Path, patterns: list[re.Pattern[str]]) -> int | None:
    """Drop the lines naming the person; None when the file is not text kequn can edit."""
    if path.suffix.lower() not in _TEXT_SUFFIXES:
        return None
    data = path.read_bytes()
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    lines = text.splitlines(keepends=True)
    kept = [ln for ln in lines if not any(p.search(ln) for p in patterns)]
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path.with_name(path.name + ".kequn-tmp")
        tmp.write_bytes("".join(kept).encode(encoding))
        tmp.replace(path)
    return dropped


def _patterns(keys: dict[str, set[str]], name: str | None) -> list[re.Pattern[str]]:
    out = [re.compile(r"(^|[^\w])" + re.escape(v) + r"([^\w]|$)") for v in keys["id"]]
    out += [re.compile(re.escape(v), re.IGNORECASE) for v in keys["email"]]
    out += [re.compile(re.escape(v)) for v in keys["id_number"]]
    out += [re.compile(_phone_pattern(v)) for v in keys["phone"]]
    if name and len(name) >= 2:
        out.append(re.compile(re.escape(name)))
    return out


def forget(
    ws: Workspace, key: str, *, actor: str | None = None, compact_file: bool = True
) -> Erasure:
    """Erase the person ``key`` names (customer id, source id, e-mail or phone).

    Irreversible: export their data first if they asked for it (:func:`kequn.privacy.
    export_person`). Returns what was erased where, without the data. ``compact_file``
    rewrites the database file afterwards (:func:`compact`; it closes ``ws``, which reopens
    on next use); the server passes False, as it cannot close its connections.
    """
    import pyarrow as pa

    from kequn.access import audit, local_actor
    from kequn.access.audit import _now
    from kequn.profiles import find_customer

    actor = actor or local_actor()
    customer_id = find_customer(ws, key)
    keys = person_keys(ws, customer_id)
    c = ws.table("customers")
    names = c.filter(c.customer_id == customer_id).select("name", "name_en").to_pyarrow()
    person_names = [v for col in names.columns for v in col.to_pylist() if v]
    now = _now(ws)
    erasure = Erasure(uuid.uuid4().hex[:12], customer_id, now, actor)
    salt = erasure_salt(ws)
    hashed = sorted(
        {(kind, key_hash(salt, kind, v)) for kind, values in keys.items() for v in values}
    )
    erasure.keys = len(hashed)
    store = ws.store
    with store.transaction():
        _merge_totals(ws, _totals(ws, customer_id))
        o = ws.table("orders")
        order_ids = o.filter(o.customer_id == customer_id).order_id.to_pyarrow().to_pylist()
        if order_ids:
            lines = ws.table("order_lines")
            n = lines.filter(lines.order_id.isin(order_ids)).count().execute()
            store.delete("order_lines", order_id=order_ids)
            erasure.tables["order_lines"] = int(n)
        d = ws.table("deliveries")
        n = int(d.filter(d.customer_id == customer_id).count().execute())
        if n:
            store.update(
                "deliveries",
                {"customer_id": "(erased)", "payload": '{"erased": true}', "last_error": None},
                customer_id=customer_id,
            )
            erasure.tables["deliveries (scrubbed)"] = n
        for row in _quarantine_rows(ws, keys):
            store.delete("quarantine", **row)
            erasure.tables["quarantine"] = erasure.tables.get("quarantine", 0) + 1
        for table, columns in _customer_columns(ws).items():
            for column in columns:
                t = ws.con.table(table)
                n = int(t.filter(t[column] == customer_id).count().execute())
                if n:
                    store.delete(table, **{column: customer_id})
                    erasure.tables[table] = erasure.tables.get(table, 0) + n
        store.append(
            "erasures",
            pa.table(
                {
                    "erasure_id": [erasure.erasure_id],
                    "erased_at": pa.array([now], pa.timestamp("us")),
                    "actor": [actor],
                    "keys": pa.array([erasure.keys], pa.int64()),
                    "tables": [json.dumps(erasure.tables, sort_keys=True)],
                }
            ),
        )
        store.append(
            "erasure_keys",
            pa.table(
                {
                    "erasure_id": [erasure.erasure_id] * len(hashed),
                    "kind": [k for k, _ in hashed],
                    "key_hash": [h for _, h in hashed],
                    "erased_at": pa.array([now] * len(hashed), pa.timestamp("us")),
                }
            ),
        )
        audit(
            ws,
            actor,
            "erasure",
            f"erasure:{erasure.erasure_id}",
            {"tables": erasure.tables, "keys": erasure.keys},
        )
    patterns = _patterns(keys, person_names[0] if person_names else None)
    patterns += [re.compile(re.escape(n)) for n in person_names[1:] if len(n) >= 2]
    for path in _file_paths(ws):
        if not path.exists():
            continue
        dropped = _scrub_file(path, patterns)
        if dropped is None:
            erasure.not_scrubbed.append(str(path))
        elif dropped:
            erasure.files[str(path)] = dropped
    erasure.compacted = compact(ws, rewrite=compact_file)
    return erasure


def compact(ws: Workspace, *, rewrite: bool = True) -> bool:
    """Make deleted rows leave the database file; True when they have.

    ``CHECKPOINT`` folds the write-ahead log into the file, but DuckDB keeps deleted rows in
    their row groups and freed blocks keep their old bytes, so with ``rewrite`` the whole
    database is copied into a fresh file (``COPY FROM DATABASE``) that replaces the old one.
    That needs the only connection to the file: it closes ``ws`` (which reopens on next
    use). False when the store is not a DuckDB file or another connection is busy (the
    server: run ``kequn compact`` while it is stopped).
    """
    import os

    if not ws.store.is_duckdb or ws.config.backend != "duckdb":
        return False
    duck = ws.store.duck
    try:
        duck.execute("CHECKPOINT")
    except Exception:  # "other transactions are active": the server; compact later
        return False
    if not rewrite:
        return False
    target = (ws.path / ws.config.db_path).resolve()
    fresh = target.with_name(target.name + ".compact")
    fresh.unlink(missing_ok=True)
    name = duck.execute("SELECT current_database()").fetchall()[0][0]
    try:
        duck.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS _kequn_fresh")
        try:
            duck.execute(f'COPY FROM DATABASE "{name}" TO _kequn_fresh')
        finally:
            duck.execute("DETACH _kequn_fresh")
    except Exception:
        fresh.unlink(missing_ok=True)
        raise
    ws.close()
    os.replace(fresh, target)
    Path(str(target) + ".wal").unlink(missing_ok=True)
    return True
