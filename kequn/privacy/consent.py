"""Consent (同意) per customer and channel: opt-in or opt-out, with when and where from.

Rows are only appended; a customer's status for a channel is the latest row by ``at``
(then by when it was recorded). Triggers read it before they enqueue a message
(:func:`allowed_customers`), and rules read it as ``consent.email = 'opt_in'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError, closest
from kequn.segments.check import CONSENT_CHANNELS

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from kequn.workspace import Workspace

__all__ = [
    "CHANNELS",
    "MODES",
    "STATUSES",
    "ConsentReport",
    "allowed_customers",
    "consent_mode",
    "consents_of",
    "import_consents",
    "latest_consents",
    "record_consents",
    "trigger_channel",
]

CHANNELS = CONSENT_CHANNELS  # email, sms, im, phone
STATUSES = ("opt_in", "opt_out")
MODES = ("opt_in", "opt_out")
# trigger channel → consent channel; webhook and file triggers name theirs (`consent = ...`)
TRIGGER_CONSENT = {"email": "email", "wecom": "im", "dingtalk": "im", "feishu": "im"}

# how people write statuses and channels in files
_STATUS_WORDS = {
    "opt_in": "opt_in optin opt-in in yes y true 1 subscribed subscribe granted 同意 是 订阅 允许",
    "opt_out": (
        "opt_out optout opt-out out no n false 0 unsubscribed unsubscribe withdrawn revoked "
        "拒绝 否 退订 取消订阅 不同意 撤回"
    ),
}
_CHANNEL_WORDS = {
    "email": "email e-mail mail 邮件 邮箱 电子邮件",
    "sms": "sms text 短信 短消息",
    "im": "im wechat wecom dingtalk feishu chat 微信 企业微信 钉钉 飞书 即时通讯",
    "phone": "phone call tel telephone 电话 电话外呼 外呼",
}
STATUS_ALIASES = {w: s for s, words in _STATUS_WORDS.items() for w in words.split()}
CHANNEL_ALIASES = {w: c for c, words in _CHANNEL_WORDS.items() for w in words.split()}


def _now(ws: Workspace) -> datetime:
    from kequn.access.audit import _now as now

    return now(ws)


def consent_mode(ws: Workspace) -> str:
    """``[privacy] consent``: ``opt_in`` sends only to customers who opted in; ``opt_out``
    (the default, for workspaces from before consent existed) to all but those who opted out."""
    section = ws.config.raw.get("privacy", {})
    mode = section.get("consent", "opt_out") if isinstance(section, Mapping) else "opt_out"
    if mode not in MODES:
        raise InputError(f"kequn.toml [privacy] consent = {mode!r}; use 'opt_in' or 'opt_out'")
    return str(mode)


def _check(channel: str, status: str, where: str) -> tuple[str, str]:
    ch = CHANNEL_ALIASES.get(str(channel).strip().lower())
    if ch is None:
        raise InputError(
            f"{where}: channel {channel!r}{closest(str(channel), CHANNELS)} "
            f"(channels: {', '.join(CHANNELS)})"
        )
    st = STATUS_ALIASES.get(str(status).strip().lower())
    if st is None:
        raise InputError(
            f"{where}: status {status!r}{closest(str(status), STATUSES)} (use opt_in or opt_out)"
        )
    return ch, st


def record_consents(
    ws: Workspace, rows: Sequence[Mapping[str, Any]], *, actor: str | None = None
) -> int:
    """Append consent rows (``customer_id``, ``channel``, ``status``, optional ``at`` and
    ``source``), all checked first; one audit entry. Returns how many were written."""
    import pyarrow as pa

    from kequn.access import audit, local_actor

    actor = actor or local_actor()
    now = _now(ws)
    checked: list[dict[str, Any]] = []
    for i, row in enumerate(rows, start=1):
        where = f"consent #{i}"
        cid = str(row.get("customer_id") or "").strip()
        if not cid:
            raise InputError(f"{where}: customer_id is missing")
        channel, status = _check(row.get("channel", ""), row.get("status", ""), where)
        at = row.get("at") or now
        if isinstance(at, str):
            try:
                at = datetime.fromisoformat(at)
            except ValueError:
                raise InputError(f"{where}: at {at!r} is not a date-time") from None
        if at.tzinfo is not None:
            from kequn.config import zone_info

            at = at.astimezone(zone_info(ws.config.timezone)).replace(tzinfo=None)
        checked.append(
            {
                "customer_id": cid,
                "channel": channel,
                "status": status,
                "at": at,
                "source": str(row.get("source") or "api"),
                "recorded_at": now,
                "recorded_by": actor,
            }
        )
    if not checked:
        return 0
    table = pa.table({k: [r[k] for r in checked] for k in checked[0]})
    with ws.store.transaction():
        ws.store.append("consents", table)
        audit(ws, actor, "consent.set", f"{len(checked)} row(s)", {"rows": len(checked)})
    return len(checked)


def latest_consents(ws: Workspace, as_of: datetime | None = None) -> ir.Table:
    """One row per customer × channel with a recorded consent: the latest status."""
    import ibis

    t = ws.table("consents")
    if as_of is not None:
        t = t.filter(t.at <= ibis.literal(as_of, "timestamp"))
    rank = ibis.row_number().over(
        group_by=[t.customer_id, t.channel], order_by=[ibis.desc(t.at), ibis.desc(t.recorded_at)]
    )
    return t.mutate(_rank=rank).filter(ibis._._rank == 0).drop("_rank")


def consents_of(ws: Workspace, customer_id: str) -> list[dict[str, Any]]:
    """A customer's latest status per channel (channels with no record left out)."""
    t = latest_consents(ws)
    rows = t.filter(t.customer_id == customer_id).order_by("channel").to_pyarrow().to_pylist()
    return [{k: r[k] for k in ("channel", "status", "at", "source")} for r in rows]


