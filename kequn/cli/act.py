"""``kequn trigger`` and ``kequn deliveries``: what fires on segment changes, and what was sent.

Thin: every command calls :mod:`kequn.act` and prints. ``kequn deliveries send`` runs the
dispatcher once, for workspaces without a running server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

trigger_app = typer.Typer(
    name="trigger",
    help="Triggers (触发器): on entering or leaving a segment, send a message.",
    no_args_is_help=True,
)
deliveries_app = typer.Typer(
    name="deliveries",
    help="Deliveries (投递记录): every message triggers sent or will send, with attempts.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(trigger_app, name="trigger")
    app.add_typer(deliveries_app, name="deliveries")


def _open(workspace: Path | None):
    from kequn.workspace import open_workspace

    return open_workspace(workspace)


def _brief(trigger) -> str:
    s = trigger.settings
    target = s.get("url") or s.get("path") or s.get("to") or s.get("host") or ""
    return str(target)


@trigger_app.command("apply")
@handle_errors
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="Trigger file (.toml with [[trigger]] tables).")],
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate and store the file's triggers, replacing ones of the same name (应用)."""
    from kequn.act.triggers import apply_triggers
    from kequn.segments.engine import stored_names

    with _open(workspace) as ws:
        triggers = apply_triggers(ws, file)
        known = set(stored_names(ws))
    unknown = sorted({t.segment for t in triggers} - known)
    if json_:
        print_json({"applied": [t.as_config() for t in triggers], "unknown_segments": unknown})
        return
    for t in triggers:
        console.print(f"stored trigger [bold]{escape(t.name)}[/]: {t.segment} {t.on} → {t.channel}")
    for name in unknown:
        console.print(
            f"[yellow]warning:[/] segment {escape(repr(name))} is not stored yet; "
            "the trigger fires once `kequn segment apply` defines it"
        )


@trigger_app.command("list")
@handle_errors
def list_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List stored triggers (列表)."""
    from kequn.act.triggers import stored_triggers

    with _open(workspace) as ws:
        triggers = stored_triggers(ws)
    if json_:
        print_json([t.as_config() for t in triggers])
        return
    if not triggers:
        console.print("no triggers yet; define some in a file and run `kequn trigger apply FILE`")
        return
    table = Table()
    for name in ("trigger", "segment", "on", "channel", "target", "cap", "quiet hours", "exp"):
        table.add_column(name)
    for t in triggers:
        table.add_row(
            escape(t.name),
            escape(t.segment),
            t.on,
            t.channel,
            escape(_brief(t)),
            escape(t.cap or "-"),
            escape(t.quiet_hours or "-"),
            escape(t.experiment.name if t.experiment else "-"),
        )
    console.print(table)


@deliveries_app.callback()
@handle_errors
def deliveries_cmd(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: pending, sent, dead, holdout, capped."),
    ] = None,
    segment: Annotated[str | None, typer.Option(help="Only this segment.")] = None,
    trigger: Annotated[str | None, typer.Option(help="Only this trigger.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show, newest first (0 = all).")] = 50,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List deliveries with status, attempts and the last error (投递记录)."""
    if ctx.invoked_subcommand is not None:
        return
    from kequn.act.outbox import deliveries, delivery_counts

    with _open(workspace) as ws:
        rows = deliveries(ws, status=status, segment=segment, trigger=trigger, limit=limit)
        counts = delivery_counts(ws)
    if json_:
        print_json(rows)
        return
    console.print("  ".join(f"{k} [bold]{v:,}[/]" for k, v in counts.items()))
    if not rows:
        console.print("no deliveries match")
        return
    table = Table()
    for name in ("id", "trigger", "customer", "status", "tries", "next / sent", "error"):
        table.add_column(name, justify="right" if name == "tries" else "left")
    for r in rows:
        when = r["sent_at"] if r["status"] == "sent" else r["next_attempt_at"]
        table.add_row(
            r["delivery_id"],
            escape(r["trigger"]),
            escape(r["customer_id"]),
            r["status"] + (f" ({r['variant']})" if r["variant"] else ""),
            str(r["attempts"]),
            "" if when is None else f"{when:%m-%d %H:%M:%S}",
            escape((r["last_error"] or "")[:80]),
        )
    console.print(table)


@deliveries_app.command("send")
@handle_errors
def send_cmd(
    limit: Annotated[int, typer.Option(help="Deliveries to send at most.")] = 100,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each receiver.")] = 5.0,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Send the deliveries that are due now, once, and record each outcome (发送)."""
    from kequn.act.outbox import dispatch_once

    with _open(workspace) as ws:
        tally = dispatch_once(ws, limit=limit, timeout=timeout)
    if json_:
        print_json(tally)
        return
    console.print(
        f"due {tally['due']:,}: sent {tally['sent']:,}, retrying {tally['retrying']:,}, "
        f"dead {tally['dead']:,}"
    )


@deliveries_app.command("retry")
@handle_errors
def retry_cmd(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Delivery ids (or idempotency keys).")
    ] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Requeue every dead delivery.")] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Make dead deliveries pending again, attempts from zero (重试)."""
    from kequn.act.outbox import requeue

    with _open(workspace) as ws:
        n = requeue(ws, ids or (), dead=dead)
    if json_:
        print_json({"requeued": n})
        return
    console.print(f"requeued {n:,} deliveries; `kequn deliveries send` (or the server) sends them")
