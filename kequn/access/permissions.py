"""Roles and what each may do.

Four roles, fixed on purpose (a small table a reader checks at a glance beats a policy
language): ``admin`` may do everything; ``analyst`` reads (unmasked), writes rules and
exports; ``viewer`` only reads, with personal fields masked; ``ingest`` only posts events
and customers, for the systems that produce them.
"""

from __future__ import annotations

from dataclasses import dataclass

from kequn.errors import InputError, PermissionDenied, closest

__all__ = ["ACTIONS", "GRANTS", "ROLES", "Principal", "allowed", "require"]

ACTIONS: tuple[str, ...] = ("read", "read_personal", "ingest", "write_rules", "export", "admin")

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(ACTIONS),
    "analyst": frozenset({"read", "read_personal", "write_rules", "export"}),
    "viewer": frozenset({"read"}),
    "ingest": frozenset({"ingest"}),
}

# Field-class grants a token may carry on top of its role (docs/privacy.md): ``sensitive``
# reads and uses sensitive fields (admins always may); ``personal`` shows personal fields
# unmasked to a role without ``read_personal``.
GRANTS: tuple[str, ...] = ("personal", "sensitive")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's name, role and grants (or the local CLI user, an admin)."""

    name: str
    role: str
    grants: frozenset[str] = frozenset()

    def may_read(self, field_class: str) -> bool:
        """Whether values of this class (public, personal, sensitive) are shown in clear."""
        if field_class == "sensitive":
            return self.role == "admin" or "sensitive" in self.grants
        if field_class == "personal":
            return allowed(self, "read_personal") or bool(self.grants & {"personal", "sensitive"})
        return True

    @property
    def actor(self) -> str:
        """The name written in the audit log: ``token:NAME``, or ``cli:USER`` as is."""
        return self.name if self.name.startswith("cli:") else f"token:{self.name}"


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise InputError(
            f"unknown action {action!r}{closest(action, ACTIONS)} (actions: {', '.join(ACTIONS)})"
        )


def allowed(principal: Principal, action: str) -> bool:
    """Whether the principal's role includes ``action``; an unknown role includes nothing."""
    _check_action(action)
    return action in ROLES.get(principal.role, frozenset())


def require(principal: Principal, action: str) -> None:
    """Raise :class:`PermissionDenied` (HTTP 403) unless the role includes ``action``."""
    if allowed(principal, action):
        return
    roles = [r for r, actions in ROLES.items() if action in actions]
    raise PermissionDenied(
        f"role {principal.role!r} (token {principal.name!r}) may not {action!r}; "
        f"roles that may: {', '.join(roles)}"
    )
