"""``kequn segment``: count, apply, list, show, export, overlap, history, migration, why, diff.

Thin: every command calls :mod:`kequn.segments` and prints. Rule errors print the message
with its caret line (escaped, so brackets in a rule are not read as Rich markup) and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Evaluate at this day (YYYY-MM-DD, the whole day counts) or instant "
        "(YYYY-MM-DDTHH:MM); default: now.",
        show_default=False,
    ),
]

segment_app = typer.Typer(
    name="segment",
    help="Segments (客群): rules over customers, orders and events, with history.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment")


def _open(workspace: Path | None):
    from kequn.workspace import open_workspace

    return open_workspace(workspace)


@segment_app.command("count")
@handle_errors
def count_cmd(
    rule: Annotated[str, typer.Argument(help="A rule, e.g. \"city = '北京'\", or a segment name.")],
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Count the customers a rule selects (计数)."""
    from kequn.segments import count

    with _open(workspace) as ws:
        n = count(ws, rule, as_of)
    if json_:
        print_json({"rule": rule, "as_of": as_of, "count": n})
        return
    console.print(f"{n:,}")


@segment_app.command("apply")
@handle_errors
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="Segment file (.toml, or .yaml with PyYAML).")],
    as_of: AsOfOpt = None,
    no_triggers: Annotated[
        bool,
        typer.Option("--no-triggers", help="Record entries and exits without sending anything."),
    ] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Store the file's segments, evaluate them and record who entered and left (应用)."""
    from kequn.act import enqueue_changes
    from kequn.segments import apply

    with _open(workspace) as ws:
        report = apply(ws, file, as_of, notify=None if no_triggers else enqueue_changes)
    if json_:
        print_json(report.as_dict())
        return
    table = Table(title=f"segments at {report.as_of:%Y-%m-%d %H:%M}")
    for name in ("segment", "size", "entered", "exited"):
        table.add_column(name, justify="left" if name == "segment" else "right")
    for r in report.runs:
        table.add_row(escape(r.segment), f"{r.size:,}", f"+{r.entered:,}", f"-{r.exited:,}")
    console.print(table)


_FRESHNESS = {
    "missed": "[bold red]MISSED[/]",
    "due": "[yellow]due[/]",
    "never": "[yellow]never run[/]",
    "fresh": "[green]fresh[/]",
    "unscheduled": "",
}


def _when(moment) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


@segment_app.command("list")
@handle_errors
def list_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List stored segments: size, change, when evaluated against which data, schedule (列表)."""
    from kequn.segments import list_segments

    with _open(workspace) as ws:
        rows = list_segments(ws)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no segments yet; define some in a file and run `kequn segment apply FILE`")
        return
    scheduled = any(r["schedule"] for r in rows)
    table = Table()
    columns = ("segment", "label", "size", "change", "as of\ndata to")
    for name in (*columns, *(("schedule",) if scheduled else ()), "owner", "tags"):
        table.add_column(name, justify="right" if name in ("size", "change") else "left")
    for r in rows:
        label = " / ".join(x for x in (r["label_zh"], r["label_en"]) if x)
        size = "-" if r["size"] is None else f"{r['size']:,}"
        change = "" if r["change"] is None else f"{r['change']:+,}"
        when = _when(r["as_of"]) + (
            "" if r["data_as_of"] is None else f"\n{_when(r['data_as_of'])}"
        )
        plan = [escape(r["schedule"] or ""), _FRESHNESS[r["freshness"]]]
        table.add_row(
            escape(r["name"]),
            escape(label),
            size,
            change,
            when,
            *(("\n".join(p for p in plan if p),) if scheduled else ()),
            escape(r["owner"] or ""),
            escape(", ".join(r["tags"])),
        )
    console.print(table)
    missed = [r["name"] for r in rows if r["missed"]]
    if missed:
        console.print(
            f"[bold red]{len(missed)} segment(s) missed a scheduled refresh:[/] "
            f"{escape(', '.join(missed))}; `kequn schedule` shows when each was due"
        )


@segment_app.command("show")
@handle_errors
def show_cmd(
    name: Annotated[str, typer.Argument(help="Segment name.")],
    sample: Annotated[int, typer.Option(help="Sample members to show.")] = 10,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a segment: rule, size, change, sample members and breakdowns (详情)."""
    from kequn.segments import show

    with _open(workspace) as ws:
        data = show(ws, name, sample=sample)
    if json_:
        print_json(data)
        return
    label = " / ".join(x for x in (data["label_zh"], data["label_en"]) if x)
    console.rule(f"[bold]{escape(data['name'])}[/] {escape(label)}")
    if data["description"]:
        console.print(escape(data["description"]))
    console.print(f"[dim]rule[/] {escape(data['rule'])}")
    meta = f"[dim]owner[/] {escape(data['owner'] or '-')}  [dim]tags[/] "
    console.print(meta + escape(", ".join(data["tags"]) or "-"))
    if data["size"] is None:
        console.print("not evaluated yet")
        return
    change = "" if data["change"] is None else f" ({data['change']:+,} since the run before)"
    share = f"{data['share']:.1%}" if data["share"] is not None else "-"
    console.print(
        f"[dim]size[/] {data['size']:,}{change}  [dim]share[/] {share} of "
        f"{data['customers']:,}  [dim]as of[/] {data['as_of']:%Y-%m-%d %H:%M}"
    )
    for col, items in data["breakdown"].items():
        parts = ", ".join(f"{escape(str(i['value']))} {i['customers']:,}" for i in items)
        console.print(f"[dim]{col}[/] {parts or '-'}")
    if data["sample"]:
        table = Table(title="sample members", show_edge=False)
        for key in data["sample"][0]:
            table.add_column(key)
        for row in data["sample"]:
            table.add_row(*(escape("" if v is None else str(v)) for v in row.values()))
        console.print(table)


