"""What the HTTP API checks and audits around reads and exports (kequn/server/app.py).

Kept here so the route handlers stay one line each and the rules are in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kequn.access import PermissionDenied, audit, require
from kequn.privacy.classes import check_export_columns, field_classes, sensitive_present

if TYPE_CHECKING:
    from kequn.access import Principal
    from kequn.workspace import Workspace

__all__ = ["audit_sensitive_read", "require_export"]


def audit_sensitive_read(ws: Workspace, who: Principal, record: Mapping[str, Any]) -> None:
    """Record ``sensitive.read`` when ``who`` is shown sensitive fields of a profile."""
    if not who.may_read("sensitive"):
        return
    fields = sensitive_present(record, field_classes(ws))
    if fields:
        target = str(record.get("customer_id", ""))
        audit(ws, who.actor, "sensitive.read", target, {"fields": fields})


def require_export(ws: Workspace, who: Principal, target: str, columns: list[str] | None) -> None:
    """The role may export and every column is one it may carry; a refusal is audited
    (``export.refused``) before :class:`PermissionDenied` reaches the caller."""
    try:
        require(who, "export")
        check_export_columns(ws, who, columns)
    except PermissionDenied as exc:
        audit(ws, who.actor, "export.refused", target, {"reason": str(exc)})
        raise
