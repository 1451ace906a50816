"""``kequn economics``, ``kequn costs`` and ``kequn benefit``: what campaigns cost and earn.

Thin: every command calls :mod:`kequn.economics` and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

costs_app = typer.Typer(
    name="costs",
    help="Campaign costs (营销成本): labour, technology and material per campaign and channel.",
    no_args_is_help=True,
)

AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Count orders, deliveries and CLV up to this day or instant; default: now.",
        show_default=False,
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="First day of the period (default: the cost lines' first).",
        show_default=False,
    ),
]
ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to", help="Last day of the period (default: the cost lines' last).", show_default=False
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(costs_app, name="costs")
    app.command("economics")(economics_cmd)
    app.command("benefit")(benefit_cmd)


def _open(workspace: Path | None):
    from kequn.workspace import open_workspace

    return open_workspace(workspace)


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _ratio(value: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


@costs_app.command("import")
@handle_errors
def costs_import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV or Excel: campaign, channel, period, costs.")],
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Load cost lines; importing the same file again replaces its rows."""
    from kequn.economics import import_costs

    with _open(workspace) as ws:
        report = import_costs(ws, file)
    if json_:
        print_json(report)
        return
    console.print(
        f"imported {report['rows']:,} cost line(s) from {escape(report['file'])}: labour "
        f"{_money(report['labour'])}, technology {_money(report['technology'])}, material "
        f"{_money(report['material'])}, total {_money(report['total'])}"
    )


@costs_app.command("list")
@handle_errors
def costs_list_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """Every stored cost line."""
    from kequn.economics import list_costs

    with _open(workspace) as ws:
        rows = list_costs(ws)
    if json_:
        print_json(rows)
        return
    table = Table(title="campaign costs")
    for col in ("campaign", "channel", "from", "to", "labour", "technology", "material", "file"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r["campaign"] or "—"),
            escape(r["channel"] or "—"),
            str(r["period_start"]),
            str(r["period_end"]),
            _money(r["labour"]),
            _money(r["technology"]),
            _money(r["material"]),
            escape(r["source"] or ""),
        )
    console.print(table)


@handle_errors
def economics_cmd(
    by: Annotated[
        str, typer.Option("--by", help="channel, segment, campaign or variant.")
    ] = "campaign",
    start: FromOpt = None,
    end: ToOpt = None,
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The strategy – effect – cost table: CAC, LTV/CAC, funnel, revenue and ROI."""
    from kequn.economics import economics

    with _open(workspace) as ws:
        report = economics(ws, by, start=start, end=end, as_of=as_of)
    if json_:
        print_json(report.as_dict())
        return
    title = f"economics by {by}, {report.start} – {report.end}"
    table = Table(title=title)
    table.add_column(by)
    table.add_column("strategy")
    if by in ("campaign", "variant"):
        for col in ("funnel", "conv %", "revenue", "cost", "ROI"):
            table.add_column(col, justify="right")
        for r in report.rows:
            funnel = " → ".join(
                f"{r[k]:,}" for k in ("delivered", "opened", "clicked", "converted")
            )
            if r.get("held_out"):
                funnel = f"held out {r['held_out']:,} → {r['converted_holdout']:,}"
            table.add_row(
                escape(r["key"]),
                escape(r["strategy"]),
                funnel,
                _ratio(r["conversion_rate"], "{:.1%}"),
                _money(r["revenue"]),
                _money(r["cost"]),
                _ratio(r["roi"], "{:.1%}"),
            )
    else:
        for col in ("acquired", "revenue", "LTV", "cost", "CAC", "LTV/CAC", "ROI"):
            table.add_column(col, justify="right")
        for r in report.rows:
            table.add_row(
                escape(str(r["key"])),
                escape(r["strategy"]),
                f"{r['acquired']:,}",
                _money(r["revenue"]),
                _money(r["ltv"]),
                _money(r["cost"]),
                _money(r["cac"]),
                _ratio(r["ltv_cac"]),
                _ratio(r["roi"], "{:.1%}"),
            )
    console.print(table)
    if by in ("campaign", "variant"):
        console.print("funnel = sent → opened → clicked → converted")
    console.print(
        f"cost = labour + technology + material, prorated to the period; conversions within "
        f"{report.attribution_days} days of a message; ROI = (revenue − cost) ÷ cost"
    )
    for note in report.notes:
        console.print(f"[yellow]! {escape(note)}[/]")


@handle_errors
def benefit_cmd(
    segmentation: Annotated[str, typer.Argument(help="A segmentation ([segmentations.NAME]).")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="TOML file with [segmentations.NAME] (default: kequn.toml).",
            show_default=False,
        ),
    ] = None,
    score: Annotated[
        list[str] | None,
        typer.Option(
            "--score",
            help="Set a dimension, e.g. --score market_maturity=4 (repeat).",
            show_default=False,
        ),
    ] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The segmentation benefit matrix (分群收益矩阵): four scores and a recommendation."""
    from kequn.economics import benefit
    from kequn.errors import InputError

    scores: dict[str, float] = {}
    for item in score or ():
        key, sep, value = item.partition("=")
        try:
            scores[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--score {item!r}: write DIMENSION=NUMBER, e.g. market_maturity=4")
    with _open(workspace) as ws:
        report = benefit(
            ws, segmentation, file=file, scores=scores, as_of=as_of, start=start, end=end
        )
    if json_:
        print_json(report)
        return
    table = Table(title=f"benefit matrix: {escape(segmentation)} ({', '.join(report['segments'])})")
    for col in ("dimension", "score", "from", "basis"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for d in report["dimensions"].values():
        table.add_row(escape(d["label"]), f"{d['score']:g}", d["source"], escape(d["basis"]))
    console.print(table)
    colour = "red" if report["pause"] else "green"
    console.print(f"overall {report['overall']:.2f} / 5 (threshold {report['threshold']})")
    console.print(f"[{colour}]{escape(report['recommendation'])}[/]", soft_wrap=True)
