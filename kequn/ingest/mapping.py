"""Header → field mapping: common English and Chinese headers recognised automatically.

Headers are compared after normalisation (Unicode NFKC, lower case, without spaces,
punctuation and a trailing unit in brackets), so ``Customer ID``, ``customer_id`` and
``客户ID`` all land on ``customer_id``. Users add or override mappings with
``--map SOURCE=FIELD`` or the ``[import.map]`` table of ``kequn.toml``.
"""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from kequn.errors import MappingError

KINDS = ("customers", "orders", "events")

# Each field: its aliases (already normalised) and a short description for messages.
_CUSTOMER_ID = (
    "customerid custid customer customerno customernumber customercode clientid client "
    "userid user memberid member memberno membernumber buyerid 客户id 客户编号 客户号 "
    "客户代码 会员id 会员编号 会员号 会员卡号 用户id 用户编号 买家id 顾客id 顾客编号"
)
_COMMON = {
    "customer_id": _CUSTOMER_ID,
    "email": "email emailaddress mail e邮箱 邮箱 电子邮箱 电子邮件 邮件地址",
    "phone": (
        "phone mobile phonenumber mobilephone mobilenumber tel telephone cellphone cell "
        "手机 手机号 手机号码 电话 联系电话 联系方式 移动电话"
    ),
    "channel": "channel source 渠道 来源 来源渠道 注册渠道 下单渠道 平台 渠道来源",
}
ALIASES: dict[str, dict[str, str]] = {
    "customers": {
        **_COMMON,
        "customer_id": _CUSTOMER_ID + " id 编号",
        "name": "name fullname customername 姓名 客户名称 客户姓名 名字 会员姓名 会员名称",
        "name_en": "nameen englishname 英文名 英文姓名",
        "gender": "gender sex 性别",
        "birth_date": "birthdate birthday dob dateofbirth 生日 出生日期",
        "age_band": "ageband agegroup agerange 年龄段 年龄层",
        "city": "city 城市 所在城市 所在地",
        "province": "province state region 省份 省 所在省份 地区",
        "created_at": (
            "createdat signupdate signedupat registeredat registrationdate joindate "
            "joinedat firstseen 注册时间 注册日期 开卡时间 开卡日期 入会时间 入会日期 创建时间"
        ),
    },
    "orders": {
        **_COMMON,
        "order_id": (
            "orderid orderno ordernumber invoiceno invoice invoiceid invoicenumber "
            "transactionid txnid 订单号 订单编号 订单id 单号 交易号 交易单号 流水号 发票号"
        ),
        "ordered_at": (
            "orderedat orderdate ordertime invoicedate date datetime purchasedate "
            "purchasedat transactiondate paidat paymentdate 下单时间 订单日期 下单日期 "
            "订单时间 交易时间 交易日期 购买时间 购买日期 支付时间 付款时间 日期 时间"
        ),
        "amount": (
            "amount total totalamount ordertotal orderamount revenue sales value "
            "dollarvalue payment paid paidamount 金额 实付金额 订单金额 支付金额 付款金额 "
            "总金额 销售额 实收金额 成交金额 应付金额"
        ),
        "quantity": "quantity qty numberofcds units 数量 购买数量 件数 商品数量",
        "unit_price": "unitprice price 单价 商品单价 价格 销售单价",
        "status": "status orderstatus 订单状态 状态 交易状态",
        "product_id": "stockcode sku productid itemid productcode 商品id 商品编号 商品编码 货号",
        "product_name": "description productname itemname product 商品名称 商品名 品名 商品",
        "category": "category productcategory 品类 类目 商品类目 分类 商品分类",
    },
    "events": {
        **_COMMON,
        "event_id": "eventid id 事件id 事件编号",
        "occurred_at": (
            "occurredat timestamp eventtime time datetime date createdat 发生时间 事件时间 "
            "时间 日期 行为时间"
        ),
        "type": "type eventtype event action eventname 事件类型 行为类型 行为 事件",
        "properties": "properties props attributes params 属性 事件属性 参数",
    },
}
ALIASES = {kind: {f: a.split() for f, a in fields.items()} for kind, fields in ALIASES.items()}

DESCRIPTIONS = {
    "customer_id": "customer id (客户ID)",
    "order_id": "order id (订单号)",
    "ordered_at": "order date (下单时间)",
    "amount": "amount (金额)",
    "occurred_at": "event time (发生时间)",
    "type": "event type (事件类型)",
}

# Fields a file must provide (one alternative group per list entry).
REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "customers": [("customer_id", "email", "phone")],
    "orders": [("customer_id",), ("ordered_at",), ("amount", "unit_price")],
    "events": [("customer_id",), ("occurred_at",), ("type",)],
}

