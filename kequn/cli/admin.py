"""Workspace commands: ``kequn init``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kequn.cli._common import console, handle_errors


def register(app: typer.Typer) -> None:
    app.command("init")(init)


@handle_errors
def init(
    directory: Annotated[
        Path | None, typer.Argument(help="Folder to create (default: the current one).")
    ] = None,
    timezone: Annotated[str, typer.Option(help="Time zone for days and windows.")] = (
        "Asia/Shanghai"
    ),
) -> None:
    """Create a workspace: kequn.toml and an embedded database (创建工作区)."""
    from kequn.workspace import init_workspace

    ws = init_workspace(directory, timezone=timezone)
    ws.close()
    console.print(f"workspace ready in [bold]{ws.path}[/] (config: {ws.path / 'kequn.toml'})")
