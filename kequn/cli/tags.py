"""``kequn tag``: the tag catalogue, refreshes, imports, health, interests and scores.

Thin: every command calls :mod:`kequn.tags` and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

tag_app = typer.Typer(
    name="tag",
    help="Tags (标签): base, behaviour and predicted tags per customer, with health.",
    no_args_is_help=True,
)

AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Compute at this day (YYYY-MM-DD) or instant (YYYY-MM-DDTHH:MM); default: now.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(tag_app, name="tag")


def _open(workspace: Path | None):
    from kequn.workspace import open_workspace

    return open_workspace(workspace)


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


@tag_app.command("apply")
@handle_errors
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="A tag file (TOML with [[tags]] tables).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Store the tags defined in FILE (a tag of the same name is replaced)."""
    from kequn.tags import apply_tags, load_tags

    tags = load_tags(file)
    with _open(workspace) as ws:
        apply_tags(ws, tags)
    console.print(f"stored {len(tags)} tag(s): {escape(', '.join(t.name for t in tags))}")
    console.print("compute their values with `kequn tag refresh`")


@tag_app.command("list")
@handle_errors
def list_cmd(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """The catalogue: every tag with its type, layer, source, schedule and last refresh."""
    from kequn.tags import list_tags

    with _open(workspace) as ws:
        rows = list_tags(ws)
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no tags yet; define some with `kequn tag apply FILE`")
        return
    table = Table(title="tags (标签)")
    for col in ("tag", "label", "type", "layer", "source", "schedule", "last refresh", "valued"):
        table.add_column(col, justify="right" if col == "valued" else "left")
    for r in rows:
        label = r["label_zh"] or r["label_en"]
        last = "never" if r["last_refresh"] is None else f"{r['last_refresh']:%Y-%m-%d %H:%M}"
        valued = "—" if r["valued"] is None else f"{r['valued']:,}"
        table.add_row(
            escape(r["name"]),
            escape(label),
            r["type"],
            r["layer"],
            r["source"],
            r["schedule"] or "—",
            last,
            valued,
        )
    console.print(table)


@tag_app.command("show")
@handle_errors
def show_cmd(
    name: Annotated[str, typer.Argument(help="A tag name.")],
    as_of: AsOfOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Values to show.")] = 10,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One tag: its definition, health and a sample of its values."""
    from kequn.tags import stored_tags, tag_health, tag_values

    with _open(workspace) as ws:
        (tag,) = stored_tags(ws, [name])
        health = tag_health(ws, [name], as_of=as_of)[0]
        values = tag_values(ws, name, as_of, limit=limit)
    data = {**tag.as_dict(), "health": health, "values": values}
    if json_:
        print_json(data)
        return
    console.print(f"[bold]{escape(tag.name)}[/]  {escape(tag.label_zh)} {escape(tag.label_en)}")
    console.print(
        f"type {tag.type} · layer {tag.layer} · source {tag.source} · schedule "
        f"{tag.schedule or 'by hand'} · owner {escape(tag.owner or '—')}"
    )
    if tag.description:
        console.print(escape(tag.description))
    for key, value in tag.definition.items():
        console.print(f"  {key}: {escape(str(value))}", soft_wrap=True)
    _print_health([health])
    table = Table(title=f"values (first {limit})")
    for col in ("customer_id", "value", "number"):
        table.add_column(col)
    for v in values:
        table.add_row(escape(v["customer_id"]), escape(v["value"] or "—"), _num(v["number"]))
    console.print(table)


@tag_app.command("refresh")
@handle_errors
def refresh_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Tags to refresh (default: every tag that is not imported).", show_default=False
        ),
    ] = None,
    as_of: AsOfOpt = None,
    due: Annotated[
        bool, typer.Option("--due", help="Only the scheduled tags whose refresh is due.")
    ] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recompute tag values; a row is stored for each customer whose value changed."""
    from kequn.tags import due_tag_refreshes, refresh_tags

    with _open(workspace) as ws:
        if due:
            names = due_tag_refreshes(ws)
            if not names:
                console.print("no tag refresh is due")
                return
        runs = refresh_tags(ws, names or None, as_of=as_of)
    if json_:
        print_json(runs)
        return
    table = Table(title="tag refresh")
    for col in ("tag", "with a value", "compared", "changed", "rows written"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for name, run in runs.items():
        figures = [f"{run[k]:,}" for k in ("valued", "compared", "changed", "written")]
        table.add_row(escape(name), *figures)
    console.print(table)
    console.print(
        "changed: customers whose value changed (for scores the level, for interests the "
        "categories); rows written: every stored change"
    )


@tag_app.command("import")
@handle_errors
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV or Excel with customer_id, tag, value.")],
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Load values of import tags; each tag in the file gets a new snapshot."""
    from kequn.tags import import_tag_values

    with _open(workspace) as ws:
        report = import_tag_values(ws, file, as_of=as_of)
    if json_:
        print_json(report)
        return
    console.print(f"read {report['rows']:,} row(s) from {escape(report['file'])}")
    for name, run in report["tags"].items():
        console.print(
            f"  {escape(name)}: {run['valued']:,} with a value, {run['changed']:,} changed"
        )
    if report["unknown_customers"]:
        console.print(f"[yellow]skipped {report['unknown_customers']:,} unknown customer id(s)[/]")