_UNIT = re.compile(r"[（(\[【].*?[)）\]】]$")
_PUNCT = re.compile(r"[\s_\-./:：#·]+")


def normalise(header: str) -> str:
    text = unicodedata.normalize("NFKC", str(header)).strip().lower()
    text = _UNIT.sub("", text)
    return _PUNCT.sub("", text)


@dataclass(frozen=True)
class Mapping:
    """Which header feeds which field, and which headers nothing uses."""

    fields: dict[str, str]  # field -> header
    unused: list[str]


def fields_of(kind: str) -> list[str]:
    return list(ALIASES[kind])


def parse_map_options(options: list[str] | None) -> dict[str, str]:
    """``["订单号=order_id", ...]`` → ``{"订单号": "order_id"}``."""
    result: dict[str, str] = {}
    for option in options or []:
        source, sep, target = option.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise MappingError(f"--map {option!r}: write it as SOURCE_COLUMN=FIELD")
        result[source.strip()] = target.strip()
    return result


def map_columns(
    kind: str,
    headers: list[str],
    explicit: dict[str, str] | None = None,
    configured: dict[str, str] | None = None,
    *,
    source_name: str = "file",
) -> Mapping:
    """Map a file's headers to fields: explicit ``--map`` first, config next, aliases last."""
    valid = fields_of(kind)
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    for source, target in (explicit or {}).items():
        if target not in valid and target != "ignore":
            close = difflib.get_close_matches(target, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise MappingError(
                f"--map {source}={target}: {target!r} is not a {kind} field{hint} "
                f"(fields: {', '.join(valid)}, or 'ignore')"
            )
        if source not in headers:
            close = difflib.get_close_matches(source, headers, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise MappingError(
                f"--map {source}={target}: {source_name} has no column {source!r}{hint} "
                f"(columns: {', '.join(map(repr, headers))})"
            )
        taken.add(source)
        if target != "ignore":
            chosen[target] = source
    for source, target in (configured or {}).items():
        if source in headers and source not in taken and target in valid and target not in chosen:
            chosen[target] = source
            taken.add(source)
    by_alias = {alias: field for field, aliases in ALIASES[kind].items() for alias in aliases}
    for header in headers:
        if header in taken:
            continue
        field = by_alias.get(normalise(header))
        if field and field not in chosen:
            chosen[field] = header
            taken.add(header)
    unused = [h for h in headers if h not in taken]
    for group in REQUIRED[kind]:
        if not any(f in chosen for f in group):
            want = " or ".join(DESCRIPTIONS.get(f, f) for f in group)
            raise MappingError(
                f"{source_name}: no column found for the {kind} field {want}; "
                f"columns are {', '.join(map(repr, headers))}; "
                f"name the right one with --map COLUMN={group[0]}"
            )
    return Mapping(fields=chosen, unused=unused)


def preview_mapping(
    kind: str,
    path: str | os.PathLike,
    explicit: dict[str, str] | None = None,
    configured: dict[str, str] | None = None,
    *,
    rows: int = 10,
) -> dict[str, Any]:
    """What an import of ``path`` would map, before importing: for an upload page to show.

    The same reader and :func:`map_columns` as the import itself, so the preview cannot
    disagree with it; a mapping that misses a required field is reported in ``error``
    (with ``mapping`` holding what was found) instead of raised, so the user can fix it.
    """
    from pathlib import Path

    from kequn.ingest.readers import open_source

    if kind not in KINDS:
        raise MappingError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    src = open_source(Path(path))
    error = None
    try:
        mapping = map_columns(kind, src.headers, explicit, configured, source_name="the file")
        fields, unused = mapping.fields, mapping.unused
    except MappingError as exc:
        error = str(exc)
        partial = {k: v for k, v in (explicit or {}).items() if k in src.headers}
        by_alias = {a: f for f, aliases in ALIASES[kind].items() for a in aliases}
        fields = {}
        for header in src.headers:
            field = partial.get(header) or by_alias.get(normalise(header))
            if field and field != "ignore" and field not in fields:
                fields[field] = header
        unused = [h for h in src.headers if h not in fields.values()]
    sample: list[dict[str, Any]] = []
    for batch in src.batches(None):
        for record in batch.slice(0, rows - len(sample)).to_pylist():
            record.pop("_row", None)
            sample.append(record)
        if len(sample) >= rows:
            break
    return {
        "kind": kind,
        "format": src.format,
        "encoding": src.encoding,
        "headers": src.headers,
        "fields": fields_of(kind),
        "mapping": fields,
        "unused": unused,
        "error": error,
        "rows": sample,
    }
