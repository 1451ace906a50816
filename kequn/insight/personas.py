"""Personas (用户画像): any segment, rule or cluster summarised at a glance.

:func:`persona` answers "who are these customers?" with figures a marketer can act on —
size and shares, median R/F/M, mean CLV and churn risk (when stored), the customer
attributes most over-represented compared with all customers (lift), top product
categories and event types, preferred order channel, weekday and hour — and a name and a
one-paragraph description in Chinese and English built from fixed templates (no network,
no randomness: the same data gives the same words).

Definitions (``docs/insight.md`` has the long form):

* the universe is the ``customers`` table; purchases are orders that are not returns,
  dated up to ``as_of``; R/F/M and CLV/churn risk are the clustering features
  (:func:`kequn.insight.features.feature_table`), so they mean what the rule fields mean;
* **lift** of an attribute value = (members with it ÷ members) ÷ (customers with it ÷
  customers); values held by fewer than ``min_count`` members are left out (too little
  support to mean anything); missing values are not a value;
* categories: share of the members' line amounts vs. everyone's; event types: share of
  members with the type in the last 90 days vs. everyone's; channel, weekday and hour:
  share of the members' purchase orders.

Every figure is one aggregate query in the engine; nothing loops over customers.
"""

from __future__ import annotations

import math
from typing import Any

import ibis
import ibis.expr.types as ir

from kequn.errors import InputError
from kequn.insight.features import EVENT_WINDOW_DAYS, _event_window, _upto, feature_table
from kequn.insight.tables import as_of_value, load_run
from kequn.segments import members
from kequn.segments.timing import AsOf, resolve_as_of
from kequn.workspace import Workspace

__all__ = ["ATTRIBUTES", "persona", "persona_markdown", "persona_text"]

ATTRIBUTES = ("city", "province", "gender", "age_band", "channel")
WEEKDAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIELD_ZH = {"city": "城市", "province": "省份", "gender": "性别", "age_band": "年龄段",
            "channel": "注册渠道"}  # fmt: skip


def _members(ws: Workspace, target: str, as_of: object) -> tuple[ir.Table, AsOf, str]:
    """(member ids, as_of, kind) for a stored segment name, ``cluster:N`` or a rule."""
    text = target.strip()
    if text.lower().startswith("cluster:"):
        number = text.split(":", 1)[1].strip()
        if not number.isdigit():
            raise InputError(f"{target!r}: write cluster:N with N a cluster number, e.g. cluster:0")
        run = load_run(ws)
        run.rule(int(number))  # unknown numbers fail with the valid range
        moment = resolve_as_of(as_of if as_of is not None else as_of_value(run.as_of),
                               ws.config.timezone)  # fmt: skip
        t = ws.table("clusters")
        ids = t.filter(t.run_id == run.run_id, t.cluster == int(number)).select("customer_id")
        return ids, moment, f"cluster {number} of run {run.run_id}"
    moment = resolve_as_of(as_of, ws.config.timezone)
    return members(ws, text, moment), moment, "segment"


def _rows(expr: ir.Table) -> list[dict[str, Any]]:
    return expr.to_pyarrow().to_pylist()


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _lift(seg_share: float, all_share: float) -> float | None:
    return seg_share / all_share if all_share else None


def _over_represented(
    c: ir.Table, flag: ir.Table, size: int, total: int, min_count: int, top: int
) -> list[dict[str, Any]]:
    out = []
    j = c.left_join(flag, c.customer_id == flag._mid)
    j = j.mutate(_in=j._mid.notnull().cast("int64"))
    for col in (a for a in ATTRIBUTES if a in c.columns):
        f = j.filter(j[col].notnull())
        g = f.group_by(value=f[col]).aggregate(n_all=f.count(), n_seg=f._in.sum())
        for r in _rows(g):
            n_seg, n_all = int(r["n_seg"] or 0), int(r["n_all"])
            if n_seg < min_count:
                continue
            s, a = _share(n_seg, size), _share(n_all, total)
            out.append(
                {
                    "field": col,
                    "value": r["value"],
                    "count": n_seg,
                    "share": s,
                    "overall_count": n_all,
                    "overall_share": a,
                    "lift": _lift(s, a),
                }
            )
    out = [r for r in out if r["lift"] is not None and r["lift"] > 1.0]
    out.sort(key=lambda r: (-r["lift"], -r["count"], r["field"], str(r["value"])))
    return out[:top]


def _purchases(ws: Workspace, moment: AsOf) -> ir.Table:
    o = ws.table("orders")
    return o.filter(_upto(o.ordered_at, moment) & ~o.is_return.fill_null(False))


