"""Import: formats, encodings, header mapping, cleaning, returns, idempotence."""

from __future__ import annotations

import json

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import rows

from kequn import EmptySource, MappingError, SourceNotFound
from kequn.ingest import import_files

ONLINE_RETAIL = """\
InvoiceNo,InvoiceDate,CustomerID,StockCode,Description,Quantity,UnitPrice
536365,12/1/2010 8:26,17850.0,85123A,WHITE HANGING HEART,6,2.55
536365,12/1/2010 8:26,17850.0,71053,WHITE METAL LANTERN,6,3.39
536365,12/1/2010 8:26,17850.0,71053,WHITE METAL LANTERN,6,3.39
536366,12/1/2010 8:28,17850,22633,HAND WARMER,6,1.85
C536379,12/1/2010 9:41,14527,D,Discount,-1,27.50
536367,12/1/2010 8:34,,84879,BIRD,32,1.69
536368,abc,13047,22960,JAM,6,4.25
536369,12/1/2010 8:35,13047,22960,JAM,6,N/A
"""


def test_gbk_csv_with_chinese_headers(ws, write):
    path = write(
        "客户.csv",
        "客户ID,姓名,性别,城市,邮箱,手机号,注册时间,会员等级\n"
        "C1,张三,男,北京,ZS@Example.com,+86 138-0013-8000,2024年1月5日,金卡\n"
        "C2,李四,女,上海,,13900139000,2024/2/1 9:30,\n",
        encoding="gbk",
    )
    report = import_files(ws, "customers", [path])
    assert report.files[0].encoding == "gb18030"
    assert report.imported == 2 and report.customers_new == 2
    got = rows(
        ws, "SELECT customer_id, name, city, created_at, attributes FROM customers ORDER BY 1"
    )
    assert [r[:3] for r in got] == [("C1", "张三", "北京"), ("C2", "李四", "上海")]
    assert str(got[0][3]) == "2024-01-05 00:00:00"
    assert str(got[1][3]) == "2024-02-01 09:30:00"
    assert json.loads(got[0][4]) == {"会员等级": "金卡"}


def test_utf8_bom_and_semicolons(ws, write):
    path = write(
        "o.csv", "\ufefforder_id;customer_id;order_date;金额\nA1;c1;2024-03-01;¥1,234.50\n"
    )
    report = import_files(ws, "orders", [path])
    assert report.files[0].encoding == "utf-8-sig"
    assert rows(ws, "SELECT order_id, amount FROM orders") == [("A1", 1234.5)]


def test_xlsx(ws, tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["订单号", "会员编号", "下单时间", "实付金额"])
    from datetime import datetime

    sheet.append(["O1", 1001, datetime(2024, 5, 1, 10, 0), 99.5])
    sheet.append(["O2", 1002, "2024-05-02", "¥20"])
    path = tmp_path / "orders.xlsx"
    book.save(path)
    report = import_files(ws, "orders", [path])
    assert report.imported == 2
    got = rows(
        ws, "SELECT order_id, customer_id, ordered_at::VARCHAR, amount FROM orders ORDER BY 1"
    )
    assert got == [
        ("O1", "1001", "2024-05-01 10:00:00", 99.5),
        ("O2", "1002", "2024-05-02 00:00:00", 20.0),
    ]