@segment_app.command("export")
@handle_errors
def export_cmd(
    name: Annotated[str, typer.Argument(help="Segment name.")],
    out: Annotated[
        Path, typer.Option("--out", help="File to write: .csv .xlsx .parquet .json .jsonl")
    ],
    columns: Annotated[
        str | None,
        typer.Option(help="Customer columns, comma-separated (default: id, name, city, …)."),
    ] = None,
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write a segment's members to a file, streamed; with --as-of, evaluate afresh (导出).

    The rows are counted first and shown, then written with a progress bar (on a terminal).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from kequn.segments import export_segment

    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=json_ or not console.is_terminal,
    )
    task = bar.add_task("exporting", total=None)

    def counted(rows: int) -> None:
        if not json_:
            console.print(f"exporting {rows:,} customers to {escape(str(out))}")
        bar.update(task, total=rows)
        bar.start()

    try:
        with _open(workspace) as ws:
            n = export_segment(
                ws,
                name,
                out,
                columns=cols,
                as_of=as_of,
                on_count=counted,
                progress=lambda done: bar.advance(task, done),
            )
    finally:
        bar.stop()
    if json_:
        print_json({"segment": name, "out": str(out), "rows": n})
        return
    console.print(f"wrote {n:,} customers to {escape(str(out))}")


@segment_app.command("overlap")
@handle_errors
def overlap_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Segments (default: all).")] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Pairwise overlap of current members, with the Jaccard index (重叠)."""
    from kequn.segments import overlap

    with _open(workspace) as ws:
        pairs = overlap(ws, names or None)
    if json_:
        print_json(pairs)
        return
    if not pairs:
        console.print("need at least two segments to compare")
        return
    table = Table()
    for name in ("a", "b", "size a", "size b", "both", "jaccard"):
        table.add_column(name, justify="left" if name in ("a", "b") else "right")
    for p in pairs:
        table.add_row(
            escape(p["a"]),
            escape(p["b"]),
            f"{p['size_a']:,}",
            f"{p['size_b']:,}",
            f"{p['both']:,}",
            f"{p['jaccard']:.3f}",
        )
    console.print(table)