def _ranked(
    rows: ir.Table, key: ir.Value, flag: ir.Table, weight: str | None, top: int
) -> list[dict[str, Any]]:
    """Per value of ``key``: members' share (of rows or of ``weight``) vs everyone's, lift."""
    rows = rows.mutate(_key=key, _w=rows[weight].fill_null(0) if weight else ibis.literal(1.0))
    j = rows.left_join(flag, rows.customer_id == flag._mid)
    j = j.filter(j._key.notnull())
    g = j.group_by(value=j._key).aggregate(
        seg=j._w.sum(where=j._mid.notnull()).fill_null(0), all=j._w.sum().fill_null(0)
    )
    found = _rows(g)
    seg_total = sum(float(r["seg"]) for r in found)
    all_total = sum(float(r["all"]) for r in found)
    out = []
    for r in found:
        s, a = _share(float(r["seg"]), seg_total), _share(float(r["all"]), all_total)
        if r["seg"]:
            out.append({"value": r["value"], "amount": float(r["seg"]), "share": s,
                        "overall_share": a, "lift": _lift(s, a)})  # fmt: skip
    out.sort(key=lambda r: (-r["amount"], str(r["value"])))
    return out[:top]


def persona(
    ws: Workspace,
    segment_or_rule: str,
    as_of: object = None,
    *,
    min_count: int = 5,
    top: int = 5,
) -> dict[str, Any]:
    """The persona of a stored segment, a rule, or ``cluster:N`` (latest cluster run).

    ``as_of`` defaults to now (for ``cluster:N``: the run's as_of). ``min_count`` is the
    support an attribute value needs to be reported as over-represented. Returns a
    JSON-ready dict; :func:`persona_text` and :func:`persona_markdown` render it.
    """
    if min_count < 1:
        raise InputError(f"min_count = {min_count!r}: use a whole number from 1")
    ids, moment, kind = _members(ws, segment_or_rule, as_of)
    flag = ids.select(_mid=ids.customer_id).distinct()

    ft, feats = feature_table(ws, moment, ("rfm", "clv"))
    names = {f.name for f in feats}
    t = ft.left_join(flag, ft.customer_id == flag._mid)
    inside = t._mid.notnull()
    metrics: dict[str, ir.Value] = {
        "total": t.count(),
        "size": inside.cast("int64").sum(),
        "revenue": t.revenue.sum(where=inside),
        "revenue_all": t.revenue.sum(),
        "buyers": (inside & (t.frequency > 0)).cast("int64").sum(),
    }
    for col, out in (("recency_days", "r"), ("frequency", "f"), ("monetary", "m")):
        metrics[f"median_{out}"] = t[col].median(where=inside & (t.frequency > 0))
        metrics[f"all_median_{out}"] = t[col].median(where=t.frequency > 0)
    for col in ("clv", "churn_risk"):
        if col in names:
            metrics[f"mean_{col}"] = t[col].mean(where=inside)
            metrics[f"all_mean_{col}"] = t[col].mean()
    a = _rows(t.aggregate(**metrics))[0]
    total, size = int(a["total"]), int(a["size"] or 0)

    c = ws.table("customers")
    attributes = _over_represented(c, flag, size, total, min_count, top)

    purchases = _purchases(ws, moment)
    categories: list[dict[str, Any]] = []
    lines = ws.table("order_lines")
    if lines.limit(1).count().execute():
        p = purchases.select(_oid=purchases.order_id, customer_id=purchases.customer_id)
        lj = lines.join(p, lines.order_id == p._oid)
        categories = _ranked(lj, lj.category, flag, "amount", top)
    channels = _ranked(purchases, purchases.channel, flag, None, top)
    weekday = _ranked(purchases, purchases.ordered_at.day_of_week.index(), flag, None, 7)
    hour = _ranked(purchases, purchases.ordered_at.hour(), flag, None, 24)

    ev = _event_window(ws, moment)
    ev = ev.filter(ev.type.notnull()).select("customer_id", "type").distinct()
    events = []
    for r in _ranked(ev, ev.type, flag, None, top):
        # here shares are of customer-type pairs; report the share of members instead
        events.append({"value": r["value"], "customers": int(r["amount"])})
    if events:
        everyone = ev.group_by("type").aggregate(n=ev.count())
        counts = {x["type"]: int(x["n"]) for x in _rows(everyone)}
        for e in events:
            e["share"] = _share(e["customers"], size)
            e["overall_share"] = _share(counts.get(e["value"], 0), total)
            e["lift"] = _lift(e["share"], e["overall_share"])

    def num(key: str) -> float | None:
        v = a.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    result: dict[str, Any] = {
        "target": segment_or_rule,
        "kind": kind,
        "as_of": moment.label.isoformat(),
        "size": size,
        "customers": total,
        "share": _share(size, total),
        "buyers": int(a["buyers"] or 0),
        "revenue": num("revenue") or 0.0,
        "revenue_share": _share(num("revenue") or 0.0, num("revenue_all") or 0.0),
        "median": {
            "recency_days": num("median_r"),
            "frequency": num("median_f"),
            "monetary": num("median_m"),
        },  # fmt: skip
        "overall_median": {
            "recency_days": num("all_median_r"),
            "frequency": num("all_median_f"),
            "monetary": num("all_median_m"),
        },  # fmt: skip
        "clv": num("mean_clv"),
        "overall_clv": num("all_mean_clv"),
        "churn_risk": num("mean_churn_risk"),
        "overall_churn_risk": num("all_mean_churn_risk"),
        "attributes": attributes,
        "categories": categories,
        "events": events,
        "event_window_days": EVENT_WINDOW_DAYS,
        "channel": channels[0] if channels else None,
        "channels": channels,
        "weekday": _day(weekday[0]) if weekday else None,
        "hour": hour[0] if hour else None,
    }
    result.update(_words(result))
    return result