def test_parquet_keeps_types(ws, tmp_path):
    from datetime import datetime

    table = pa.table(
        {
            "order_id": ["p1", "p2"],
            "customer_id": [7, 8],
            "ordered_at": [datetime(2024, 1, 1, 12), datetime(2024, 1, 2)],
            "amount": [10.0, 20.25],
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    import_files(ws, "orders", [tmp_path / "o.parquet"])
    got = rows(
        ws, "SELECT order_id, customer_id, ordered_at::VARCHAR, amount FROM orders ORDER BY 1"
    )
    assert got == [
        ("p1", "7", "2024-01-01 12:00:00", 10.0),
        ("p2", "8", "2024-01-02 00:00:00", 20.25),
    ]


def test_bad_rows_are_quarantined_with_reasons(ws, write):
    path = write("retail.csv", ONLINE_RETAIL)
    report = import_files(ws, "orders", [path])
    assert report.rows_read == 8
    assert report.duplicates == 1
    assert report.quarantined == {
        "missing customer_id": 1,
        "unparseable ordered_at": 1,
        "unparseable unit_price": 1,
    }
    # every row is accounted for: used + duplicates + quarantined = read
    assert report.rows_used + report.duplicates + report.quarantined_total == report.rows_read
    got = rows(ws, "SELECT row_number, reason, raw FROM quarantine ORDER BY row_number")
    assert [(r[0], r[1]) for r in got] == [
        (6, "missing customer_id"),
        (7, "unparseable ordered_at"),
        (8, "unparseable unit_price"),
    ]
    assert json.loads(got[2][2])["UnitPrice"] == "N/A"  # the value as written, not lost
    assert json.loads(got[1][2])["InvoiceDate"] == "abc"


def test_order_lines_aggregate_into_orders(ws, write):
    import_files(ws, "orders", [write("retail.csv", ONLINE_RETAIL)])
    got = rows(ws, "SELECT order_id, customer_id, amount, quantity, lines FROM orders ORDER BY 1")
    assert got == [
        ("536365", "17850", 35.64, 12.0, 2),  # 6 × 2.55 + 6 × 3.39; the duplicate line dropped
        ("536366", "17850", 11.1, 6.0, 1),
        ("C536379", "14527", -27.5, -1.0, 1),
    ]
    assert rows(ws, "SELECT count(*) FROM order_lines") == [(4,)]


def test_cancellations_and_returns_are_kept_as_returns(ws, write):
    path = write(
        "o.csv",
        "订单号,客户ID,下单时间,实付金额,订单状态\n"
        "A1,u1,2024-01-01,100,已完成\n"
        "A2,u1,2024-01-02,50,已退款\n"
        "A3,u2,2024-01-03,-30,\n"
        "C9001,u2,2024-01-04,20,\n"
        "A4,u2,2024-01-05,80,cancelled\n",
    )
    report = import_files(ws, "orders", [path])
    assert report.returns == 4
    assert report.quarantined_total == 0
    got = rows(ws, "SELECT order_id, amount, is_return, status FROM orders ORDER BY 1")
    assert got == [
        ("A1", 100.0, False, "已完成"),
        ("A2", -50.0, True, "已退款"),
        ("A3", -30.0, True, "return"),
        ("A4", -80.0, True, "cancelled"),
        ("C9001", -20.0, True, "return"),
    ]


def test_file_without_order_ids_has_one_order_per_row(ws, write):
    text = "customer_id,date,amount\nx,2024-01-01,1\nx,2024-01-01,2\ny,2024-01-02,3\n"
    import_files(ws, "orders", [write("o.csv", text)])
    assert rows(ws, "SELECT count(*), sum(amount) FROM orders") == [(3, 6.0)]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-01-05", "2024-01-05 00:00:00"),
        ("2024/1/5 8:26", "2024-01-05 08:26:00"),
        ("12/1/2010 8:26", "2010-12-01 08:26:00"),
        ("2024年1月5日", "2024-01-05 00:00:00"),
        ("2024-01-05T08:26:00", "2024-01-05 08:26:00"),
        ("2024-01-05T00:30:00Z", "2024-01-05 08:30:00"),  # UTC → Asia/Shanghai
        ("19970101", "1997-01-01 00:00:00"),
    ],
)
def test_date_forms(ws, write, written, expected):
    import_files(ws, "orders", [write("o.csv", f"customer_id,date,amount\nx,{written},1\n")])
    assert rows(ws, "SELECT ordered_at::VARCHAR FROM orders") == [(expected,)]


@pytest.mark.parametrize(
    ("written", "expected"),
    [("¥1,234.50", 1234.5), ("$12", 12.0), ("12元", 12.0), ("￥0.5", 0.5), ("RMB 7", 7.0)],
)
def test_amount_forms(ws, write, written, expected):
    path = write("o.csv", f'customer_id,date,amount\nx,2024-01-01,"{written}"\n')
    import_files(ws, "orders", [path])
    assert rows(ws, "SELECT amount FROM orders") == [(expected,)]


def test_decimal_comma_from_config(ws, write):
    config = ws.path / "kequn.toml"
    config.write_text(config.read_text().replace("decimal_comma = false", "decimal_comma = true"))
    from kequn import open_workspace

    ws2 = open_workspace(ws.path)
    ws.close()
    path = write("o.csv", 'customer_id;date;amount\nx;2024-01-01;"1 234,50"\n')
    import_files(ws2, "orders", [path])
    assert rows(ws2, "SELECT amount FROM orders") == [(1234.5,)]
    ws2.close()


def test_reimport_does_not_double(ws, write):
    path = write("retail.csv", ONLINE_RETAIL)
    first = import_files(ws, "orders", [path])
    again = import_files(ws, "orders", [path])
    assert again.files[0].skipped and again.imported == 0
    # a different export holding the same orders plus one new one
    overlap = write("later.csv", ONLINE_RETAIL + "536370,12/2/2010 9:00,13047,1,X,1,5\n")
    later = import_files(ws, "orders", [overlap])
    assert later.imported == 1 and later.already_present == first.imported
    assert rows(ws, "SELECT count(*) FROM orders") == [(first.imported + 1,)]


