"""``kequn cluster``: discover groups, explain each as a rule, save one as a segment.

Thin: calls :mod:`kequn.insight` and prints the silhouette curve, the cluster table
(size, revenue share, centroids in original units) and each cluster's rule with the
precision and recall the segment engine measured.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

cluster_app = typer.Typer(
    name="cluster",
    help="Clusters (聚类): K-means (K-prototypes with attributes) on customer features, "
    "each cluster explained as a rule.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")


def _bar(value: float, best: float, width: int = 30) -> str:
    return "█" * max(1, round(width * max(value, 0.0) / best)) if best > 0 else ""


def _coordinate(value: object) -> str:
    """A centroid value: a number, or the most frequent level of a categorical feature."""
    if isinstance(value, int | float):
        return f"{value:,.1f}"
    return "(missing)" if value is None else escape(str(value))


def _print_run(run) -> None:
    best = max(run.curve.values()) if run.curve else 0.0
    console.print(
        f"run {run.run_id}  as_of {run.as_of:%Y-%m-%d %H:%M}  k={run.k} ({run.method})  "
        f"silhouette {run.silhouette:.3f}"
    )
    if len(run.curve) > 1:
        console.print("silhouette by k:")
        for k, v in run.curve.items():
            mark = " ←" if k == run.k else ""
            console.print(f"  k={k}  {v:6.3f}  {_bar(v, best)}{mark}")
    # One column per cluster and one row per feature: fits a terminal whatever the features.
    table = Table(title="clusters (centroids in original units)")
    table.add_column("")
    for c in run.clusters:
        table.add_column(f"cluster {c['cluster']}", justify="right")
    table.add_row("customers", *[f"{c['size']:,}" for c in run.clusters])
    table.add_row("share", *[f"{c['share']:.1%}" for c in run.clusters])
    table.add_row("revenue share", *[f"{c['revenue_share']:.1%}" for c in run.clusters])
    for f in run.features:
        table.add_row(escape(f.name), *[_coordinate(c["centroid"][f.name]) for c in run.clusters])
    console.print(table)
    for r in run.rules:
        console.print(
            f"cluster {r.cluster}: precision {r.precision:.1%}, recall {r.recall:.1%} "
            f"({r.rule_size:,} selected by the rule)"
        )
        console.print(f"  {escape(r.rule)}", soft_wrap=True)
    if run.drift is not None:
        _print_drift(run.drift)
    console.print(f"save one as a segment: kequn cluster save N --as NAME --run {run.run_id}")


def _print_drift(drift) -> None:
    """Ids kept from the previous run, how far each cluster moved, who changed cluster."""
    console.print(
        f"compared with run {drift.previous_run} (k={drift.previous_k}): "
        f"{drift.customers_moved:,} of {drift.customers_compared:,} customers changed cluster "
        f"({drift.moved_share:.1%}); mean centroid shift {drift.mean_shift_sd:.2f} sd"
    )
    table = Table(title="drift since the previous run")
    for name in ("cluster", "was", "shift (sd)", "moved in", "moved out", "largest change"):
        table.add_column(name, justify="left" if name == "largest change" else "right")
    for c in drift.clusters:
        shift = c["shift"]
        top = max(shift, key=lambda f: abs(shift[f]), default=None)
        table.add_row(
            str(c["cluster"]),
            "new" if c["previous"] is None else str(c["previous"]),
            "-" if c["shift_sd"] is None else f"{c['shift_sd']:.2f}",
            f"{c['moved_in']:,}",
            f"{c['moved_out']:,}",
            "" if top is None else f"{escape(top)} {shift[top]:+,.1f}",
        )
    console.print(table)
    for w in drift.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


@cluster_app.callback()
@handle_errors
def cluster_cmd(
    ctx: typer.Context,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Feature groups, comma-separated: rfm, clv, events (default: all; clv "
            "only where CLV or churn scores are stored), and attr:NAME for a categorical "
            "customer attribute (attr:city, attr:会员等级), which clusters with K-prototypes.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[
        str, typer.Option("--k", help="Number of clusters, or 'auto' (silhouette, 2..8).")
    ] = "auto",
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Features at this day or instant; default: now.", show_default=False
        ),  # fmt: skip
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same run).")] = 0,
    previous: Annotated[
        str,
        typer.Option(
            "--previous",
            help="Keep the cluster ids of this run (matched by centroids) and report the "
            "drift since it: 'latest', a run id, or 'none' for fresh numbering.",
        ),
    ] = "latest",
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Cluster customers, explain each cluster as a rule, store the run (聚类)."""
    if ctx.invoked_subcommand is not None:
        return
    from kequn.insight import cluster
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        run = cluster(ws, features=features, k=k, as_of=as_of, random_state=seed, previous=previous)
    if json_:
        print_json(run.as_dict())
        return
    _print_run(run)


@cluster_app.command("save")
@handle_errors
def save_cmd(
    number: Annotated[int, typer.Argument(help="The cluster number (0 = largest).")],
    name: Annotated[str, typer.Option("--as", help="Name of the new segment.")],
    run_id: Annotated[
        str | None,
        typer.Option("--run", help="Cluster run id (default: the latest).", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Save a cluster's rule as an ordinary segment (保存为客群)."""
    from kequn.insight import save_cluster
    from kequn.segments import segment_definition
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        seg_run = save_cluster(ws, run_id, number, name)
        seg = segment_definition(ws, name)
    if json_:
        print_json({"segment": name, "rule": seg.rule, "as_of": seg_run.as_of,
                    "size": seg_run.size, "description": seg.description})  # fmt: skip
        return
    console.print(f"saved segment {escape(name)!r}: {seg_run.size:,} customers")
    console.print(f"  {escape(seg.rule)}", soft_wrap=True)
    console.print(escape(seg.description), soft_wrap=True)
