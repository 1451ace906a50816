"""``kequn clv``: fit the CLV models on the workspace's orders and predict per customer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json
from kequn.errors import InputError

clv_app = typer.Typer(
    name="clv",
    help="Customer lifetime value (客户终身价值): BG/NBD, Pareto/NBD, Gamma-Gamma.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(clv_app, name="clv")


@clv_app.command("fit")
@handle_errors
def fit(
    model: Annotated[
        str, typer.Option(help="bgnbd, pareto (each with Gamma-Gamma) or gamma-gamma.")
    ] = "bgnbd",
    calibration_end: Annotated[
        str | None,
        typer.Option(help="Last day of the fitting period (default: the last purchase day)."),
    ] = None,
    time_unit: Annotated[str, typer.Option(help="day or week.")] = "week",
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fit a model; print parameters, 95% intervals and the log-likelihood (拟合模型)."""
    from kequn.models.clv import fit_clv
    from kequn.workspace import open_workspace

    result = fit_clv(
        open_workspace(workspace),
        model=model,
        calibration_end=calibration_end,
        time_unit=time_unit,
    )
    fitted = result.spend if model == "gamma-gamma" else result.transactions
    if json_:
        data = fitted.to_dict()
        data["calibration_end"] = result.calibration_end.isoformat()
        data["time_unit"] = time_unit
        if model != "gamma-gamma":
            data["spend_model"] = result.spend.to_dict()
        print_json(data)
        return
    models = [fitted] if model == "gamma-gamma" else [fitted, result.spend]
    for m in models:
        table = Table(
            title=f"{m.name} · calibration to {result.calibration_end} · unit {time_unit}"
        )
        for col in ("parameter", "estimate", "std error", "95% interval"):
            table.add_column(col, justify="right" if col != "parameter" else "left")
        summary = m.summary
        for name, row in summary.iterrows():
            table.add_row(
                str(name),
                f"{row['estimate']:.4f}",
                f"{row['std_error']:.4f}",
                f"{row['lower_95']:.4f} – {row['upper_95']:.4f}",
            )
        console.print(table)
        console.print(
            f"log-likelihood {m.log_likelihood_:,.2f} on {int(m.n_customers_):,} customers"
            + ("" if m.converged_ else "  [yellow](did not converge)[/]")
        )


@clv_app.command("holdout")
@handle_errors
def holdout(
    calibration_end: Annotated[str, typer.Option(help="Last day the model is fitted on.")],
    observation_end: Annotated[str, typer.Option(help="Last day of the holdout period.")],
    model: Annotated[str, typer.Option(help="bgnbd or pareto.")] = "bgnbd",
    time_unit: Annotated[str, typer.Option(help="day or week.")] = "week",
    plot: Annotated[
        Path | None, typer.Option(help="Also draw actual vs predicted as an SVG file.")
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check predictions against a holdout period, by calibration frequency (验证)."""
    from kequn.models.clv import holdout_check
    from kequn.models.plots import holdout_plot_svg
    from kequn.workspace import open_workspace

    table = holdout_check(
        open_workspace(workspace),
        calibration_end=calibration_end,
        observation_end=observation_end,
        model=model,
        time_unit=time_unit,
    )
    corr = table.attrs["correlation"]
    if plot is not None:
        title = f"{model}: holdout {calibration_end} → {observation_end} (r = {corr:.3f})"
        plot.write_text(holdout_plot_svg(table, title), encoding="utf-8")
    if json_:
        rows = table.reset_index().to_dict("records")
        print_json({"model": model, "correlation": corr, "rows": rows, "plot": plot})
        return
    out = Table(
        title=f"{model}: actual vs predicted purchases, {calibration_end} → {observation_end}"
    )
    for col in ("calibration repeat purchases", "customers", "actual", "predicted"):
        out.add_column(col, justify="right")
    for label, row in table.iterrows():
        out.add_row(
            str(label),
            f"{int(row['customers']):,}",
            f"{row['actual']:.3f}",
            f"{row['predicted']:.3f}",
        )
    console.print(out)
    total = table.loc["all"]
    console.print(
        f"holdout purchases: actual {total['actual_total']:,.0f}, predicted "
        f"{total['predicted_total']:,.1f}; correlation per customer {corr:.3f}"
    )
    if plot is not None:
        console.print(f"plot written to {plot}")


@clv_app.command("predict")
@handle_errors
def predict(
    horizon: Annotated[
        str, typer.Option(help="How far ahead: days ('90d', '90'), weeks ('12w') or years ('1y').")
    ] = "90d",
    as_of: Annotated[
        str | None, typer.Option(help="Fit on orders up to this day (default: last purchase).")
    ] = None,
    model: Annotated[str, typer.Option(help="bgnbd or pareto.")] = "bgnbd",
    discount_rate: Annotated[float, typer.Option(help="Annual discount rate, e.g. 0.1.")] = 0.0,
    margin: Annotated[float, typer.Option(help="Profit margin applied to spend.")] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="Write per-customer results (.csv .xlsx .parquet .json).")
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Predict expected purchases, P(alive), expected value and CLV per customer (预测)."""
    from kequn.export import check_out_path, write_frame
    from kequn.models.clv import predict_clv
    from kequn.workspace import open_workspace

    days = parse_horizon(horizon)
    if out is not None:
        check_out_path(out)
    frame = predict_clv(
        open_workspace(workspace),
        as_of=as_of,
        horizon_days=days,
        model=model,
        discount_rate=discount_rate,
        margin=margin,
    )
    if out is not None:
        write_frame(frame, out, sheet="clv")
    summary = {
        "customers": len(frame),
        "horizon_days": days,
        "expected_purchases": float(frame["expected_purchases"].sum()),
        "total_clv": float(frame["clv"].sum()),
        "mean_p_alive": float(frame["p_alive"].mean()),
        "out": str(out) if out else None,
    }
    if json_:
        print_json({**summary, "top": frame.nlargest(10, "clv").to_dict("records")})
        return
    console.print(
        f"{summary['customers']:,} customers · next {days} days: "
        f"{summary['expected_purchases']:,.1f} expected purchases, "
        f"CLV {summary['total_clv']:,.2f} in total, mean P(alive) {summary['mean_p_alive']:.3f}"
    )
    top = Table(title="top customers by CLV")
    for col in ("customer", "expected purchases", "P(alive)", "expected value", "CLV"):
        top.add_column(col, justify="left" if col == "customer" else "right")
    for rec in frame.nlargest(10, "clv").itertuples(index=False):
        top.add_row(
            rec.customer_id,
            f"{rec.expected_purchases:.2f}",
            f"{rec.p_alive:.3f}",
            f"{rec.expected_value:,.2f}",
            f"{rec.clv:,.2f}",
        )
    console.print(top)
    if out:
        console.print(f"wrote {len(frame):,} rows to {out}")


def parse_horizon(text: str) -> int:
    """'90d' / '90' → 90 days, '12w' → 84, '6m' → 180, '1y' → 365."""
    match = re.fullmatch(r"\s*(\d+)\s*([dwmy]?)\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise InputError(
            f"--horizon {text!r}: write a positive number of days (90d), weeks "
            "(12w), months (6m) or years (1y)"
        )
    return int(match.group(1)) * {"": 1, "d": 1, "w": 7, "m": 30, "y": 365}[match.group(2)]