@segment_app.command("history")
@handle_errors
def history_cmd(
    name: Annotated[str, typer.Argument(help="Segment name.")],
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Size, entries and exits at each evaluation of a segment (历史)."""
    from kequn.segments import history

    with _open(workspace) as ws:
        rows = history(ws, name)
    if json_:
        print_json(rows)
        return
    table = Table(title=f"history of {escape(name)}")
    for col in ("as of", "size", "entered", "exited"):
        table.add_column(col, justify="left" if col == "as of" else "right")
    for r in rows:
        table.add_row(
            f"{r['as_of']:%Y-%m-%d %H:%M}",
            f"{r['size']:,}",
            f"+{r['entered']:,}",
            f"-{r['exited']:,}",
        )
    console.print(table)


@segment_app.command("migration")
@handle_errors
def migration_cmd(
    from_: Annotated[
        str,
        typer.Option("--from", help="The earlier evaluation (YYYY-MM-DD or YYYY-MM-DDTHH:MM)."),
    ],
    to: Annotated[str, typer.Option("--to", help="The later evaluation.")],
    segments: Annotated[
        str | None,
        typer.Option(help="Segments to compare, comma-separated (default: all stored)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Transition matrix: customers moving between segments from one run to another (迁移)."""
    from kequn.segments import migration

    names = [n.strip() for n in segments.split(",") if n.strip()] if segments else None
    with _open(workspace) as ws:
        data = migration(ws, from_, to, names)
    if json_:
        print_json(data)
        return
    none = "(none)"
    cells = {(m["from"], m["to"]): m["customers"] for m in data["moves"]}
    table = Table(title=f"{data['from']:%Y-%m-%d %H:%M} → {data['to']:%Y-%m-%d %H:%M}")
    table.add_column("from \\ to")
    keys = [*data["segments"], None]
    for key in keys:
        table.add_column(escape(none if key is None else key), justify="right")
    table.add_column("size", justify="right")
    for a in keys:
        row = [f"{cells[(a, b)]:,}" if (a, b) in cells else "" for b in keys]
        size = "" if a is None else f"{data['sizes'][a]['from']:,}"
        table.add_row(escape(none if a is None else a), *row, size)
    sizes = [f"{data['sizes'][b]['to']:,}" for b in data["segments"]]
    table.add_row("size", *sizes, "", "", style="dim")
    console.print(table)
    console.print(
        "[dim]each cell counts customers in the row's segment at --from and the column's at "
        "--to; (none): in none of these segments[/]"
    )


@segment_app.command("why")
@handle_errors
def why_cmd(
    name: Annotated[str, typer.Argument(help="Segment name (or a rule in quotes).")],
    customer: Annotated[str, typer.Argument(help="Customer id (or a source id, e-mail or phone).")],
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Why a customer is in a segment or not: each condition with its actual value (原因)."""
    from kequn.segments.trace import why

    with _open(workspace) as ws:
        trace = why(ws, name, customer, as_of)
    if json_:
        print_json(trace.as_dict())
        return
    verdict = "[green]member[/]" if trace.member else "[red]not a member[/]"
    title = escape(trace.segment or trace.rule)
    console.print(
        f"customer [bold]{escape(trace.customer_id)}[/]: {verdict} of {title} "
        f"at {trace.as_of:%Y-%m-%d %H:%M}"
    )
    for line in trace.root.lines():
        console.print(escape(line), soft_wrap=True)
    rec = trace.recorded
    if rec is None:
        return
    if rec["member"] is None:
        console.print("[dim]history: the segment had not been evaluated by then[/]")
        return
    if rec["interval"] is not None:
        span = rec["interval"]
        until = "now" if span["exited_at"] is None else _when(span["exited_at"])
        said = f"member from {_when(span['entered_at'])} until {until}"
    else:
        said = "not a member"
    console.print(f"[dim]history (run of {_when(rec['run'])}):[/] {said}")
    if rec["member"] != trace.member:
        console.print(
            "[yellow]the history differs from the rule on today's data: the rule or the data "
            "changed after that run[/]"
        )


@segment_app.command("diff")
@handle_errors
def diff_cmd(
    file: Annotated[Path, typer.Argument(help="Segment file (.toml, or .yaml with PyYAML).")],
    as_of: AsOfOpt = None,
    show: Annotated[
        int, typer.Option("--show", help="Customer ids to list per entering/leaving group.")
    ] = 10,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Dry run of `apply FILE`: who would enter and leave, which triggers would fire (预览)."""
    from kequn.segments.diff import diff_segments

    with _open(workspace) as ws:
        data = diff_segments(ws, file, as_of, show=show)
    if json_:
        print_json(data)
        return
    table = Table(title=f"if applied at {data['as_of']:%Y-%m-%d %H:%M} (nothing was written)")
    for col in ("segment", "status", "before", "after", "enter", "leave"):
        table.add_column(col, justify="left" if col in ("segment", "status") else "right")
    for r in data["segments"]:
        status = r["status"] + (f" ({', '.join(r['changes'])})" if r["changes"] else "")
        table.add_row(
            escape(r["segment"]),
            escape(status),
            f"{r['before']:,}",
            f"{r['after']:,}",
            f"+{r['enter']:,}",
            f"-{r['leave']:,}",
        )
    console.print(table)
    for r in data["segments"]:
        for key, sign in (("entering", "+"), ("leaving", "-")):
            ids = r[key]
            total = r["enter" if key == "entering" else "leave"]
            if ids:
                more = f" … and {total - len(ids):,} more" if total > len(ids) else ""
                console.print(f"{sign} {escape(r['segment'])}: {escape(', '.join(ids))}{more}")
    if data["absent"]:
        console.print(
            f"[dim]stored but not in the file (apply leaves them as they are): "
            f"{escape(', '.join(data['absent']))}[/]"
        )
    if data["triggers"]:
        table = Table(title="triggers")
        for col in ("trigger", "segment", "on", "channel", "transitions", "holdout", "messages"):
            table.add_column(
                col, justify="right" if col in ("transitions", "holdout", "messages") else "left"
            )
        for t in data["triggers"]:
            messages = f"{t['messages']:,}" + (" (at most: cap)" if t["cap"] else "")
            if t["baseline"]:
                messages = "0 (first evaluation is the baseline)"
            table.add_row(
                escape(t["trigger"]),
                escape(t["segment"]),
                t["on"],
                t["channel"],
                f"{t['transitions']:,}",
                f"{t['holdout']:,}",
                messages,
            )
        console.print(table)
