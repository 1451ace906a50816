"""Access control for the server and the CLI: tokens, roles, masking, the audit log.

Roles (see :data:`ROLES`): ``admin`` everything; ``analyst`` read (unmasked), write rules,
export; ``viewer`` read with personal fields masked; ``ingest`` post events and customers
only. Tokens are stored as SHA-256 hashes; the audit log is append-only. See docs/access.md.
"""

from __future__ import annotations

from kequn.access.audit import audit, audit_entries, local_actor
from kequn.access.masking import (
    PERSONAL_FIELDS,
    mask_email,
    mask_id_number,
    mask_phone,
    mask_record,
    mask_value,
)
from kequn.access.permissions import ACTIONS, GRANTS, ROLES, Principal, allowed, require
from kequn.access.tokens import (
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
    token_principal,
)
from kequn.errors import AuthError, PermissionDenied

__all__ = [
    "ACTIONS",
    "GRANTS",
    "PERSONAL_FIELDS",
    "ROLES",
    "AuthError",
    "PermissionDenied",
    "Principal",
    "allowed",
    "audit",
    "audit_entries",
    "authenticate",
    "create_token",
    "list_tokens",
    "local_actor",
    "local_principal",
    "mask_email",
    "mask_id_number",
    "mask_phone",
    "mask_record",
    "mask_value",
    "require",
    "revoke_token",
    "token_principal",
]


def local_principal() -> Principal:
    """The user at this machine's shell: an admin (they can open the database file anyway)."""
    return Principal(local_actor(), "admin")
