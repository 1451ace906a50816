"""``kequn lifecycle``: stages per customer (生命周期), funnel conversion, movement.

Thin: computes :func:`kequn.insight.lifecycle.lifecycle_summary` against the latest stored
run before ``--as-of``, then stores this run in ``lifecycle_stages`` (replacing one at the
same ``as_of``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("lifecycle")(lifecycle_cmd)


def _share(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


def _print(summary, stored: int) -> None:
    from kequn.insight.lifecycle import FUNNEL_LABELS, STATUS_LABELS

    total = summary.customers
    console.print(f"lifecycle at {summary.as_of:%Y-%m-%d %H:%M}: {total:,} customers")
    for title, counts, labels in (
        ("status stages (状态)", summary.status_counts, STATUS_LABELS),
        ("funnel stages (增长漏斗)", summary.funnel_counts, FUNNEL_LABELS),
    ):
        table = Table(title=title)
        table.add_column("stage")
        table.add_column("阶段")
        table.add_column("customers", justify="right")
        table.add_column("share", justify="right")
        for stage, n in counts.items():
            en, zh = labels[stage]
            table.add_row(en, zh, f"{n:,}", _share(n, total))
        console.print(table)
    console.print("funnel conversion (reached = at this stage or further):")
    for c in summary.conversion:
        rate = "-" if c["rate"] is None else f"{c['rate']:.1%}"
        a, b = FUNNEL_LABELS[c["from"]], FUNNEL_LABELS[c["to"]]
        console.print(
            f"  {a[1]} {a[0]} → {b[1]} {b[0]}: {rate} "
            f"({c['reached_to']:,} of {c['reached_from']:,})"
        )
    if summary.previous is None:
        console.print("movement: no earlier stored run to compare with")
    else:
        console.print(f"movement since {summary.previous:%Y-%m-%d %H:%M}:")
        for name, moves in (
            ("status", summary.status_movement),
            ("funnel", summary.funnel_movement),
        ):
            if not moves:
                console.print(f"  {name}: no changes")
            for m in moves:
                a = m["from"] or "(not in previous run)"
                b = m["to"] or "(not in this run)"
                console.print(f"  {name}: {a} → {b}: {m['customers']:,}")
    console.print(f"stored {stored:,} rows in lifecycle_stages")


@handle_errors
def lifecycle_cmd(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Stages at this day or instant; default: now.", show_default=False
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Lifecycle stages (生命周期): counts, funnel conversion, movement; stores the run."""
    from kequn.asof import resolve_as_of
    from kequn.insight.lifecycle import lifecycle_rules, lifecycle_summary, save_lifecycle
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        moment = resolve_as_of(as_of, ws.config.timezone)
        rules = lifecycle_rules(ws)
        summary = lifecycle_summary(ws, moment, rules=rules)
        stored = save_lifecycle(ws, moment, rules)
    if json_:
        print_json({**summary.as_dict(), "stored": stored})
        return
    _print(summary, stored)
