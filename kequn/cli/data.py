"""Data commands: ``import``, ``quarantine``, ``profile``, ``sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

KindArg = Annotated[
    str,
    typer.Argument(
        help="What the files hold: customers, orders, events, or identities "
        "(an explicit map: source, source_id, customer_id)."
    ),
]


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("quarantine")(quarantine)
    app.command("profile")(profile)
    app.command("sample")(sample)


@handle_errors
def import_cmd(
    kind: KindArg,
    files: Annotated[list[str], typer.Argument(help="Files or globs (CSV, Excel, Parquet).")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="Column mapping SOURCE=FIELD; repeat as needed."),
    ] = None,
    source: Annotated[
        str, typer.Option(help="Name of the system the files come from (for identities).")
    ] = "default",
    keep_duplicates: Annotated[
        bool,
        typer.Option(help="Keep identical rows (separate transactions that have no id)."),
    ] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Import customers, orders, events or an identity map; report what was rejected (导入)."""
    from kequn.ingest import KINDS, import_files, parse_map_options
    from kequn.workspace import open_workspace

    if kind not in (*KINDS, "identities"):
        from kequn.errors import InputError

        raise InputError(f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}, identities")
    ws = open_workspace(workspace)
    if kind == "identities":
        from kequn.ingest.idmap import import_id_map

        id_report = import_id_map(ws, files, source=None if source == "default" else source)
        if json_:
            print_json(id_report.as_dict())
            return
        console.print(
            f"identity map: {id_report.rows_read:,} rows, {id_report.added:,} pairs added, "
            f"{id_report.already_known:,} already known, "
            f"{id_report.customers_new:,} new customers"
        )
        for reason, n in id_report.quarantined.items():
            console.print(f"  quarantined ({reason}): {n:,}")
        return
    mapping = parse_map_options(map_)
    with _progress(enabled=not json_) as tick:
        report = import_files(
            ws,
            kind,
            files,
            source=source,
            column_map=mapping,
            keep_duplicates=keep_duplicates,
            progress=tick,
        )
    if json_:
        print_json(report.as_dict())
        return
    _print_report(report)


def _print_report(report) -> None:
    for f in report.files:
        enc = f" ({f.encoding})" if f.encoding else ""
        if f.skipped:
            console.print(f"[yellow]skipped[/] {f.path}: {f.skipped}")
            continue
        console.print(f"[bold]{f.path}[/] {f.format}{enc}: {f.rows:,} rows")
        mapped = ", ".join(f"{h} → {fld}" for fld, h in f.mapping.items())
        console.print(f"  columns: {mapped}")
        if f.unused_columns:
            kept = "kept in attributes" if report.kind != "orders" else "not used"
            console.print(f"  other columns ({kept}): {', '.join(f.unused_columns)}")
    table = Table(title=f"import {report.kind} · {report.import_id}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    label = {"orders": "orders imported", "events": "events imported"}.get(
        report.kind, "customers imported"
    )
    table.add_row("rows read", f"{report.rows_read:,}")
    table.add_row("exact duplicates removed", f"{report.duplicates:,}")
    table.add_row("quarantined", f"{report.quarantined_total:,}")
    for reason, n in report.quarantined.items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row(label, f"{report.imported:,}")
    if report.kind == "orders":
        table.add_row("  of which returns / cancellations", f"{report.returns:,}")
    if report.already_present:
        table.add_row("already in the workspace (skipped)", f"{report.already_present:,}")
    table.add_row("new customers", f"{report.customers_new:,}")
    for how, n in report.customers_merged_by.items():
        table.add_row(f"matched existing customers by {how}", f"{n:,}")
    table.add_row("seconds", f"{report.seconds:.2f}")
    console.print(table)
    for column, info in getattr(report, "personal_fields", {}).items():
        console.print(
            f"[yellow]personal data?[/] column {escape(column)!r} classed "
            f"[bold]{info['class']}[/] ({escape(info['reason'])}); change it under "
            "[privacy.fields] in kequn.toml"
        )
    if report.quarantined_total:
        console.print("see the rejected rows with: kequn quarantine")


class _progress:
    """A Rich progress bar over the bytes read, shown only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("reading", total=None)

        def tick(done: int, total: int) -> None:
            if done >= total:  # read; cleaning, merging and writing follow
                self.bar.update(task, description="cleaning and writing", total=None)
            else:
                self.bar.update(task, completed=done, total=total)

        return tick

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@handle_errors
def quarantine(
    import_id: Annotated[
        str | None, typer.Option("--import", help="Only rows of this import id.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows to show (0 = all).")] = 50,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the rows imports rejected, with file, row number, reason and raw values (隔离区)."""
    import ibis

    from kequn.workspace import open_workspace

    ws = open_workspace(workspace)
    q = ws.table("quarantine")
    if import_id:
        q = q.filter(q.import_id == import_id)
    summary = q.group_by(["kind", "reason"]).aggregate(rows=ibis._.count()).order_by("kind")
    rows = q.order_by([ibis.desc("created_at"), "source", "row_number"])
    if limit:
        rows = rows.limit(limit)
    frame = rows.select("import_id", "kind", "source", "row_number", "reason", "raw").execute()
    if json_:
        print_json(
            {
                "summary": summary.execute().to_dict("records"),
                "rows": frame.to_dict("records"),
            }
        )
        return
    if frame.empty:
        console.print("the quarantine is empty: every imported row was used")
        return
    by_reason = Table(title="quarantined rows by reason")
    for name in ("kind", "reason", "rows"):
        by_reason.add_column(name)
    for rec in summary.execute().itertuples(index=False):
        by_reason.add_row(rec.kind, rec.reason, f"{rec.rows:,}")
    console.print(by_reason)
    detail = Table(title=f"rows (newest first{', first ' + str(limit) if limit else ''})")
    for name in ("import", "file", "row", "reason"):
        detail.add_column(name, no_wrap=True)
    detail.add_column("raw values", overflow="fold", ratio=1)
    for rec in frame.itertuples(index=False):
        detail.add_row(
            rec.import_id, Path(rec.source).name, str(rec.row_number), rec.reason, _raw(rec.raw)
        )
    console.print(detail)