def _day(row: dict[str, Any]) -> dict[str, Any]:
    i = int(row["value"])
    return {**row, "value": i, "zh": WEEKDAYS_ZH[i], "en": WEEKDAYS_EN[i]}


# --- the generated name and description ------------------------------------------------------


def _activity(recency: float | None) -> tuple[str, str]:
    if recency is None:
        return "潜在", "Prospective"
    if recency <= 30:
        return "活跃", "Active"
    if recency <= 90:
        return "近期", "Recent"
    if recency <= 180:
        return "降温", "Cooling"
    return "沉睡", "Dormant"


def _value(m: float | None, overall: float | None) -> tuple[str, str]:
    if m is None or not overall:
        return "", ""
    ratio = m / overall
    if ratio >= 1.5:
        return "高价值", "high-value"
    if ratio <= 2 / 3:
        return "低价值", "low-value"
    return "中等价值", "mid-value"


def _money(x: float | None) -> str:
    return "-" if x is None else f"¥{x:,.0f}"


def _words(p: dict[str, Any]) -> dict[str, Any]:
    """Name and description from fixed templates: same figures, same words."""
    med, overall = p["median"], p["overall_median"]
    act_zh, act_en = _activity(med["recency_days"])
    val_zh, val_en = _value(med["monetary"], overall["monetary"])
    top = p["attributes"][0] if p["attributes"] and p["attributes"][0]["lift"] >= 1.2 else None
    if p["buyers"] == 0:
        name_zh, name_en = "潜在客户", "Prospects"
    else:
        name_zh = f"{act_zh}{val_zh}客户"
        name_en = f"{act_en} {val_en} customers".replace("  ", " ")
    if top is not None:
        name_zh = f"{top['value']}·{name_zh}"
        name_en = f"{name_en} ({top['field']} {top['value']})"

    zh = [
        f"该客群共 {p['size']:,} 位客户，占全部客户的 {p['share']:.1%}，"
        f"贡献 {p['revenue_share']:.1%} 的销售额。"
    ]
    en = [
        f"{p['size']:,} customers ({p['share']:.1%} of all) bringing "
        f"{p['revenue_share']:.1%} of revenue."
    ]
    if p["buyers"]:
        r, f, m = med["recency_days"], med["frequency"], med["monetary"]
        zh.append(
            f"购买过的成员中位数：距上次购买 {r:.0f} 天、{f:.0f} 笔订单、累计消费 {_money(m)}"
            f"（全体：{overall['recency_days']:.0f} 天、{overall['frequency']:.0f} 笔、"
            f"{_money(overall['monetary'])}）。"
        )
        en.append(
            f"Among buyers, the median member last ordered {r:.0f} days ago, placed {f:.0f} "
            f"orders and spent {_money(m)} (everyone: {overall['recency_days']:.0f} days, "
            f"{overall['frequency']:.0f} orders, {_money(overall['monetary'])})."
        )
    else:
        zh.append("成员尚未购买。")
        en.append("No member has bought yet.")
    if p["attributes"]:
        parts_zh = "、".join(
            f"{FIELD_ZH.get(x['field'], x['field'])}为{x['value']}（{x['lift']:.1f} 倍）"
            for x in p["attributes"][:3]
        )
        parts_en = ", ".join(
            f"{x['field']} {x['value']} ({x['lift']:.1f}x)" for x in p["attributes"][:3]
        )
        zh.append(f"相对全体客户明显偏多的特征：{parts_zh}。")
        en.append(f"Over-represented compared with all customers: {parts_en}.")
    if p["categories"]:
        cats = [str(x["value"]) for x in p["categories"][:3]]
        zh.append(f"主要购买品类：{'、'.join(cats)}。")
        en.append(f"They buy mostly {', '.join(cats)}.")
    if p["channel"] and p["weekday"] and p["hour"]:
        ch, wd, hr = p["channel"]["value"], p["weekday"], int(p["hour"]["value"])
        zh.append(f"偏好通过 {ch} 下单，下单最多在{wd['zh']} {hr}点。")
        en.append(f"They prefer ordering via {ch}, most often on {wd['en']} around {hr}:00.")
    if p["clv"] is not None:
        zh.append(f"平均 CLV {_money(p['clv'])}（全体 {_money(p['overall_clv'])}）。")
        en.append(f"Mean CLV {_money(p['clv'])} (everyone {_money(p['overall_clv'])}).")
    if p["churn_risk"] is not None:
        zh.append(f"平均流失风险 {p['churn_risk']:.0%}（全体 {p['overall_churn_risk']:.0%}）。")
        en.append(
            f"Mean churn risk {p['churn_risk']:.0%} (everyone {p['overall_churn_risk']:.0%})."
        )
    return {
        "name_zh": name_zh,
        "name_en": name_en,
        "description_zh": "".join(zh),
        "description_en": " ".join(en),
    }


