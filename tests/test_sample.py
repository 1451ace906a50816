"""The sample data: deterministic, realistic in shape, and dirty exactly as documented."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from kequn.errors import InputError
from kequn.sample import (
    cdnow_orders_path,
    generate_sample,
    load_cdnow_orders,
    sample_metadata,
    write_cdnow_orders,
    write_sample,
)
from kequn.sample._csv import write_csv
from kequn.sample.generator import plain

CUSTOMER_HEADERS = [
    "客户ID", "姓名", "英文名", "性别", "年龄段", "城市", "省份", "注册渠道", "邮箱", "手机号",
    "注册时间",
]  # fmt: skip
ORDER_HEADERS = [
    "InvoiceNo", "InvoiceDate", "CustomerID", "StockCode", "Description", "Category", "Quantity",
    "UnitPrice", "Channel",
]  # fmt: skip
EVENT_TYPES = {
    "page_view", "product_view", "add_to_cart", "coupon_use", "support_ticket", "referral",
    "search",
}  # fmt: skip
ENCODINGS = {"customers": "gbk", "orders": "utf-8", "events": "utf-8", "members": "utf-8-sig"}
SHOP_DATE = re.compile(r"^\d{4}/\d{1,2}/\d{1,2} \d{1,2}:\d{2}$")
PRICE = re.compile(r"^\d+\.\d{2}$")
MOBILE = re.compile(r"^1[3-9]\d{9}$")


N = 800  # customers in the shared sample: enough for the shapes, small enough to be quick


@pytest.fixture(scope="module")
def sample() -> dict:
    return generate_sample(N, seed=7)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_sample(out, customers=N, seed=7, formats="csv,parquet")
    return out


_ROWS: dict[int, tuple[object, list[dict]]] = {}


def rows(table) -> list[dict]:
    """``table.to_pylist()``, converted once per table (kept alive, so its id stays its own)."""
    if id(table) not in _ROWS:
        _ROWS[id(table)] = (table, table.to_pylist())
    return _ROWS[id(table)][1]


def read_csv(path: Path, encoding: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode(encoding), newline="")))


def shop_time(text: str) -> datetime | None:
    """The time in a shop export's ``2024/1/5 8:26``, or None when it is not one."""
    try:
        return datetime.strptime(text, "%Y/%m/%d %H:%M")
    except ValueError:
        return None


def phone_key(text: str | None) -> str | None:
    if not text:
        return None
    digits = re.sub(r"\D", "", text)
    for prefix in ("0086", "86"):
        if len(digits) == 11 + len(prefix) and digits.startswith(prefix):
            digits = digits[len(prefix) :]
    return digits


def email_key(text: str | None) -> str | None:
    return text.strip().lower() if text else None


# --- determinism and size ---------------------------------------------------------------------


def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", customers=150, seed=1, formats="csv,parquet")
    again = write_sample(tmp_path / "b", customers=150, seed=1, formats="csv,parquet")
    other = write_sample(tmp_path / "c", customers=150, seed=2, formats="csv,parquet")
    assert sorted(first) == sorted(again) == sorted(other)
    assert "manifest.json" in first and "orders.parquet" in first
    for name in first:
        assert first[name].read_bytes() == again[name].read_bytes(), name
    for name in ("customers.csv", "orders.csv", "events.csv", "members.csv"):
        assert first[name].read_bytes() != other[name].read_bytes(), name


def test_a_table_is_the_same_whichever_others_are_asked_for(sample: dict) -> None:
    alone = generate_sample(N, seed=7, tables=["orders", "events"])
    assert list(alone) == ["orders", "events"]
    assert alone["orders"].equals(sample["orders"])
    assert alone["events"].equals(sample["events"])


def test_sizes_scale_with_customers_and_volume_knob(sample: dict) -> None:
    small = generate_sample(200, seed=7)
    assert sample["customers"].num_rows == N and small["customers"].num_rows == 200
    assert sample["members"].num_rows == 0.4 * N and small["members"].num_rows == 80
    per_customer = sample["orders"].num_rows / N
    assert 8.5 < per_customer < 11.5
    assert 3 < sample["orders"].num_rows / small["orders"].num_rows < 5
    assert 2 < sample["events"].num_rows / small["events"].num_rows < 6
    light = generate_sample(
        N, seed=7, lines_per_customer=4, members=50, tables=["orders", "members"]
    )
    assert 3 < light["orders"].num_rows / N < 5
    assert light["members"].num_rows == 50


