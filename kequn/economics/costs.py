"""Campaign costs (营销成本): labour, technology and material per campaign, channel and period.

A cost file is CSV or Excel with one row per cost line: ``campaign``, ``channel``,
``period_start``, ``period_end`` and the amounts ``labour``, ``technology``, ``material``
(Chinese headers too: 活动, 渠道, 开始日期, 结束日期, 人力成本, 技术成本, 物料成本). A
campaign is a trigger's name (its deliveries are the campaign's touches); a row with only a
channel is acquisition spend. Importing a file again replaces the rows it brought before, so
a corrected file does not count twice.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError

if TYPE_CHECKING:
    from kequn.workspace import WorkspaceLike

__all__ = ["COST_COLUMNS", "import_costs", "list_costs"]

COST_COLUMNS = ("labour", "technology", "material")
_HEADERS: dict[str, tuple[str, ...]] = {
    "campaign": ("campaign", "活动", "活动名称", "营销活动", "campaign_name"),
    "channel": ("channel", "渠道", "获客渠道", "acquisition_channel"),
    "period_start": ("period_start", "start", "start_date", "开始日期", "开始", "起始日期"),
    "period_end": ("period_end", "end", "end_date", "结束日期", "结束", "截止日期"),
    "labour": ("labour", "labor", "人力成本", "人力", "人工成本"),
    "technology": ("technology", "tech", "技术成本", "技术", "系统成本"),
    "material": ("material", "materials", "物料成本", "物料", "素材成本"),
}
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$")


def _date(text: str | None, where: str, column: str) -> date:
    value = (text or "").strip()
    match = _DATE.match(value.split(" ")[0].split("T")[0])
    if not match:
        raise InputError(f"{where}: {column} {value!r} is not a date; write YYYY-MM-DD")
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise InputError(f"{where}: {column} {value!r} is not a real date") from None


def _amount(text: str | None, where: str, column: str) -> float:
    value = (text or "").strip()
    if value == "":
        return 0.0
    cleaned = value.replace(",", "").replace("¥", "").replace("￥", "").replace("元", "").strip()
    try:
        amount = float(cleaned)
    except ValueError:
        raise InputError(f"{where}: {column} {value!r} is not an amount") from None
    if amount < 0:
        raise InputError(f"{where}: {column} {value!r} is negative; costs are ≥ 0")
    return amount


def import_costs(
    workspace: WorkspaceLike, path: str | Path, *, now: datetime | None = None
) -> dict[str, Any]:
    """Load a cost file into ``campaign_costs``; returns rows and totals per cost type."""
    import pyarrow as pa

    from kequn.act.outbox import workspace_now
    from kequn.ingest.readers import expand, open_source
    from kequn.workspace import opened

    (file,) = expand([path])
    source = open_source(file)
    lowered = {h.strip().lower(): h for h in source.headers}
    columns: dict[str, str] = {}
    for target, aliases in _HEADERS.items():
        found = next((lowered[a] for a in aliases if a in lowered), None)
        if found is not None:
            columns[target] = found
    needed = [c for c in ("period_start", "period_end") if c not in columns]
    if needed or not ({"campaign", "channel"} & set(columns)):
        missing = needed or ["campaign or channel"]
        raise InputError(
            f"{str(file)!r}: no {missing[0]!r} column (headers: {', '.join(source.headers)}); "
            "a cost file has campaign, channel, period_start, period_end, labour, technology, "
            "material"
        )
    if not set(COST_COLUMNS) & set(columns):
        raise InputError(f"{str(file)!r}: no cost column; name labour, technology or material")
    out: list[dict[str, Any]] = []
    for batch in source.batches(None):
        data = batch.to_pydict()
        numbers = data.get("_row", range(1, batch.num_rows + 1))
        for i, n in enumerate(numbers):
            where = f"{str(file)!r} row {n}"
            cell = {k: data[col][i] for k, col in columns.items()}
            campaign = (cell.get("campaign") or "").strip() or None
            channel = (cell.get("channel") or "").strip() or None
            if campaign is None and channel is None:
                raise InputError(f"{where}: give a campaign, a channel or both")
            start = _date(cell["period_start"], where, "period_start")
            end = _date(cell["period_end"], where, "period_end")
            if end < start:
                raise InputError(
                    f"{where}: period_end {end.isoformat()!r} is before period_start "
                    f"{start.isoformat()!r}"
                )
            row = {"campaign": campaign, "channel": channel, "period_start": start}
            row["period_end"] = end
            for c in COST_COLUMNS:
                row[c] = _amount(cell.get(c), where, c)
            out.append(row)
    with opened(workspace) as ws:
        when = now or workspace_now(ws)
        for row in out:
            row["source"] = file.name
            row["imported_at"] = when
        with ws.store.transaction():
            ws.store.delete("campaign_costs", source=file.name)
            if out:
                ws.store.append("campaign_costs", pa.Table.from_pylist(out))
    totals = {c: sum(r[c] for r in out) for c in COST_COLUMNS}
    return {"file": str(file), "rows": len(out), **totals, "total": sum(totals.values())}


def list_costs(workspace: WorkspaceLike) -> list[dict[str, Any]]:
    """Every stored cost line, by period."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        c = ws.table("campaign_costs")
        c = c.order_by([c.period_start, c.campaign, c.channel])
        return c.to_pyarrow().to_pylist()
