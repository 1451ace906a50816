"""``kequn experiment``: list experiments and report their results (实验报告).

Thin: calls :mod:`kequn.act.experiment_report` and prints one table per group.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

experiment_app = typer.Typer(
    name="experiment",
    help="A/B/n experiments on triggers: assignments, uplift over the holdout, tests.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ci(ci: list[float] | None, pct: bool) -> str:
    if ci is None:
        return "-"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if pct else f"[{ci[0]:,.2f}, {ci[1]:,.2f}]"


def _num(value: float | None, fmt: str = ",.2f") -> str:
    return "-" if value is None else format(value, fmt)


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _arms_table(title: str, arms: list[dict[str, Any]], primary: str) -> Table:
    """The primary metric only (rate or revenue per customer); --json has both."""
    pct = primary == "order"
    metric = "rate" if pct else "revenue"
    table = Table(title=title)
    table.add_column("arm")
    for col in ("n", "conv.", "rate" if pct else "rev./cust.", "95% CI", "uplift", "95% CI"):
        table.add_column(col, justify="right")
    table.add_column("rel.", justify="right")
    table.add_column("p", justify="right")
    for a in arms:
        if pct:
            value, ci = _pct(a["rate"]), _ci(a["rate_ci"], True)
        else:
            value, ci = _num(a["revenue_mean"]), _ci(a["revenue_mean_ci"], False)
        up = (a["uplift"] or {}).get(metric)
        if up is None:
            uplift, uplift_ci, rel, p = "(baseline)", "", "", ""
        else:
            uplift = _pct(up["abs"]) if pct else _num(up["abs"])
            uplift_ci, rel, p = _ci(up["abs_ci"], pct), _pct(up["rel"]), _p(up["p_value"])
        table.add_row(
            escape(a["arm"]),
            f"{a['n']:,}",
            f"{a['conversions']:,}",
            value,
            ci,
            uplift,
            uplift_ci,
            rel,
            p,
        )
    return table


def _print(rep: dict[str, Any]) -> None:
    as_of = rep["as_of"]
    console.print(
        f"experiment {escape(rep['experiment'])!r} at {as_of}: outcome {rep['outcome']!r} "
        f"within {rep['window_days']} days of assignment (from {escape(rep['config'])}); "
        f"baseline {rep['baseline']!r}"
    )
    console.print(
        f"assigned {rep['assigned']:,}; analysed {rep['analysed']:,}; "
        f"pending {rep['pending']:,} (window not over yet)"
    )
    srm = rep["srm"]
    if srm is None:
        console.print("sample ratio: no configured shares to check against")
    else:
        verdict = "[bold red]MISMATCH[/] — check the assignment" if srm["mismatch"] else "ok"
        console.print(f"sample ratio: p = {_p(srm['p_value'])}: {verdict}")
    console.print(_arms_table("all customers", rep["arms"], rep["outcome"]))
    for g in rep["groups"] or []:
        title = f"{rep['by']} = {g['group']} ({g['n']:,})"
        console.print(_arms_table(escape(title), g["arms"], rep["outcome"]))
    if rep["groups"]:
        console.print(f"groups: {rep['grouping']}")
    for warning in rep["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


@experiment_app.command("report")
@handle_errors
def report_cmd(
    name: Annotated[str, typer.Argument(help="The experiment's name.")],
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Sub-segments: a customer field (city), attributes.KEY or segment:A,B.",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Results at this day or instant; default: now.", show_default=False
        ),
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            help="order or revenue, when no trigger configures the experiment (default order).",
            show_default=False,
        ),
    ] = None,
    window_days: Annotated[
        int | None,
        typer.Option(
            "--window-days",
            help="Outcome window after assignment, when no trigger configures it (default 7).",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Conversion and revenue per arm, uplift over the holdout with CIs and p-values."""
    from kequn.act.experiment_report import report
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rep = report(ws, name, as_of, by, outcome=outcome, window_days=window_days)
    if json_:
        print_json(rep)
        return
    _print(rep)


@experiment_app.command("list")
@handle_errors
def list_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """Experiments with assignments or a trigger that configures them."""
    from kequn.act.experiment_report import list_experiments
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rows = list_experiments(ws)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no experiments; add an [trigger.experiment] table to a trigger")
        return
    table = Table(title="experiments")
    for col in ("experiment", "trigger", "customers", "arms", "first", "last"):
        table.add_column(col)
    for r in rows:
        arms = ", ".join(f"{k} {v:,}" for k, v in r["arms"].items()) or "-"
        table.add_row(
            escape(r["experiment"]),
            escape(r["trigger"] or "-"),
            f"{r['customers']:,}",
            escape(arms),
            "-" if r["first_assigned_at"] is None else f"{r['first_assigned_at']:%Y-%m-%d}",
            "-" if r["last_assigned_at"] is None else f"{r['last_assigned_at']:%Y-%m-%d}",
        )
    console.print(table)