# --- customers --------------------------------------------------------------------------------


def test_customers_csv_is_gbk_with_chinese_headers(files: Path) -> None:
    raw = (files / "customers.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gbk")
    assert text.split("\r\n")[0] == ",".join(CUSTOMER_HEADERS)
    assert text.count("\r\n") == N + 1  # header + customers, Windows line ends
    assert "北京" in text and "男" in text


def test_customer_attributes_look_real(sample: dict) -> None:
    customers = rows(sample["customers"])
    assert customers[0]["客户ID"] == "C000001" and customers[-1]["客户ID"] == "C000800"
    assert {c["性别"] for c in customers} == {"男", "女"}
    assert {c["年龄段"] for c in customers} == {"18-24", "25-34", "35-44", "45-54", "55+"}
    assert len({c["注册渠道"] for c in customers}) == 6
    cities = Counter(c["城市"] for c in customers)
    assert cities.most_common(1)[0][1] > 5 * cities["拉萨"]  # weighted by size
    assert {c["省份"] for c in customers if c["城市"] == "深圳"} == {"广东省"}
    for c in customers:
        assert 2 <= len(c["姓名"]) <= 4 and re.fullmatch(r"[A-Za-z]+ [A-Za-z]+", c["英文名"])
        datetime.strptime(c["注册时间"], "%Y-%m-%d %H:%M:%S")
    emails = [c["邮箱"] for c in customers if c["邮箱"]]
    assert 0.8 < len(emails) / N < 0.95
    assert len({email_key(e) for e in emails}) == len(emails)
    phones = [c["手机号"] for c in customers if c["手机号"]]
    assert all(MOBILE.match(phone_key(p)) for p in phones)
    assert len({phone_key(p) for p in phones}) == len(phones)
    styles = {re.sub(r"\d", "9", p) for p in phones}
    assert {"99999999999", "999 9999 9999", "999-9999-9999", "+99 99999999999"} <= styles


# --- orders -----------------------------------------------------------------------------------


def test_orders_csv_is_a_utf8_shop_export(files: Path, sample: dict) -> None:
    table = read_csv(files / "orders.csv", "utf-8")
    assert table[0] == ORDER_HEADERS
    assert (files / "orders.csv").read_bytes().count(b"\r") == 0
    expected = [["" if v is None else str(v) for v in r.values()] for r in rows(sample["orders"])]
    assert table[1:] == expected
    first = dict(zip(ORDER_HEADERS, table[1], strict=True))
    assert SHOP_DATE.match(first["InvoiceDate"]) and PRICE.match(first["UnitPrice"])
    assert re.fullmatch(r"C\d{6}", first["CustomerID"])


def test_cancellations_have_c_prefix_and_negative_quantity(sample: dict) -> None:
    orders = rows(sample["orders"])
    about = sample_metadata(sample["orders"])
    returns = [r for r in orders if r["InvoiceNo"].startswith("C")]
    assert all(r["Quantity"] < 0 for r in returns)
    assert all(r["Quantity"] > 0 for r in orders if not r["InvoiceNo"].startswith("C"))
    assert len(returns) == about["cancellation_rows"]
    cancelled = {r["InvoiceNo"] for r in returns}
    assert len(cancelled) == about["cancellation_invoices"]
    assert 0.01 < len(cancelled) / about["invoices"] < 0.03
    bought = {(r["CustomerID"], r["StockCode"], r["Quantity"]) for r in orders}
    assert all((r["CustomerID"], r["StockCode"], -r["Quantity"]) in bought for r in returns)


def test_dirt_is_there_exactly_as_counted(sample: dict) -> None:
    orders = rows(sample["orders"])
    about = sample_metadata(sample["orders"])
    repeats = sum(a == b for a, b in zip(orders, orders[1:], strict=False))
    assert repeats == about["duplicate_rows"] >= 3
    assert sum(r["CustomerID"] is None for r in orders) == about["missing_customer_rows"] >= 3
    assert sum(not shop_time(r["InvoiceDate"]) for r in orders) == about["bad_date_rows"]
    assert sum(not PRICE.match(r["UnitPrice"]) for r in orders) == about["bad_price_rows"]
    assert about["bad_date_rows"] >= 3 and about["bad_price_rows"] >= 3
    assert about["rows"] == len(orders)