def trigger_channel(trigger_channel_name: str, configured: str | None) -> str | None:
    """The consent channel a trigger needs: its ``consent`` setting ("none": no check),
    else by its channel (email → email, robots → im); webhook and file need none by default."""
    if configured is not None:
        return None if configured == "none" else configured
    return TRIGGER_CONSENT.get(trigger_channel_name)


def allowed_customers(
    ws: Workspace, customers: Iterable[str], channel: str
) -> dict[str, str | None]:
    """Each customer → None when a message on ``channel`` may go out, else the reason not."""
    import ibis
    import pyarrow as pa

    wanted = sorted(set(customers))
    mode = consent_mode(ws)
    t = latest_consents(ws)
    ids = ibis.memtable(pa.table({"cid": pa.array(wanted, pa.string())}))
    rows = (
        t.filter(t.channel == channel)
        .semi_join(ids, t.customer_id == ids.cid)
        .select("customer_id", "status", "at", "source")
        .to_pyarrow()
        .to_pylist()
    )
    latest = {r["customer_id"]: r for r in rows}
    out: dict[str, str | None] = {}
    for cid in wanted:
        r = latest.get(cid)
        if r is not None and r["status"] == "opt_out":
            out[cid] = (
                f"no_consent: opted out of {channel} on {r['at']:%Y-%m-%d %H:%M} "
                f"(source {r['source']!r})"
            )
        elif r is None and mode == "opt_in":
            out[cid] = (
                f"no_consent: no opt-in for {channel} recorded "
                "([privacy] consent = 'opt_in' needs one)"
            )
        else:
            out[cid] = None
    return out


# --- files -----------------------------------------------------------------------------------


@dataclass
class ConsentReport:
    """What ``kequn consent import`` did; every row is either written or rejected with why."""

    path: str
    rows_read: int = 0
    written: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLUMNS = {
    "customer_id": "customer_id customerid customer 客户id 客户编号 会员id 会员编号 用户id",
    "channel": "channel 渠道 通道",
    "status": "status consent 状态 同意 授权状态",
    "at": "at time date datetime timestamp 时间 日期 授权时间",
    "source": "source 来源",
}


def import_consents(
    ws: Workspace, path: str | Path, *, source: str | None = None, actor: str | None = None
) -> ConsentReport:
    """Import a consent file (CSV/Excel/Parquet: customer_id, channel, status, at, source).

    ``customer_id`` may be a customer id, a source id, an e-mail or a phone number; rows
    naming no known customer, or an unknown channel or status, are rejected with the reason
    (nothing is written unless every other row is fine: the good rows are written together).
    """
    from kequn.ingest.mapping import normalise
    from kequn.ingest.readers import open_source
    from kequn.profiles import find_customer

    src = open_source(Path(path))
    aliases = {normalise(w): f for f, words in _COLUMNS.items() for w in words.split()}
    mapping: dict[str, str] = {}
    for header in src.headers:
        name = aliases.get(normalise(header))
        if name and name not in mapping:
            mapping[name] = header
    missing = [f for f in ("customer_id", "channel", "status") if f not in mapping]
    if missing:
        raise InputError(
            f"{str(path)!r}: no column for {', '.join(missing)}; columns are "
            f"{', '.join(map(repr, src.headers))} (expected customer_id, channel, status, at, "
            "source)"
        )
    import pyarrow as pa

    table = pa.Table.from_batches(list(src.batches(lambda _pos: None)))
    data = {f: table.column(h).to_pylist() for f, h in mapping.items()}
    report = ConsentReport(str(path), rows_read=table.num_rows)
    good: list[dict[str, Any]] = []
    cache: dict[str, str | None] = {}
    rows_col = table.column("_row").to_pylist() if "_row" in table.column_names else None
    for i in range(table.num_rows):
        row_no = rows_col[i] if rows_col else i + 1
        key = str(data["customer_id"][i] or "").strip()
        item = {f: data[f][i] for f in data}
        try:
            if key not in cache:
                try:
                    cache[key] = find_customer(ws, key) if key else None
                except InputError:
                    cache[key] = None
            if cache[key] is None:
                raise InputError(f"no customer {key!r}")
            channel, status = _check(item["channel"] or "", item["status"] or "", "row")
            at = item.get("at")
            if isinstance(at, str) and at.strip():
                at = datetime.fromisoformat(at.strip().replace("/", "-"))
            elif not isinstance(at, datetime):
                at = None
        except (InputError, ValueError) as exc:
            reason = str(exc).removeprefix("row: ")
            report.rejected.append({"row": row_no, "reason": reason})
            continue
        good.append(
            {
                "customer_id": cache[key],
                "channel": channel,
                "status": status,
                "at": at,
                "source": item.get("source") or source or f"file:{Path(path).name}",
            }
        )
    report.written = record_consents(ws, good, actor=actor) if good else 0
    return report
