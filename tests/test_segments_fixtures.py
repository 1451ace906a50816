"""A small hand-made workspace for the segment tests, and a check of the fixture itself.

as_of is 2024-06-30 (a day: everything dated that day counts). The data is small enough to
check every expected member by hand; comments say which row tests which edge.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from kequn import init_workspace, open_workspace
from kequn.store import CUSTOMERS, EVENTS, ORDERS

AS_OF = "2024-06-30"
ALL = [f"c{i:02d}" for i in range(1, 11)]


def _table(schema, rows: list[dict]) -> pa.Table:
    names = schema.names
    return pa.table({n: [r.get(n) for r in rows] for n in names}, schema=schema.to_pyarrow())


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


CUSTOMER_ROWS = [
    # id, name, city, gender, channel, email, created, birth, attributes
    (
        "c01",
        "张伟",
        "北京",
        "男",
        "app",
        "zw@example.com",
        "2023-01-05",
        "1990-05-01",
        {"会员等级": "金卡", "score": 88},
    ),
    ("c02", "李娜", "上海", "女", "web", "ln@example.com", "2024-06-01", "1995-07-20", {}),
    (
        "c03",
        "王芳",
        "北京",
        "女",
        "app",
        "wf@example.com",
        "2022-03-10",
        None,
        {"会员等级": "银卡"},
    ),
    ("c04", "Tom Smith", "深圳", "男", "store", None, "2024-02-29", "1980-01-01", {}),
    ("c05", "赵敏", None, "女", "app", "zm@example.org", "2024-04-01", None, {}),
    ("c06", "陈静", "广州", "女", "wechat", "cj@example.com", "2024-05-20", None, {}),
    ("c07", "刘洋", "北京", "男", "web", "ly@example.com", "2023-11-11", None, {}),
    ("c08", "周杰", "杭州", "男", "app", "zj@example.com", "2023-08-08", None, {}),
    ("c09", "孙丽", "上海", "女", "app", "sl@example.com", "2024-06-01", None, {}),
    ("c10", "吴磊", "成都", "男", "app", "wl@example.com", "2024-01-01", None, {}),
]

ORDER_ROWS = [
    # id, customer, at, amount, is_return, channel
    ("o01", "c01", "2024-06-20 10:00:00", 500.0, False, "app"),
    ("o02", "c01", "2024-06-25 09:00:00", 700.0, False, "app"),
    ("o03", "c01", "2024-01-10 12:00:00", 300.0, False, "store"),
    ("o04", "c01", "2024-07-01 10:00:00", 9999.0, False, "app"),  # after as_of: never seen
    ("o05", "c02", "2024-06-10 15:00:00", 80.0, False, "web"),
    ("o06", "c02", "2024-06-12 15:00:00", -80.0, True, "web"),  # a return
    ("o07", "c03", "2023-05-01 08:00:00", 2000.0, False, "app"),
    ("o08", "c03", "2023-12-31 23:59:00", 1500.0, False, "app"),
    ("o09", "c04", "2024-06-29 18:00:00", 150.0, False, "store"),
    ("o10", "c05", "2024-04-15 11:00:00", 60.0, False, "app"),
    ("o11", "c07", "2024-06-05 10:00:00", -50.0, True, "web"),  # only a return
    ("o12", "c08", "2024-05-31 12:00:00", 120.0, False, "app"),  # 30 days before: outside
    ("o13", "c09", "2024-06-01 00:00:00", 90.0, False, "app"),  # 29 days before: inside
]

EVENT_ROWS = [
    (
        "e01",
        "c01",
        "2024-06-28 10:00:00",
        "product_view",
        {"category": "美妆", "sku": "A1", "price": 199},
    ),
    (
        "e02",
        "c01",
        "2024-06-28 10:05:00",
        "product_view",
        {"category": "美妆", "sku": "A2", "price": 99},
    ),
    ("e03", "c01", "2024-06-29 09:00:00", "add_to_cart", {"sku": "A1"}),
    ("e04", "c02", "2024-06-15 20:00:00", "product_view", {"category": "服装", "sku": "B1"}),
    ("e05", "c02", "2024-05-01 20:00:00", "product_view", {"category": "美妆", "sku": "A1"}),
    (
        "e06",
        "c05",
        "2024-06-30 23:59:59",
        "add_to_cart",  # last second of the as_of day
        {"sku": "C1", "detail": {"color": "红"}},
    ),
    ("e07", "c05", "2024-07-01 00:00:00", "product_view", {"category": "美妆"}),  # after
    ("e08", "c10", "2024-06-20 08:00:00", "product_view", {"category": "美妆", "sku": "A1"}),
    ("e09", "c10", "2024-06-21 08:00:00", "product_view", {"category": "美妆", "sku": "A1"}),
    ("e10", "c10", "2024-06-22 08:00:00", "product_view", {"category": "美妆", "sku": "A3"}),
    ("e11", "c09", "2024-06-10 08:00:00", "login", {}),
    ("e12", "c03", "2024-06-01 08:00:00", "product_view", {"category": None}),
]


def build_workspace(path: Path):
    """Create the workspace of this module's data at ``path`` and return it (open)."""
    ws = init_workspace(path)
    customers = [
        {
            "customer_id": cid,
            "name": name,
            "city": city,
            "gender": gender,
            "channel": channel,
            "email": email,
            "created_at": _t(created),
            "birth_date": datetime.fromisoformat(birth).date() if birth else None,
            "attributes": json.dumps(attrs, ensure_ascii=False),
        }
        for cid, name, city, gender, channel, email, created, birth, attrs in CUSTOMER_ROWS
    ]
    orders = [
        {
            "order_id": oid,
            "customer_id": cid,
            "ordered_at": _t(at),
            "amount": amount,
            "quantity": 1.0,
            "lines": 1,
            "status": "returned" if ret else "paid",
            "is_return": ret,
            "channel": channel,
            "source": "test",
        }
        for oid, cid, at, amount, ret, channel in ORDER_ROWS
    ]
    events = [
        {
            "event_id": eid,
            "customer_id": cid,
            "occurred_at": _t(at),
            "type": kind,
            "properties": json.dumps(props, ensure_ascii=False),
            "source": "test",
        }
        for eid, cid, at, kind, props in EVENT_ROWS
    ]
    ws.store.append("customers", _table(CUSTOMERS, customers))
    ws.store.append("orders", _table(ORDERS, orders))
    ws.store.append("events", _table(EVENTS, events))
    return ws


_TEMPLATES: dict[Path, Path] = {}


def template(factory: pytest.TempPathFactory) -> Path:
    """The fixture workspace, built once per test run; tests copy or read it."""
    base = factory.getbasetemp()
    if base not in _TEMPLATES:
        path = factory.mktemp("segments_template") / "ws"
        build_workspace(path).close()
        _TEMPLATES[base] = path
    return _TEMPLATES[base]


def copy_workspace(factory: pytest.TempPathFactory, folder: Path):
    """A private, open copy of the fixture workspace in ``folder`` (copying takes ms)."""
    shutil.copytree(template(factory), folder / "ws")
    return open_workspace(folder / "ws")


def test_fixture_has_the_rows(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path_factory, tmp_path)
    try:
        assert ws.table("customers").count().execute() == len(ALL)
        assert ws.table("orders").count().execute() == len(ORDER_ROWS)
        assert ws.table("events").count().execute() == len(EVENT_ROWS)
    finally:
        ws.close()
