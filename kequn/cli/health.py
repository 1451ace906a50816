"""``kequn health [SEGMENT]``: a 0–100 health index per segment and overall, with its parts.

Thin: calls :func:`kequn.insight.health.health` and prints one row per segment (or, for one
segment, its components with the weight used and the figure behind each), then every warning
with what to do.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("health")(health_cmd)


_SHORT = {"data_quality": "data", "timeliness": "fresh", "strategy_fit": "fit"}


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _print_warning(w: dict) -> None:
    console.print(f"[yellow]! {escape(w['message'])}[/]", soft_wrap=True)
    console.print(f"  → {escape(w['action'])}", soft_wrap=True)


def _print_segment(seg: dict) -> None:
    """One segment in full: each component's score, weight used and the figure behind it."""
    size = "never evaluated" if seg["size"] is None else f"{seg['size']:,} members"
    console.print(f"[bold]{escape(seg['segment'])}[/]  health {_score(seg['index'])}/100  ({size})")
    table = Table(show_header=True, header_style="bold")
    table.add_column("component")
    table.add_column("score", justify="right")
    table.add_column("weight", justify="right")
    table.add_column("")
    for name, c in seg["components"].items():
        table.add_row(name, _score(c["score"]), f"{c['used_weight']:.0%}", escape(c["summary"]))
    console.print(table)


def _print_overview(report: dict) -> None:
    """Every segment on one row: its index and the four component scores."""
    table = Table(title=f"segment health (overall {_score(report['index'])}/100)")
    table.add_column("segment", no_wrap=True)
    table.add_column("members", justify="right")
    table.add_column("health", justify="right")
    names = list(report["segments"][0]["components"])
    for name in names:
        table.add_column(_SHORT.get(name, name), justify="right")
    for seg in report["segments"]:
        size = "—" if seg["size"] is None else f"{seg['size']:,}"
        scores = [_score(seg["components"][n]["score"]) for n in names]
        table.add_row(escape(seg["segment"]), size, _score(seg["index"]), *scores)
    console.print(table)
    console.print(
        "data = data_quality, fresh = timeliness, fit = strategy_fit; — not measured. "
        "`kequn health SEGMENT` shows why and the figures behind each score."
    )


def _print(report: dict, one: bool) -> None:
    segments = report["segments"]
    if not segments:
        console.print("no segments yet; store some with `kequn segment apply FILE`")
    elif one:
        _print_segment(segments[0])
    else:
        _print_overview(report)
    for w in [w for seg in segments for w in seg["warnings"]] + report["warnings"]:
        _print_warning(w)


@handle_errors
def health_cmd(
    segment: Annotated[
        str | None,
        typer.Argument(help="A stored segment (default: every segment).", show_default=False),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Count campaign follow-ups ended by this day or instant; default: now.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Segment health (客群健康度): data quality, timeliness, strategy fit, perception."""
    from kequn.insight.health import health
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        report = health(ws, segment, as_of=as_of).as_dict()
    if json_:
        print_json(report)
        return
    _print(report, segment is not None)
