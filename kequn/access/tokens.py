"""API tokens: created once, stored as a SHA-256 hash, checked in constant time.

The secret is shown once by :func:`create_token` and never stored; the database keeps its
hash and an 8-character prefix to recognise it by in listings. :func:`authenticate` sits
on the hot path of the event endpoint (thousands of calls a second), so verified hashes
are kept in an in-process cache for :data:`CACHE_TTL_S` seconds and token use is written
to the audit log at most once per token per :data:`USE_AUDIT_INTERVAL_S` seconds: no
request writes to the database on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from typing import Any

import ibis
import pyarrow as pa

from kequn.access.audit import _now, audit, local_actor
from kequn.access.permissions import GRANTS, ROLES, Principal
from kequn.errors import AuthError, InputError, closest
from kequn.workspace import Workspace

__all__ = [
    "CACHE_TTL_S",
    "TOKEN_PREFIX",
    "USE_AUDIT_INTERVAL_S",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
    "token_principal",
]

TOKEN_PREFIX = "kq_"
CACHE_TTL_S = 10.0  # how long a token revoked by another process may still be accepted
USE_AUDIT_INTERVAL_S = 60.0
_SHOWN = 8  # characters of the token kept for display: "kq_" and 5 of the secret
_NAME = re.compile(r"^[\w.@:-]{1,64}$")

_lock = threading.Lock()  # guards the two dicts below
# One database round trip at a time from this module: a DuckDB connection must not run
# two queries at once, and concurrent first requests with one token need one lookup.
_db_lock = threading.Lock()
# (workspace key, token hash) -> (principal, monotonic time it was verified)
_verified: dict[tuple[str, str], tuple[Principal, float]] = {}
# (workspace key, token name) -> monotonic time its use was last audited
_last_use: dict[tuple[str, str], float] = {}


def _ws_key(ws: Workspace) -> str:
    return f"{ws.path}|{ws.config.backend}|{ws.config.db_path}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}{closest(role, ROLES)} (roles: {', '.join(ROLES)})")


def _active(ws: Workspace) -> ibis.Table:
    t = ws.table("api_tokens")
    return t.filter(t.revoked_at.isnull())


def _check_grants(role: str, grants: tuple[str, ...] | list[str]) -> str | None:
    """The grants as stored (sorted, comma-separated), after checking them."""
    for grant in grants:
        if grant not in GRANTS:
            raise InputError(
                f"unknown grant {grant!r}{closest(grant, GRANTS)} (grants: {', '.join(GRANTS)})"
            )
    if grants and role == "ingest":
        raise InputError("role 'ingest' reads nothing, so grants do not apply to it")
    return ",".join(sorted(set(grants))) or None


def _grants(text: str | None) -> frozenset[str]:
    return frozenset(g for g in (text or "").split(",") if g)


def create_token(
    ws: Workspace,
    name: str,
    role: str,
    *,
    actor: str | None = None,
    grants: tuple[str, ...] | list[str] = (),
) -> str:
    """Create a token and return its secret; this is the only time the secret exists.

    ``name`` identifies the token in listings and the audit log and must not name another
    active token. ``actor`` is who creates it (default: the local user, ``cli:USER``).
    ``grants`` add field classes to the role (``sensitive``, ``personal``; docs/privacy.md).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"token name {name!r}: use 1 to 64 letters, digits or . _ - @ : (no spaces)"
        )
    _check_role(role)
    stored_grants = _check_grants(role, list(grants))
    actor = actor or local_actor()
    t = _active(ws)
    if t.filter(t.name == name).count().execute():
        raise InputError(
            f"an active token named {name!r} exists; revoke it first "
            f"(`kequn token revoke {name}`) or choose another name"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ws.store.transaction():
        ws.store.append(
            "api_tokens",
            pa.table(
                {
                    "name": [name],
                    "role": [role],
                    "token_hash": [_hash(token)],
                    "prefix": [token[:_SHOWN]],
                    "created_at": pa.array([_now(ws)], pa.timestamp("us")),
                    "created_by": [actor],
                    "revoked_at": pa.array([None], pa.timestamp("us")),
                    "grants": pa.array([stored_grants], pa.string()),
                }
            ),
        )
        detail = {"role": role, "prefix": token[:_SHOWN], "grants": stored_grants or ""}
        audit(ws, actor, "token.create", name, detail)
    return token


def list_tokens(ws: Workspace, *, include_revoked: bool = True) -> list[dict[str, Any]]:
    """Tokens (never their secrets or hashes) with when each was last used, oldest first."""
    t = ws.table("api_tokens")
    if not include_revoked:
        t = t.filter(t.revoked_at.isnull())
    log = ws.table("audit_log")
    used = (
        log.filter(log.action == "token.use")
        .group_by(target=log.target)
        .aggregate(last_used_at=log.at.max())
    )
    joined = t.left_join(used, t.name == used.target)
    rows = (
        joined.select(
            "name",
            "role",
            "grants",
            "prefix",
            "created_at",
            "created_by",
            "revoked_at",
            "last_used_at",
        )
        .order_by(["created_at", "name"])
        .to_pyarrow()
        .to_pylist()
    )
    for row in rows:
        # last use of this token, not of an earlier token with the same name
        if row["last_used_at"] is not None and row["last_used_at"] < row["created_at"]:
            row["last_used_at"] = None
        row["active"] = row["revoked_at"] is None
        row["grants"] = sorted(_grants(row["grants"]))
    return rows


def token_principal(ws: Workspace, name: str) -> Principal | None:
    """The active token ``name`` as a principal (role and grants), None when there is none.

    For things done later on a token's behalf, such as a trigger's ``owner``.
    """
    t = _active(ws)
    rows = t.filter(t.name == name).select("role", "grants").to_pyarrow().to_pylist()
    if not rows:
        return None
    return Principal(name, rows[0]["role"], _grants(rows[0]["grants"]))


def revoke_token(ws: Workspace, name: str, *, actor: str | None = None) -> None:
    """Revoke the active token ``name``; it is refused from now on (here at once)."""
    actor = actor or local_actor()
    t = _active(ws)
    rows = t.filter(t.name == name).to_pyarrow()
    if rows.num_rows == 0:
        names = _active(ws).name.to_pyarrow().to_pylist()
        hint = closest(name, names) if names else " (there are no active tokens)"
        raise InputError(f"no active token named {name!r}{hint}; see `kequn token list`")
    now = _now(ws)
    revoked = rows.set_column(
        rows.schema.get_field_index("revoked_at"),
        "revoked_at",
        pa.array([now] * rows.num_rows, pa.timestamp("us")),
    )
    with ws.store.transaction():
        ws.store.delete("api_tokens", name=name, token_hash=rows["token_hash"].to_pylist())
        ws.store.append("api_tokens", revoked)
        audit(ws, actor, "token.revoke", name, {"role": rows["role"][0].as_py()})
    key = _ws_key(ws)
    with _lock:
        for k in [k for k, (p, _) in _verified.items() if k[0] == key and p.name == name]:
            del _verified[k]


def _lookup(ws: Workspace, token: str, digest: str) -> Principal | None:
    t = _active(ws)
    candidates = t.filter(t.prefix == token[:_SHOWN]).select("name", "role", "token_hash", "grants")
    found = None
    for row in candidates.to_pyarrow().to_pylist():
        # constant time per comparison; every candidate is compared
        if hmac.compare_digest(row["token_hash"], digest):
            found = Principal(row["name"], row["role"], _grants(row["grants"]))
    return found


def authenticate(ws: Workspace, token: str | None) -> Principal:
    """The principal a token stands for, or :class:`AuthError` (HTTP 401).

    Accepts the bare token or an ``Authorization`` header value (``Bearer kq_…``).
    """
    if token is not None and token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        raise AuthError(
            "no API token; send the header 'Authorization: Bearer kq_…' "
            "(an admin creates one with `kequn token create NAME --role ROLE`)"
        )
    digest = _hash(token)
    key = (_ws_key(ws), digest)
    now = time.monotonic()
    with _lock:
        hit = _verified.get(key)
    if hit is not None and now - hit[1] < CACHE_TTL_S:
        principal = hit[0]
    else:
        with _db_lock:
            with _lock:
                hit = _verified.get(key)
            if hit is not None and now - hit[1] < CACHE_TTL_S:
                principal = hit[0]  # another thread verified it meanwhile
            else:
                principal = _lookup(ws, token, digest)
                with _lock:
                    if principal is None:
                        _verified.pop(key, None)
                    else:
                        _verified[key] = (principal, now)
        if principal is None:
            shown = token[:_SHOWN] if token.startswith(TOKEN_PREFIX) else "(not a kequn token)"
            raise AuthError(f"API token {shown}… is unknown or revoked; ask an admin for a new one")
    _record_use(ws, principal, now)
    return principal


def _record_use(ws: Workspace, principal: Principal, now: float) -> None:
    use_key = (_ws_key(ws), principal.name)
    with _lock:
        last = _last_use.get(use_key)
        if last is not None and now - last < USE_AUDIT_INTERVAL_S:
            return
        _last_use[use_key] = now
    with _db_lock:
        audit(ws, principal.actor, "token.use", principal.name, {"role": principal.role})
