"""Privacy commands: ``forget``, ``export-person``, ``consent``, ``privacy``, ``compact``.

Thin: calls :mod:`kequn.privacy`. The CLI acts as the local admin (``cli:USER``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

consent_app = typer.Typer(
    name="consent",
    help="Consent (同意) per customer and channel: import, set, show.",
    no_args_is_help=True,
)
privacy_app = typer.Typer(
    name="privacy",
    help="Field classes (public, personal, sensitive) and erasures.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("forget")(forget_cmd)
    app.command("export-person")(export_person_cmd)
    app.command("compact")(compact_cmd)
    app.add_typer(consent_app, name="consent")
    app.add_typer(privacy_app, name="privacy")


@handle_errors
def forget_cmd(
    customer: Annotated[
        str, typer.Argument(help="Customer id (or a source id, e-mail or phone of theirs).")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Erase a person (right to be forgotten, 被遗忘权); keeps only anonymous totals."""
    from kequn.privacy.forget import forget
    from kequn.profiles import find_customer
    from kequn.workspace import open_workspace

    ws = open_workspace(workspace)
    try:
        customer_id = find_customer(ws, customer)
        if not yes and not typer.confirm(
            f"Erase customer {customer_id} and everything about them? This cannot be undone"
        ):
            raise typer.Exit(1)
        done = forget(ws, customer_id)
    finally:
        ws.close()
    if json_:
        print_json(done.as_dict())
        return
    console.print(
        f"erased customer {escape(customer_id)} (erasure {done.erasure_id}): "
        + ", ".join(f"{t} {n:,}" for t, n in sorted(done.tables.items()))
    )
    for path, n in done.files.items():
        console.print(f"  {escape(path)}: {n} line(s) removed")
    for path in done.not_scrubbed:
        console.print(f"  [yellow]not a text file, check it by hand:[/] {escape(path)}")
    console.print(
        "database file rewritten: no bytes of the erased rows remain"
        if done.compacted
        else "[yellow]database not compacted[/] (busy); run `kequn compact` later"
    )


@handle_errors
def export_person_cmd(
    customer: Annotated[
        str, typer.Argument(help="Customer id (or a source id, e-mail or phone of theirs).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write.", show_default=False)],
    workspace: WorkspaceOpt = None,
) -> None:
    """Everything stored about a person as one JSON file (access request); audited."""
    from kequn.privacy.person import export_person
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        data = export_person(ws, customer, out)
    rows = sum(len(v) for v in data["tables"].values())
    console.print(
        f"wrote {rows:,} rows about {escape(data['customer_id'])} from "
        f"{len(data['tables'])} tables to {escape(str(out))}"
    )


@handle_errors
def compact_cmd(workspace: WorkspaceOpt = None) -> None:
    """Rewrite the database file so deleted rows leave no bytes behind (server stopped)."""
    from kequn.privacy.forget import compact
    from kequn.workspace import open_workspace

    ws = open_workspace(workspace)
    try:
        done = compact(ws)
    finally:
        ws.close()
    console.print("database file rewritten" if done else "nothing to compact (not a DuckDB file)")


@consent_app.command("import")
@handle_errors
def consent_import_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="CSV, Excel or Parquet: customer_id, channel, status, at, source."),
    ],
    source: Annotated[
        str | None,
        typer.Option("--source", help="Source for rows without one (default: the file name)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Import opt-ins and opt-outs; rows naming no customer are rejected with the reason."""
    from kequn.privacy.consent import import_consents
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        report = import_consents(ws, file, source=source)
    if json_:
        print_json(report.as_dict())
        return
    console.print(
        f"{escape(str(file))}: {report.rows_read:,} rows, {report.written:,} consents recorded, "
        f"{len(report.rejected):,} rejected"
    )
    for r in report.rejected[:20]:
        console.print(f"  row {r['row']}: {escape(r['reason'])}")


@consent_app.command("set")
@handle_errors
def consent_set_cmd(
    customer: Annotated[str, typer.Argument(help="Customer id, source id, e-mail or phone.")],
    channel: Annotated[str, typer.Argument(help="email, sms, im or phone.")],
    status: Annotated[str, typer.Argument(help="opt_in or opt_out.")],
    source: Annotated[str, typer.Option("--source", help="Where the consent came from.")] = "cli",
    at: Annotated[
        str | None,
        typer.Option("--at", help="When it was given (default: now).", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Record one opt-in or opt-out."""
    from kequn.privacy.consent import record_consents
    from kequn.profiles import find_customer
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        cid = find_customer(ws, customer)
        record_consents(
            ws,
            [
                {
                    "customer_id": cid,
                    "channel": channel,
                    "status": status,
                    "at": at,
                    "source": source,
                }
            ],
        )
    console.print(f"recorded {escape(status)} for {escape(channel)} of {escape(cid)}")


@consent_app.command("show")
@handle_errors
def consent_show_cmd(
    customer: Annotated[str, typer.Argument(help="Customer id, source id, e-mail or phone.")],
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A customer's latest consent per channel."""
    from kequn.privacy.consent import consents_of
    from kequn.profiles import find_customer
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        cid = find_customer(ws, customer)
        rows = consents_of(ws, cid)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print(f"no consent recorded for {escape(cid)}")
        return
    table = Table(title=f"consent · {cid}")
    for col in ("channel", "status", "at", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["channel"], r["status"], f"{r['at']:%Y-%m-%d %H:%M}", escape(r["source"] or "")
        )
    console.print(table)


@privacy_app.command("fields")
@handle_errors
def fields_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """The class of every customer field and attribute key the workspace knows."""
    from kequn.privacy.classes import workspace_fields
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rows = workspace_fields(ws)
    if json_:
        print_json(rows)
        return
    table = Table(title="field classes")
    for col in ("field", "class", "from"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r["field"]), r["class"], escape(r["from"]))
    console.print(table)


@privacy_app.command("erasures")
@handle_errors
def erasures_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """Erasures done: when, by whom, rows per table (never whose data)."""
    import json

    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        rows = ws.table("erasures").order_by("erased_at").to_pyarrow().to_pylist()
    for r in rows:
        r["tables"] = json.loads(r["tables"] or "{}")
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no erasures")
        return
    table = Table(title="erasures")
    for col in ("erasure", "at", "actor", "rows"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["erasure_id"],
            f"{r['erased_at']:%Y-%m-%d %H:%M:%S}",
            escape(r["actor"]),
            escape(", ".join(f"{t} {n}" for t, n in sorted(r["tables"].items()))),
        )
    console.print(table)