def test_no_dirt_when_asked(sample: dict) -> None:
    clean = generate_sample(N, seed=7, dirt=False, tables=["orders"])["orders"]
    orders = rows(clean)
    assert all(r["CustomerID"] for r in orders)
    assert all(shop_time(r["InvoiceDate"]) and PRICE.match(r["UnitPrice"]) for r in orders)
    assert not any(a == b for a, b in zip(orders, orders[1:], strict=False))
    about = sample_metadata(clean)
    assert about["duplicate_rows"] == about["bad_date_rows"] == 0


def test_purchases_show_seasonality_and_heterogeneity(sample: dict) -> None:
    invoices = {
        r["InvoiceNo"]: shop_time(r["InvoiceDate"])
        for r in rows(sample["orders"])
        if shop_time(r["InvoiceDate"]) and not r["InvoiceNo"].startswith("C")
    }
    per_day = Counter(t.date() for t in invoices.values())
    mean = len(invoices) / 1096
    double11 = [n for d, n in per_day.items() if (d.month, d.day) == (11, 11)]
    assert min(double11) > 2 * mean
    spring_festival = [
        per_day[d] for d in per_day if d.year == 2024 and d.month == 2 and d.day < 17
    ]
    assert sum(spring_festival) < 16 * mean * 0.8
    # heterogeneity: a few heavy buyers, many with one or two orders
    per_customer = Counter(r["CustomerID"] for r in rows(sample["orders"]) if r["CustomerID"])
    counts = sorted(per_customer.values())
    assert counts[-1] > 10 * counts[len(counts) // 2]


# --- events -----------------------------------------------------------------------------------


def test_events_have_json_properties_follow_purchases_and_stop_at_churn(sample: dict) -> None:
    events = rows(sample["events"])
    assert {e["type"] for e in events} == EVENT_TYPES
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert events[0]["event_id"] == "E00000001"
    for e in events:
        properties = json.loads(e["properties"])
        if e["type"] in ("product_view", "add_to_cart"):
            assert {"product_id", "category"} <= set(properties)
    registered = {c["客户ID"]: c["注册时间"].replace(" ", "T") for c in rows(sample["customers"])}
    assert all(e["occurred_at"] >= registered[e["customer_id"]] for e in events)
    # churn: of the customers who joined in 2023, many have gone quiet for the whole of 2025
    last_seen: dict[str, str] = {}
    for e in events:
        last_seen[e["customer_id"]] = e["occurred_at"]
    joined_2023 = [c for c, at in registered.items() if at < "2024"]
    quiet = [c for c in joined_2023 if last_seen.get(c, "") < "2025"]
    assert 0.3 < len(quiet) / len(joined_2023) < 0.8
    first_cart: dict[str, str] = {}
    for e in events:
        if e["type"] == "add_to_cart":
            first_cart.setdefault(e["customer_id"], e["occurred_at"])
    for r in rows(sample["orders"]):
        if r["CustomerID"] and shop_time(r["InvoiceDate"]):
            bought = shop_time(r["InvoiceDate"]).isoformat()
            assert first_cart[r["CustomerID"]] <= bought[:16] + ":59"


# --- members ----------------------------------------------------------------------------------


def test_members_overlap_customers_by_normalised_phone_or_email(sample: dict) -> None:
    customers, members = rows(sample["customers"]), rows(sample["members"])
    about = sample_metadata(sample["members"])
    by_phone = {phone_key(c["手机号"]): c["客户ID"] for c in customers if c["手机号"]}
    by_email = {email_key(c["邮箱"]): c["客户ID"] for c in customers if c["邮箱"]}
    matched = [
        m for m in members if phone_key(m["手机号"]) in by_phone or email_key(m["邮箱"]) in by_email
    ]
    assert len(matched) == about["customers_among_members"]
    assert 0.25 < len(matched) / len(members) < 0.35
    # never by the raw text: each match needs the normalisation
    raw_phones = {c["手机号"] for c in customers if c["手机号"]}
    raw_emails = {c["邮箱"] for c in customers if c["邮箱"]}
    assert not any(m["手机号"] in raw_phones or m["邮箱"] in raw_emails for m in members)
    assert about["matched_by_phone_only"] > 0 and about["matched_by_email_only"] > 0
    assert {m["会员等级"] for m in members} <= {"普通会员", "银卡会员", "金卡会员", "钻石会员"}


def test_members_csv_has_a_bom_and_chinese_headers(files: Path) -> None:
    raw = (files / "members.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw[3:].decode("utf-8").split("\r\n")[0] == "会员编号,手机号,邮箱,会员等级,积分"


# --- files ------------------------------------------------------------------------------------


def test_every_csv_parses_back_to_its_table_and_parquet_matches(files: Path, sample: dict) -> None:
    manifest = json.loads((files / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["orders"]["seed"] == 7
    for name, encoding in ENCODINGS.items():
        table = sample[name]
        parsed = read_csv(files / f"{name}.csv", encoding)
        expected = [["" if v is None else str(v) for v in r.values()] for r in rows(table)]
        assert parsed == [table.column_names, *expected], name
        assert pq.read_table(files / f"{name}.parquet").equals(plain(table)), name
        assert manifest["files"][f"{name}.csv"]["rows"] == table.num_rows
        assert manifest["files"][f"{name}.csv"]["encoding"] == encoding


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "customers=0"),
        ({"customers": 10, "seed": -1}, "seed=-1"),
        ({"customers": 10, "start": "2024-02-30"}, "start='2024-02-30'"),
        ({"customers": 10, "start": "2025-01-01", "end": "2024-01-01"}, "before start"),
        ({"customers": 10, "tables": ["orders", "invoices"]}, "'invoices'"),
        ({"customers": 10, "lines_per_customer": 0}, "lines_per_customer=0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        generate_sample(**kwargs)


def test_unknown_format_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'xlsx'"):
        write_sample(tmp_path, customers=10, formats="csv,xlsx")


# --- CDNow ------------------------------------------------------------------------------------


def test_cdnow_master_is_bundled_and_written_as_orders(tmp_path: Path) -> None:
    table = load_cdnow_orders("master")
    assert table.num_rows == 69_659
    assert pc.count_distinct(table["customer_id"]).as_py() == 23_570
    path = write_cdnow_orders(tmp_path, "master")
    written = pa_csv.read_csv(path)
    assert written.column_names == ["customer_id", "order_date", "quantity", "amount"]
    assert written.num_rows == 69_659
    assert path.read_text(encoding="ascii").splitlines()[1] == "1,1997-01-01,1,11.77"
    assert pc.sum(written["amount"]).as_py() == pytest.approx(pc.sum(table["amount"]).as_py())


def test_cdnow_sample_uses_the_sample_ids(tmp_path: Path) -> None:
    assert cdnow_orders_path("sample").name == "CDNOW_sample.txt"
    table = load_cdnow_orders("sample")
    assert table.num_rows == 6_919
    assert pc.min_max(table["customer_id"]).as_py() == {"min": 1, "max": 2_357}
    lines = read_csv(write_cdnow_orders(tmp_path, "sample"), "ascii")
    assert lines[1] == ["1", "1997-01-01", "2", "29.33"]
    with pytest.raises(InputError, match="'full'"):
        cdnow_orders_path("full")


def test_csv_writer_quotes_like_the_csv_module(tmp_path: Path) -> None:
    tricky = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\rlf", "", None, "中文, 逗号"]
    table = pa.table(
        {
            "text": pa.array(tricky),
            "coded": pa.array(tricky).dictionary_encode(),
            "number": pa.array([1, -2, None, 4, 5, 6, 7, 8]),
            "ok": pa.array(["x"] * 8),
        }
    )
    write_csv(table, tmp_path / "t.csv", encoding="gb18030", newline="\r\n")
    expected = io.StringIO(newline="")
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else v for v in row.values()])
    assert (tmp_path / "t.csv").read_bytes() == expected.getvalue().encode("gb18030")
