"""``kequn churn``: train the churn classifier on a time split, score customers.

Thin: ``train`` calls :func:`kequn.models.churn_evaluation.train_churn` and saves the model in the
workspace (``models/churn.pkl``); ``predict`` calls :func:`kequn.models.churn_store.score_churn`,
which stores the scores in ``churn_scores``. This module only prints or writes files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json

churn_app = typer.Typer(
    name="churn",
    help="Churn risk (流失风险): train a classifier on a time split, score customers.",
    no_args_is_help=True,
)

#: Risk bands printed by ``predict``.
BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
TOP_FEATURES = 10


def register(app: typer.Typer) -> None:
    app.add_typer(churn_app, name="churn")


@churn_app.command("train")
@handle_errors
def train_cmd(
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Training cutoff day (YYYY-MM-DD): features up to it, labels from the "
            "horizon after it (default: horizon days before the test cutoff).",
            show_default=False,
        ),
    ] = None,
    horizon: Annotated[
        int, typer.Option(help="Churned = no purchase within this many days.", min=1)
    ] = 90,
    test_cutoff: Annotated[
        str | None,
        typer.Option(
            "--test-cutoff",
            help="Test cutoff day (default: the latest day whose horizon is in the data).",
            show_default=False,
        ),
    ] = None,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="Save a model refitted at the test cutoff (latest labels) or the one tested.",
        ),
    ] = True,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train and evaluate the churn model; save it in the workspace (训练流失模型)."""
    from kequn.models.churn_evaluation import train_churn
    from kequn.models.churn_store import save_churn_model
    from kequn.workspace import open_workspace

    with open_workspace(workspace) as ws:
        model, report = train_churn(
            ws, cutoff=cutoff, test_cutoff=test_cutoff, horizon=horizon, refit=refit
        )
        path = save_churn_model(ws, model, report)
        try:
            shown = path.relative_to(ws.path)
        except ValueError:  # pragma: no cover - the model file is always inside
            shown = path
    if json_:
        print_json({**report.as_dict(), "saved": str(path)})
        return
    _print_report(report.as_dict())
    console.print(
        f"saved [bold]{escape(str(shown))}[/] (fitted at {report.model_cutoff} on "
        f"{report.model_customers:,} customers); score with `kequn churn predict`"
    )


def _auc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _print_report(data: dict[str, Any]) -> None:
    h = data["horizon_days"]
    console.rule(f"[bold]churn model[/] — churned = no purchase within {h} days")
    console.print(
        f"trained at {data['cutoff']}: {data['train']['customers']:,} customers, "
        f"{data['train']['churn_rate']:.1%} churned"
    )
    console.print(
        f"tested at {data['test_cutoff']}: {data['test']['customers']:,} customers, "
        f"{data['test']['churn_rate']:.1%} churned"
    )
    scores = Table(title="ROC AUC on the test cutoff", show_edge=False)
    scores.add_column("score")
    scores.add_column("AUC", justify="right")
    scores.add_column("Brier", justify="right")
    scores.add_row("churn model (gradient boosting)", _auc(data["auc"]), _auc(data["brier"]))
    base, quiet = data["baseline"], data["bgnbd_no_purchase"]
    scores.add_row("BG/NBD 1 − P(alive)", _auc(base["auc"]), _auc(base["brier"]))
    scores.add_row(f"BG/NBD P(no purchase in {h} days)", _auc(quiet["auc"]), _auc(quiet["brier"]))
    scores.add_row("recency alone", _auc(data["recency_auc"]), "")
    console.print(scores)
    for note in data["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")

    calib = Table(title="calibration (test customers by predicted risk)", show_edge=False)
    for name in ("decile", "customers", "predicted", "observed", "risk range"):
        calib.add_column(name, justify="right")
    for row in data["calibration"]:
        calib.add_row(
            str(row["decile"]),
            f"{row['customers']:,}",
            f"{row['mean_predicted']:.1%}",
            f"{row['observed_rate']:.1%}",
            f"{row['min_predicted']:.2f}–{row['max_predicted']:.2f}",
        )
    console.print(calib)

    feats = Table(title="top features (AUC lost when shuffled)", show_edge=False)
    feats.add_column("feature")
    feats.add_column("importance", justify="right")
    feats.add_column("± std", justify="right")
    for row in data["importances"][:TOP_FEATURES]:
        feats.add_row(escape(row["feature"]), f"{row['importance']:.4f}", f"{row['std']:.4f}")
    console.print(feats)


@churn_app.command("predict")
@handle_errors
def predict_cmd(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Score as of this day (YYYY-MM-DD); default: the day of the last purchase.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the scores to FILE (.csv .xlsx .parquet .json)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Score every customer with a purchase; store in churn_scores (预测流失风险)."""
    import numpy as np

    from kequn.export import check_out_path, write_frame
    from kequn.models.churn_store import load_churn_model, model_label, score_churn
    from kequn.workspace import open_workspace

    path = check_out_path(out) if out is not None else None
    with open_workspace(workspace) as ws:
        model, meta = load_churn_model(ws)
        rows = score_churn(ws, as_of=as_of, model=model)
    if path is not None:
        write_frame(rows, path, sheet="churn")
    risk = rows["churn_risk"].to_numpy()
    day = rows["as_of"].iloc[0].date().isoformat() if len(rows) else as_of
    bands = [
        {
            "from": lo,
            "to": hi,
            "customers": int(((risk >= lo) & ((risk < hi) | (hi == 1.0))).sum()),
        }
        for lo, hi in BANDS
    ]
    summary = {
        "as_of": day,
        "model": model_label(model),
        "trained_at": (meta.get("report") or {}).get("model_cutoff"),
        "customers": len(rows),
        "mean_risk": float(np.mean(risk)) if len(risk) else None,
        "bands": bands,
        "table": "churn_scores",
        "out": str(path) if path is not None else None,
    }
    if json_:
        print_json(summary)
        return
    console.print(
        f"scored {len(rows):,} customers as of {day} with {summary['model']} "
        f"(trained at {summary['trained_at']}); stored in churn_scores"
    )
    table = Table(show_edge=False)
    table.add_column("churn risk")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for band in bands:
        share = band["customers"] / len(rows) if len(rows) else 0.0
        table.add_row(
            f"{band['from']:.2f}–{band['to']:.2f}", f"{band['customers']:,}", f"{share:.1%}"
        )
    console.print(table)
    if path is not None:
        console.print(f"wrote {len(rows):,} rows to {escape(str(path))}")
