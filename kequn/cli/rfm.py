"""``kequn rfm``: RFM scores and value segments, a summary with bars, a migration matrix.

Thin: options go to :mod:`kequn.features.rfm`, results come back as small frames (the
summary and the matrix are aggregated in the engine), and this module only prints or writes.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kequn.cli._common import JsonOpt, WorkspaceOpt, console, handle_errors, print_json
from kequn.errors import InputError
from kequn.export import check_out_path, write_frame

if TYPE_CHECKING:
    import pandas as pd


class SchemeName(StrEnum):
    intl = "intl"
    cn8 = "cn8"
    tiers = "tiers"


class MethodName(StrEnum):
    quantile = "quantile"
    fixed = "fixed"


def register(app: typer.Typer) -> None:
    app.command("rfm")(rfm)


@handle_errors
def rfm(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Day (YYYY-MM-DD, the whole day counts) or time the scores are as of; "
            "default: now. 截止日期",
            show_default=False,
        ),
    ] = None,
    bins: Annotated[
        int | None,
        typer.Option(help="Score bins, 2-10 (default: [rfm] bins in kequn.toml, else 5)."),
    ] = None,
    scheme: Annotated[
        SchemeName | None,
        typer.Option(help="Segment map (default: [rfm] scheme, else intl). 分群方案"),
    ] = None,
    method: Annotated[
        MethodName | None,
        typer.Option(help="quantile bins, or fixed thresholds from [rfm.thresholds]."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write every customer's scores to FILE (.csv .xlsx .parquet .json)."),
    ] = None,
    net_returns: Annotated[
        bool | None,
        typer.Option(
            "--net-returns/--gross",
            help="Subtract returns from monetary (default: [rfm] net_returns, else gross).",
            show_default=False,
        ),
    ] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            metavar="DATE1 DATE2",
            help="Print how many customers moved between segments from DATE1 to DATE2 "
            "(stored runs; missing ones are computed). 客群迁移",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """RFM scores and value segments (RFM 价值分群), stored for later comparison."""
    import kequn.features.rfm as lib
    from kequn.workspace import open_workspace

    options: dict[str, Any] = {
        "scheme": scheme.value if scheme else None,
        "bins": bins,
        "method": method.value if method else None,
        "net_returns": net_returns,
    }
    if out is not None:
        check_out_path(out)  # before minutes of work, not after
    with open_workspace(workspace) as ws:
        if compare:
            if as_of is not None:
                raise InputError("--compare takes its own two dates; leave out --as-of")
            moves = lib.rfm_migration(ws, compare[0], compare[1], **options)
            settings = lib.resolve_settings(ws, as_of=compare[0], **options)
            _report_migration(moves, settings.scheme, compare, out, json_out)
            return

        run = lib.save_rfm(ws, as_of=as_of, **options)
        table = lib.stored_rfm(ws, run.as_of, run.scheme)
        meta = {
            "as_of": run.as_of.isoformat(),
            "scheme": run.scheme,
            "bins": run.bins,
            "method": run.method,
            "net_returns": run.net_returns,
            "customers": run.customers,
        }
        if out is not None:
            frame = lib.to_pandas(table.order_by("customer_id"))
            write_frame(frame, out, sheet="rfm")
            if json_out:
                print_json({**meta, "out": str(out), "rows": len(frame)})
            else:
                console.print(f"wrote {len(frame):,} customers to [bold]{out}[/] ({_meta(meta)})")
            return
        summary = lib.rfm_summary(table, run.scheme)
        if json_out:
            print_json({**meta, "segments": _records(summary)})
        else:
            _print_summary(summary, meta)


# --- output -----------------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows
    ]


def _meta(meta: dict[str, Any]) -> str:
    net = "net of returns" if meta["net_returns"] else "gross"
    return (
        f"as of {meta['as_of']}, scheme {meta['scheme']}, {meta['bins']} {meta['method']} "
        f"bins, {net}"
    )


def _num(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _share(share: float, color: str):
    """``12.5% ██▌``: the share and a Rich bar of it (0-100%), side by side."""
    from rich.bar import Bar
    from rich.table import Table

    cell = Table.grid(padding=(0, 1))
    cell.add_column(justify="right", width=6)
    cell.add_column(width=6)
    cell.add_row(f"{share:.1%}", Bar(1.0, 0.0, min(max(float(share), 0.0), 1.0), color=color))
    return cell


def _print_summary(summary: pd.DataFrame, meta: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from kequn.features.rfm_schemes import SCHEMES

    scheme = SCHEMES[meta["scheme"]]
    total_revenue = float(summary["revenue"].sum())
    table = Table(
        title=f"RFM · {scheme.zh} / {scheme.en}",
        caption=f"{meta['customers']:,} customers 客户, revenue 收入 {total_revenue:,.2f} · "
        + _meta(meta),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("Segment\n客群", min_width=14)
    numbers = {"justify": "right", "no_wrap": True}
    table.add_column("Customers\n客户数", **numbers)
    table.add_column("% customers\n客户占比", no_wrap=True)
    table.add_column("% revenue\n收入占比", no_wrap=True)
    table.add_column("R days\n天数", **numbers)
    table.add_column("F\n频次", **numbers)
    table.add_column("M\n金额", **numbers)
    for row in summary.itertuples(index=False):  # one row per segment, at most 11
        table.add_row(
            f"{row.rfm_segment_zh} {row.rfm_segment_en}",
            f"{row.customers:,}",
            _share(row.customer_share, "cyan"),
            _share(row.revenue_share, "green"),
            _num(row.recency_days),
            _num(row.frequency),
            _num(row.monetary, 0 if abs(row.monetary or 0) >= 1000 else 2),
        )
    if meta["customers"] == 0:
        console.print(f"no customer has a purchase up to {meta['as_of']}")
    console.print(table)


def _report_migration(
    moves: pd.DataFrame,
    scheme_name: str,
    dates: tuple[str, str],
    out: Path | None,
    json_out: bool,
) -> None:
    from kequn.features.rfm import NOT_SCORED
    from kequn.features.rfm_schemes import SCHEMES

    scheme = SCHEMES[scheme_name]
    order = [seg.code for seg in scheme.segments] + [NOT_SCORED]
    present_from = [c for c in order if c in set(moves["from_segment"])]
    present_to = [c for c in order if c in set(moves["to_segment"])]
    matrix = (
        moves.pivot(index="from_segment", columns="to_segment", values="customers")
        .reindex(index=present_from, columns=present_to)
        .fillna(0)
        .astype("int64")
    )
    if out is not None:
        frame = matrix.rename_axis(index=f"from {dates[0]} \\ to {dates[1]}").reset_index()
        frame.columns = [str(c) for c in frame.columns]
        write_frame(frame, out, sheet="rfm")
    if json_out:
        print_json(
            {
                "from": dates[0],
                "to": dates[1],
                "scheme": scheme_name,
                "moves": _records(moves),
                "matrix": {k: {c: int(v) for c, v in row.items()} for k, row in matrix.iterrows()},
            }
        )
        return
    if out is not None:
        console.print(f"wrote the {len(matrix)}×{len(matrix.columns)} matrix to [bold]{out}[/]")
        return

    _print_matrix(matrix, scheme_name, dates)
    stayed = int(moves.loc[moves.from_segment == moves.to_segment, "customers"].sum())
    total = int(moves["customers"].sum())
    share = f" ({stayed / total:.1%})" if total else ""
    console.print(f"{stayed:,} of {total:,} customers stayed in their segment{share}")


def _count(n: int, compact: bool) -> str:
    if not compact or n < 10_000:
        return f"{n:,}"
    return f"{n / 1000:.0f}k" if n < 999_500 else f"{n / 1e6:.1f}M"


def _print_matrix(matrix: pd.DataFrame, scheme_name: str, dates: tuple[str, str]) -> None:
    """Rows: segment on the first day; columns: on the second; the diagonal stayed.

    Segments are numbered in the scheme's order (0 = not scored). When full names and
    counts do not fit the terminal, rows show the numbers, counts are shortened (12k) and
    a legend follows, so the matrix never wraps.
    """
    from rich import box
    from rich.cells import cell_len
    from rich.columns import Columns
    from rich.table import Table

    from kequn.features.rfm import NOT_SCORED
    from kequn.features.rfm_schemes import SCHEMES

    scheme = SCHEMES[scheme_name]
    number = {seg.code: str(i) for i, seg in enumerate(scheme.segments, start=1)}
    number[NOT_SCORED] = "0"

    def name(code: str) -> str:
        if code == NOT_SCORED:
            return "0 未评分 not scored"
        return f"{number[code]} {scheme.label(code, 'zh')} {scheme.label(code, 'en')}"

    corner = f"{dates[0]} \\ {dates[1]}"
    widths = [max(len(f"→{number[c]}"), *(len(f"{n:,}") for n in matrix[c])) for c in matrix]
    label_width = max(cell_len(corner), *(cell_len(name(c)) for c in matrix.index))
    compact = label_width + sum(w + 1 for w in widths) + 2 > console.width
    table = Table(
        title=f"RFM {scheme.zh} / {scheme.en} 客群迁移: rows 行 {dates[0]} → columns 列 {dates[1]}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("" if compact else corner, no_wrap=True)
    for code in matrix.columns:
        table.add_column(f"→{number[code]}", justify="right", no_wrap=True)
    for code, row in matrix.iterrows():
        cells = [
            f"[bold]{_count(n, compact)}[/]"
            if code == col
            else (_count(n, compact) if n else "[dim]·[/]")
            for col, n in row.items()
        ]
        table.add_row(number[code] if compact else name(code), *cells)
    console.print(table)
    if compact:
        codes = [c for c in number if c in set(matrix.index) | set(matrix.columns)]
        console.print(Columns([name(c) for c in codes], padding=(0, 2)))
