"""``kequn schedule``: the calendar of upcoming and missed scheduled refreshes.

Thin: calls :func:`kequn.segments.refresh.schedule_calendar` and prints.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

_STATE = {"missed": "[bold red]MISSED[/]", "due": "[yellow]due now[/]", "upcoming": "upcoming"}


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule_cmd)


@handle_errors
def schedule_cmd(
    horizon: Annotated[
        str, typer.Option("--horizon", help="How far ahead to look: 12h, 7d, 2w.")
    ] = "7d",
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Upcoming and missed refreshes of scheduled segments (and tags) (刷新计划)."""
    from kequn.segments.refresh import schedule_calendar
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        data = schedule_calendar(ws, horizon=horizon)
    if json_:
        print_json(data)
        return
    if not data["items"]:
        console.print(
            'nothing is scheduled; give segments a schedule (schedule = "1d" or a cron '
            "expression) in their file and apply it"
        )
        return
    table = Table(title=f"refreshes until {data['until']:%Y-%m-%d %H:%M}")
    for col in ("when", "kind", "name", "schedule", "state"):
        table.add_column(col)
    for e in data["entries"]:
        table.add_row(
            f"{e['at']:%Y-%m-%d %H:%M}",
            e["kind"],
            escape(e["name"]),
            escape(e["schedule"]),
            _STATE[e["state"]],
        )
    console.print(table)
    missed = [i for i in data["items"] if i["missed"]]
    if missed:
        names = ", ".join(f"{i['kind']} {i['name']}" for i in missed)
        console.print(
            f"[bold red]{len(missed)} missed:[/] {escape(names)}; a running `kequn serve` "
            "refreshes them, or apply their files again"
        )
