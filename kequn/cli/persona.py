"""``kequn persona SEGMENT``: the persona (用户画像) of a segment, a rule or a cluster.

Thin: calls :func:`kequn.insight.persona` and prints it as text, JSON or Markdown.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kequn.cli._common import WorkspaceOpt, handle_errors, print_json
from kequn.errors import InputError

FORMATS = ("text", "json", "markdown")


def register(app: typer.Typer) -> None:
    app.command("persona")(persona_cmd)


@handle_errors
def persona_cmd(
    segment: Annotated[
        str,
        typer.Argument(
            help="A stored segment name, cluster:N (latest cluster run) or a quoted rule."
        ),
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="At this day or instant; default: now (cluster:N: the run's as_of).",
            show_default=False,
        ),  # fmt: skip
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="text, json or markdown.")] = "text",
    min_count: Annotated[
        int, typer.Option("--min-count", help="Members an attribute value needs to be listed.")
    ] = 5,
    workspace: WorkspaceOpt = None,
) -> None:
    """Describe a segment: size, value, R/F/M, over-represented attributes, name (用户画像)."""
    if format_ not in FORMATS:
        raise InputError(f"--format {format_!r}: use {', '.join(FORMATS)}")
    from kequn.insight import persona, persona_markdown, persona_text
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        p = persona(ws, segment, as_of, min_count=min_count)
    if format_ == "json":
        print_json(p)
    elif format_ == "markdown":
        sys.stdout.write(persona_markdown(p))
    else:
        sys.stdout.write(persona_text(p))
