"""``kequn token`` (create, list, revoke API tokens) and ``kequn audit`` (the audit log).

Thin: calls :mod:`kequn.access`. The CLI acts as ``cli:<os user>``, an admin: whoever can
run it on this machine can open the database file anyway.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import (
    JsonOpt,
    WorkspaceOpt,
    console,
    err_console,
    handle_errors,
    print_json,
)

token_app = typer.Typer(
    name="token",
    help="API tokens for `kequn serve`: create (shown once), list, revoke.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.command("audit")(audit_cmd)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


@token_app.command("create")
@handle_errors
def create_cmd(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. crm-sync.")],
    role: Annotated[
        str,
        typer.Option("--role", help="admin, analyst, viewer or ingest.", show_default=False),
    ],
    grant: Annotated[
        list[str] | None,
        typer.Option(
            "--grant",
            help="Field class the token may read and use: sensitive or personal; repeatable.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from kequn.access import create_token
    from kequn.workspace import open_workspace

    grants = sorted(set(grant or []))
    with open_workspace(workspace) as ws:
        token = create_token(ws, name, role, grants=grants)
    if json_:
        print_json({"name": name, "role": role, "grants": grants, "token": token})
        return
    err_console.print(
        f"created token {escape(name)!r} with role {escape(role)!r}. Store it now: it is "
        "shown only this once and cannot be recovered (revoke it and create another if lost).",
        soft_wrap=True,
    )
    # the token alone on stdout, so `kequn token create x --role y > file` captures just it
    print(token)


@token_app.command("list")
@handle_errors
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Tokens with their role, prefix, creation and last use (never the secret)."""
    from kequn.access import list_tokens
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rows = list_tokens(ws, include_revoked=all_)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no tokens; create one with `kequn token create NAME --role ROLE`")
        return
    table = Table(title="API tokens")
    for col in ("name", "role", "prefix", "created", "by", "last used", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r["name"]),
            r["role"] + "".join(f" +{g}" for g in r["grants"]),
            r["prefix"] + "…",
            _fmt(r["created_at"]),
            escape(r["created_by"] or "-"),
            _fmt(r["last_used_at"]),
            _fmt(r["revoked_at"]),
        )
    console.print(table)


@token_app.command("revoke")
@handle_errors
def revoke_cmd(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Revoke a token; requests with it are refused from now on."""
    from kequn.access import revoke_token
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        revoke_token(ws, name)
    console.print(f"revoked token {escape(name)!r}")


@handle_errors
def audit_cmd(
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="Only this actor (token:NAME, cli:USER).", show_default=False),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="Only this action, or a prefix before a dot (token = token.*).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this day or instant.", show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Up to this day (inclusive) or instant.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Newest N entries; 0 = all.")] = 50,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The audit log (审计日志), newest first: token, rule and export actions."""
    from kequn.access import audit_entries
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rows = audit_entries(ws, actor=actor, action=action, since=since, until=until, limit=limit)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no audit entries match")
        return
    table = Table(title="audit log")
    for col in ("seq", "at", "actor", "action", "target", "detail"):
        table.add_column(col)
    for r in rows:
        detail = json.dumps(r["detail"], ensure_ascii=False) if r["detail"] else ""
        table.add_row(
            str(r["seq"]),
            _fmt(r["at"]),
            escape(r["actor"]),
            escape(r["action"]),
            escape(r["target"] or ""),
            escape(detail),
        )
    console.print(table)