def test_explicit_mapping_and_errors(ws, write):
    path = write("o.csv", "单据,买家,时间,钱\nA,u,2024-01-01,5\n")
    with pytest.raises(MappingError, match="no column found for the orders field customer id"):
        import_files(ws, "orders", [path])
    report = import_files(
        ws,
        "orders",
        [path],
        column_map={
            "单据": "order_id",
            "买家": "customer_id",
            "时间": "ordered_at",
            "钱": "amount",
        },
    )
    assert report.imported == 1
    with pytest.raises(MappingError, match="no column 'Foo'"):
        import_files(ws, "orders", [path], column_map={"Foo": "order_id"})
    with pytest.raises(MappingError, match="did you mean order_id"):
        import_files(ws, "orders", [path], column_map={"单据": "orderid"})


def test_missing_and_empty_files(ws, write, tmp_path):
    with pytest.raises(SourceNotFound, match="nope.csv"):
        import_files(ws, "orders", [tmp_path / "nope.csv"])
    with pytest.raises(SourceNotFound, match="no file matches"):
        import_files(ws, "orders", [str(tmp_path / "*.nothing")])
    with pytest.raises(EmptySource, match="empty"):
        import_files(ws, "orders", [write("e.csv", "")])
    with pytest.raises(EmptySource, match="no data rows"):
        import_files(ws, "orders", [write("h.csv", "customer_id,date,amount\n")])


def test_globs_import_many_files_as_one_unit(ws, write):
    write("part-1.csv", "customer_id,date,amount\na,2024-01-01,1\n")
    write("part-2.csv", "customer_id,date,amount\nb,2024-01-02,2\n")
    report = import_files(ws, "orders", [str(write("x", "").parent / "part-*.csv")])
    assert [f.rows for f in report.files] == [1, 1]
    assert rows(ws, "SELECT count(*) FROM orders") == [(2,)]
    assert rows(ws, "SELECT count(DISTINCT import_id) FROM imports") == [(1,)]


def test_events_with_properties_and_extra_columns(ws, write):
    path = write(
        "ev.csv",
        "event_id,customer_id,occurred_at,type,properties,page\n"
        'e1,u1,2024-01-01 10:00,product_view,"{""product_id"": ""P1""}",/p/1\n'
        'e2,u1,2024-01-01 10:05,add_to_cart,"{""product_id"": ""P1""}",\n'
        "e3,u1,2024-01-01 10:06,search,{broken,\n",
    )
    report = import_files(ws, "events", [path])
    assert report.imported == 2
    assert report.quarantined == {"invalid properties JSON": 1}
    got = rows(ws, "SELECT event_id, type, properties FROM events ORDER BY 1")
    assert json.loads(got[0][2]) == {"product_id": "P1", "page": "/p/1"}
    again = import_files(ws, "events", [write("ev2.csv", path.read_text() + "\n")])
    assert again.imported == 0 and again.already_present == 2


def test_keep_duplicates_for_transactions_without_ids(ws, write):
    text = "customer_id,date,amount\nx,2024-01-01,9.99\nx,2024-01-01,9.99\nx,2024-01-01,9.99\n"
    report = import_files(ws, "orders", [write("o.csv", text)], keep_duplicates=True)
    assert report.duplicates == 0 and report.imported == 3
    assert rows(ws, "SELECT count(DISTINCT order_id), sum(amount) FROM orders") == [(3, 29.97)]


def test_rows_with_the_wrong_number_of_fields_are_quarantined(ws, write):
    path = write(
        "ragged.csv",
        "order_id,customer_id,date,amount\n"
        "A1,u1,2024-01-01,5\n"
        "A2,u1,2024-01-02\n"  # a field short
        "A3,u2,2024-01-03,7,extra\n"  # a field too many
        "\n"  # empty lines are not rows
        "A4,u2,2024-01-04,x\n"  # splits fine, amount unparseable
        "A5,u3,2024-01-05,9\n",
    )
    report = import_files(ws, "orders", [path])
    assert report.rows_read == 5 and report.imported == 2
    assert report.quarantined == {
        "wrong number of fields: expected 4, got 3": 1,
        "wrong number of fields: expected 4, got 5": 1,
        "unparseable amount": 1,
    }
    got = rows(ws, "SELECT row_number, reason, raw FROM quarantine ORDER BY row_number")
    assert [(r[0], r[1][:22]) for r in got] == [
        (2, "wrong number of fields"),
        (3, "wrong number of fields"),
        (4, "unparseable amount"),
    ]
    assert json.loads(got[1][2]) == {"line": "A3,u2,2024-01-03,7,extra"}
