"""``kequn serve``: the real-time service (HTTP API, live segments, triggers)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from kequn.cli._common import WorkspaceOpt, console, handle_errors
from kequn.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@handle_errors
def serve_cmd(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; public ones need a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    tick: Annotated[
        float,
        typer.Option("--tick", help="Seconds between checks of time-relative segments."),
    ] = 1.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the API: events in, live segment membership, triggers out (Ctrl-C stops)."""
    import uvicorn

    from kequn import access
    from kequn.server.app import create_app
    from kequn.server.service import Service
    from kequn.workspace import open_workspace

    if tick <= 0:
        raise InputError(f"--tick {tick}: give a positive number of seconds")
    ws = open_workspace(workspace)
    try:
        tokens = access.list_tokens(ws, include_revoked=False)
        if not tokens and not is_loopback(host):
            raise InputError(
                f"refusing to serve on {host!r} without an API token: anyone who can reach "
                "it could read every customer. Create one with `kequn token create NAME "
                "--role admin`, or bind to 127.0.0.1"
            )
        service = Service(ws, tick=tick)
        app = create_app(service, open_access=not tokens)
        mode = "tokens required" if tokens else "open to this machine (no tokens yet)"
        console.print(
            f"kequn serving {ws.path} on http://{host}:{port} ({mode}); API docs at /docs"
        )
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        ws.close()