@tag_app.command("from-segment")
@handle_errors
def from_segment_cmd(
    segment: Annotated[str, typer.Argument(help="A stored segment.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Tag name (default: the segment's).", show_default=False),
    ] = None,
    layer: Annotated[str, typer.Option("--layer", help="base, behaviour or predicted.")] = "base",
    schedule: Annotated[
        str, typer.Option("--schedule", help="Refresh period, e.g. 1d or 12h (default: by hand).")
    ] = "",
    workspace: WorkspaceOpt = None,
) -> None:
    """Save a segment as a flag tag (true for its members at each refresh)."""
    from kequn.tags import tag_from_segment

    with _open(workspace) as ws:
        tag = tag_from_segment(ws, segment, name=name, layer=layer, schedule=schedule)
    console.print(f"stored tag {escape(tag.name)!r} (flag, from segment {escape(segment)!r})")


def _print_health(rows: list[dict]) -> None:
    table = Table(title="tag health")
    for col in ("tag", "coverage", "refreshed", "every", "age÷every", "status", "stable"):
        table.add_column(
            col,
            justify="left" if col in ("tag", "status", "every") else "right",
            no_wrap=col in ("tag", "status"),
        )
    for h in rows:
        last = "never" if h["last_refresh"] is None else f"{h['last_refresh']:%m-%d %H:%M}"
        table.add_row(
            escape(h["tag"]),
            _num(h["coverage"], "{:.1%}"),
            last,
            h["schedule"] or "—",
            _num(h["freshness"], "{:.2f}×"),
            h["status"],
            _num(h["stability"], "{:.1%}"),
        )
    console.print(table)


@tag_app.command("health")
@handle_errors
def health_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Tags (default: all).", show_default=False)
    ] = None,
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Coverage, freshness (age of the last refresh ÷ schedule) and stability per tag."""
    from kequn.tags import tag_health

    with _open(workspace) as ws:
        rows = tag_health(ws, names or None, as_of=as_of)
    if json_:
        print_json(rows)
        return
    _print_health(rows)
    console.print(
        "coverage = customers with a value; age÷every = freshness, the last refresh's age ÷ "
        "the schedule (≤ 1 fresh); stable = values unchanged at the last refresh"
    )


@tag_app.command("interests")
@handle_errors
def interests_cmd(
    name: Annotated[str, typer.Argument(help="An interest tag (source = 'interest').")],
    customer: Annotated[
        str | None, typer.Option("--customer", help="One customer's weights.", show_default=False)
    ] = None,
    as_of: AsOfOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show.")] = 20,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Decayed interest weights per customer × category, strongest first."""
    from kequn.asof import resolve_as_of
    from kequn.errors import InputError
    from kequn.tags import InterestSpec, interest_weights, stored_tags

    with _open(workspace) as ws:
        (tag,) = stored_tags(ws, [name])
        if tag.source != "interest":
            raise InputError(f"tag {name!r} is a {tag.source} tag, not an interest tag")
        spec = InterestSpec.parse(tag.definition["interest"], name)
        at = resolve_as_of(as_of, ws.config.timezone)
        w = interest_weights(ws, spec, at, [customer] if customer else None)
        w = w.order_by([w.weight.desc(), w.customer_id, w.category]).limit(limit)
        rows = w.to_pyarrow().to_pylist()
        settings = spec.with_defaults(ws.config.raw.get("tags", {}).get("interest", {})).as_dict()
    if json_:
        print_json({"settings": settings, "weights": rows})
        return
    console.print(
        f"α = {settings['alpha']} per {settings['period_days']} days, threshold "
        f"{settings['threshold']}, top {settings['top_k']}; weights {settings['events']}, "
        f"purchase lines {settings['orders']}",
        soft_wrap=True,
    )
    table = Table(title=f"interest weights ({escape(name)})")
    for col in ("customer_id", "category", "weight", "active", "rank"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r["customer_id"]),
            escape(r["category"]),
            f"{r['weight']:.4f}",
            "on" if r["active"] else "off",
            str(r["rank"] + 1),
        )
    console.print(table)


@tag_app.command("score")
@handle_errors
def score_cmd(
    name: Annotated[str, typer.Argument(help="A behaviour score tag (source = 'score').")],
    as_of: AsOfOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The behaviour score's weights, each behaviour's share of the score, and the levels."""
    from kequn.asof import resolve_as_of
    from kequn.errors import InputError
    from kequn.tags import ScoreSpec, score_summary, stored_tags

    with _open(workspace) as ws:
        (tag,) = stored_tags(ws, [name])
        if tag.source != "score":
            raise InputError(f"tag {name!r} is a {tag.source} tag, not a behaviour score")
        summary = score_summary(
            ws,
            ScoreSpec.parse(tag.definition["score"], name),
            resolve_as_of(as_of, ws.config.timezone),
        )
    if json_:
        print_json(summary)
        return
    console.print(
        f"half-life {summary['half_life_days']:g} days, normalised by {summary['normalise']}, "
        f"{summary['customers']:,} customers"
    )
    table = Table(title="behaviours (行为权重)")
    for col in ("behaviour", "weight", "decayed count", "points", "share of score"):
        table.add_column(col, justify="left" if col == "behaviour" else "right")
    for b in summary["behaviours"]:
        table.add_row(
            escape(b["behaviour"]),
            f"{b['weight']:g}",
            f"{b['decayed_count']:.2f}",
            f"{b['points']:.2f}",
            _num(b["share"], "{:.1%}"),
        )
    console.print(table)
    levels = Table(title="levels")
    for col in ("level", "名称", "score from", "customers"):
        levels.add_column(col)
    for lv in summary["levels"]:
        levels.add_row(lv["level"], lv["label_zh"], f"{lv['from']:g}", f"{lv['customers']:,}")
    console.print(levels)
