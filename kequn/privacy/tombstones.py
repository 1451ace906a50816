"""Import hooks: erased people stay erased, and personal-looking columns are reported.

Called by the import pipeline (kequn/ingest/load.py) on its staging table ``_stage``.
This is storage code: it speaks DuckDB SQL to the import's engine, like the pipeline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kequn.ingest import parse
from kequn.privacy.classes import configured_classes, infer_class

__all__ = ["ERASED_REASON", "detect_personal", "mark_erased"]

ERASED_REASON = "erased on {day} (right to be forgotten)"
SAMPLE = 1000  # values per column looked at to infer a class


def mark_erased(engine, kind: str) -> int:
    """Give staged rows of erased people the reason ``erased on DAY (right to be
    forgotten)``, so they are quarantined (without their raw values) instead of written.

    A row is theirs when its customer/source id, normalised e-mail or phone hashes to a
    key in ``erasure_keys``. Returns how many rows were marked.
    """
    if not engine.execute("SELECT count(*) FROM erasure_keys").fetchall()[0][0]:
        return 0
    salt = engine.execute("SELECT salt FROM privacy_salt LIMIT 1").fetchall()
    if not salt:
        return 0
    s = parse.quote_str(salt[0][0])
    columns = {r[0] for r in engine.execute("DESCRIBE _stage").fetchall()}
    keys = [f"sha256({s} || 'id:' || source_id)"]
    if "email" in columns:
        keys.append(f"sha256({s} || 'email:' || ({parse.email_norm('email')}))")
    if "phone" in columns:
        keys.append(f"sha256({s} || 'phone:' || ({parse.phone_norm('phone')}))")
    reason = parse.quote_str(ERASED_REASON).replace(
        "{day}", "' || strftime(k.erased_at, '%Y-%m-%d') || '"
    )
    before = engine.execute("SELECT count(*) FROM _stage WHERE _reason IS NULL").fetchall()[0][0]
    engine.execute(
        f"""
        UPDATE _stage SET _reason = {reason}, _raw = NULL
        FROM (SELECT key_hash, min(erased_at) AS erased_at FROM erasure_keys GROUP BY 1) k
        WHERE _stage._reason IS NULL AND k.key_hash IN ({", ".join(keys)})
        """
    )
    after = engine.execute("SELECT count(*) FROM _stage WHERE _reason IS NULL").fetchall()[0][0]
    return int(before - after)


def detect_personal(
    engine, kind: str, headers: list[str], import_id: str, config_raw: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """Columns kept in ``attributes`` (customers) or ``properties`` (events) that look
    personal by name or values: ``{column: {"class", "reason"}}``. New ones are recorded
    in ``field_classes`` (run inside the import's transaction); a column the config or an
    earlier import classed keeps that class and is not reported again.
    """
    column = {"customers": "attributes", "events": "properties"}.get(kind)
    if column is None or not headers:
        return {}
    from kequn.access.masking import _norm

    known = set(configured_classes(config_raw))
    known |= {_norm(r[0]) for r in engine.execute("SELECT field FROM field_classes").fetchall()}
    found: dict[str, dict[str, str]] = {}
    for header in dict.fromkeys(headers):
        if _norm(header) in known:
            continue
        path = '$."' + header.replace("\\", "\\\\").replace('"', '\\"') + '"'
        values = [
            r[0]
            for r in engine.execute(
                f"SELECT json_extract_string({column}, ?) AS v FROM _stage "
                f"WHERE _reason IS NULL AND v IS NOT NULL LIMIT {SAMPLE}",
                [path],
            ).fetchall()
        ]
        inferred = infer_class(header, values)
        if inferred is not None:
            found[header] = {"class": inferred[0], "reason": inferred[1]}
    now = datetime.now()
    for header, info in found.items():
        engine.execute(
            "INSERT INTO field_classes VALUES (?, ?, ?, ?, ?)",
            [header, info["class"], info["reason"], import_id, now],
        )
    return found