def _raw(text: str | None) -> str:
    """Raw values as ``column=value`` pairs: shorter than JSON in a terminal."""
    import json

    try:
        values = json.loads(text or "{}")
    except ValueError:
        return text or ""
    return ", ".join(f"{k}={'' if v is None else v}" for k, v in values.items())


@handle_errors
def profile(
    customer: Annotated[
        str, typer.Argument(help="Customer id, or a source id, e-mail or phone number.")
    ],
    recent: Annotated[int, typer.Option(help="Recent orders and events to show.")] = 10,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Also list the values merges and updates replaced, with source and reason.",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show one customer's unified profile (客户画像)."""
    from kequn.profiles import profile as build
    from kequn.workspace import open_workspace

    data = build(open_workspace(workspace), customer, recent=recent)
    if json_:
        print_json(data)
        return
    print_profile(data)
    if history:
        print_history(data.get("history", []))
    elif data.get("history"):
        console.print(f"[dim]{len(data['history'])} earlier values: --history lists them[/]")


def print_history(entries: list[dict]) -> None:
    """The values the profile no longer shows, newest first (history, 历史值)."""
    if not entries:
        console.print("[dim]history[/] no replaced values")
        return
    t = Table(title="history (历史值)", show_edge=False)
    for name in ("field", "value", "source", "import", "observed", "replaced", "reason"):
        t.add_column(name)
    for e in entries:
        record = f"{e['source']}:{e['source_id']}" if e.get("source") else "-"
        t.add_row(
            e["field"],
            str(e["value"][e["field"]]),
            record,
            e.get("import_id") or "-",
            str(e["observed_at"] or "-")[:19],
            str(e["superseded_at"] or "-")[:19],
            e["reason"] or "",
        )
    console.print(t)


def print_profile(data: dict) -> None:
    console.rule(f"[bold]customer {data['customer_id']}")
    attrs = {k: v for k, v in data["attributes"].items() if v not in (None, "")}
    console.print("  ".join(f"[dim]{k}[/] {v}" for k, v in attrs.items()) or "(no attributes)")
    ids = ", ".join(
        f"{i['source']}:{i['source_id']} ({i['matched_on']})" for i in data["identities"]
    )
    console.print(f"[dim]identities[/] {ids or '-'}")
    o = data["orders"]
    revenue = o.get("revenue") or 0.0
    console.print(
        f"[dim]orders[/] {o['orders']}  [dim]revenue[/] {revenue:,.2f}  "
        f"[dim]returns[/] {o['returns'] or 0}  [dim]first[/] {o.get('first_order_at') or '-'}  "
        f"[dim]last[/] {o.get('last_order_at') or '-'}"
    )
    if data["recent_orders"]:
        t = Table(show_edge=False)
        for name in ("order", "at", "amount", "status"):
            t.add_column(name)
        for r in data["recent_orders"]:
            t.add_row(r["order_id"], str(r["ordered_at"]), f"{r['amount']:,.2f}", r["status"])
        console.print(t)
    if data["events"]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(data["events"].items()))
        console.print(f"[dim]events[/] {counts}")
    scores = data.get("scores", {})
    if "rfm" in scores:
        r = scores["rfm"]
        console.print(
            f"[dim]RFM[/] {r['r_score']}/{r['f_score']}/{r['m_score']} {r['rfm_segment']} "
            f"({r['scheme']}, as of {str(r['as_of'])[:10]})"
        )
    if "clv" in scores:
        c = scores["clv"]
        console.print(
            f"[dim]CLV[/] {c['clv']:,.2f} over {c['horizon_days']} days, "
            f"P(alive) {c['p_alive']:.2f} ({c['model']}, as of {str(c['as_of'])[:10]})"
        )
    if "churn" in scores:
        ch = scores["churn"]
        console.print(f"[dim]churn risk[/] {ch['churn_risk']:.2f} (as of {str(ch['as_of'])[:10]})")
    if data.get("segments"):
        segs = ", ".join(
            f"{s['segment']} (since {str(s['entered_at'])[:10]})" for s in data["segments"]
        )
        console.print(f"[dim]segments[/] {segs}")


@handle_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    cdnow: Annotated[
        bool, typer.Option(help="Also write the real CDNow transactions as orders.")
    ] = True,
) -> None:
    """Write realistic synthetic sample data (and the real CDNow sample) to a folder (样例数据)."""
    from kequn.sample import write_cdnow_orders, write_sample

    paths = write_sample(out, customers=customers, seed=seed)
    if cdnow:
        paths = [*_as_list(paths), write_cdnow_orders(out)]
    for path in _as_list(paths):
        console.print(f"wrote {path}")


def _as_list(paths) -> list:
    if isinstance(paths, dict):
        return list(paths.values())
    return list(paths)