# --- rendering ---------------------------------------------------------------------------------


def _fmt_lift(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def persona_text(p: dict[str, Any]) -> str:
    """Plain text for a terminal: name, description in both languages, the figures."""
    lines = [
        f"{p['name_zh']} / {p['name_en']}",
        "",
        p["description_zh"],
        "",
        p["description_en"],
        "",
        f"size {p['size']:,} of {p['customers']:,} ({p['share']:.1%}); "
        f"revenue share {p['revenue_share']:.1%}; as_of {p['as_of']}",
    ]
    if p["attributes"]:
        lines.append("over-represented (lift = share here / share overall):")
        for x in p["attributes"]:
            lines.append(
                f"  {x['field']} = {x['value']}: {x['count']:,} ({x['share']:.1%} vs "
                f"{x['overall_share']:.1%}), lift {_fmt_lift(x['lift'])}"
            )
    for key, title in (("categories", "top categories"), ("events", "top event types")):
        if p[key]:
            lines.append(f"{title}:")
            for x in p[key]:
                lines.append(
                    f"  {x['value']}: {x['share']:.1%} (overall {x['overall_share']:.1%}), "
                    f"lift {_fmt_lift(x['lift'])}"
                )
    return "\n".join(lines) + "\n"


def persona_markdown(p: dict[str, Any]) -> str:
    """Markdown for reports and the dashboard card."""
    out = [
        f"## {p['name_zh']} / {p['name_en']}",
        "",
        p["description_zh"],
        "",
        p["description_en"],
        "",
        "| figure | value |",
        "|---|---|",
        f"| customers | {p['size']:,} ({p['share']:.1%}) |",
        f"| revenue share | {p['revenue_share']:.1%} |",
    ]
    med = p["median"]
    if p["buyers"]:
        out.append(
            f"| median R / F / M | {med['recency_days']:.0f} days / "
            f"{med['frequency']:.0f} / {_money(med['monetary'])} |"
        )
    if p["clv"] is not None:
        out.append(f"| mean CLV | {_money(p['clv'])} |")
    if p["churn_risk"] is not None:
        out.append(f"| mean churn risk | {p['churn_risk']:.1%} |")
    if p["attributes"]:
        out += ["", "| attribute | value | members | share | overall | lift |",
                "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for x in p["attributes"]:
            out.append(
                f"| {x['field']} | {x['value']} | {x['count']:,} | {x['share']:.1%} | "
                f"{x['overall_share']:.1%} | {_fmt_lift(x['lift'])} |"
            )
    for key, title in (("categories", "category"), ("events", "event type")):
        if p[key]:
            out += ["", f"| {title} | share | overall | lift |", "|---|---:|---:|---:|"]
            for x in p[key]:
                out.append(
                    f"| {x['value']} | {x['share']:.1%} | {x['overall_share']:.1%} | "
                    f"{_fmt_lift(x['lift'])} |"
                )
    return "\n".join(out) + "\n"
