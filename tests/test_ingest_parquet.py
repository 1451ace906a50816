"""Parquet read by DuckDB itself, in parts: row numbers, reasons and progress stay exact."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import rows

from kequn.ingest import import_files, readers

# 7 lines, 3 orders; line 3 lacks its customer, line 6 has an unreadable date, line 7
# repeats line 1 exactly.
LINES = {
    "InvoiceNo": ["A1", "A1", "A2", "B1", "B1", "B2", "A1"],
    "InvoiceDate": [
        "2024-01-02 10:00:00",
        "2024-01-02 10:00:00",
        "2024-01-03 09:00:00",
        "2024/01/04 08:30",
        "2024/01/04 08:30",
        "not a date",
        "2024-01-02 10:00:00",
    ],
    "CustomerID": ["c1", "c1", None, "c2", "c2", "c3", "c1"],
    "StockCode": ["p1", "p2", "p3", "p4", "p5", "p6", "p1"],
    "Quantity": [2, 1, 5, 1, 3, 1, 2],
    "UnitPrice": [1.5, 10.0, 2.0, 4.25, 1.0, 9.0, 1.5],
}


def _write(path, row_group_size: int) -> None:
    pq.write_table(pa.table(LINES), path, row_group_size=row_group_size)


def test_parts_keep_row_numbers_and_reasons(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PART_ROWS", 2)  # 4 row groups of 2 → 4 statements
    path = tmp_path / "lines.parquet"
    _write(path, row_group_size=2)
    assert len(readers.open_source(path).parts) == 4
    seen: list[int] = []
    report = import_files(ws, "orders", [path], progress=lambda done, total: seen.append(done))
    assert report.rows_read == 7 and report.duplicates == 1
    assert report.quarantined == {"missing customer_id": 1, "unparseable ordered_at": 1}
    got = rows(ws, "SELECT row_number, reason, raw FROM quarantine ORDER BY row_number")
    assert [(r[0], r[1]) for r in got] == [
        (3, "missing customer_id"),
        (6, "unparseable ordered_at"),
    ]
    assert json.loads(got[1][2])["InvoiceDate"] == "not a date"
    assert rows(
        ws,
        "SELECT order_id, customer_id, ordered_at, amount, quantity, lines FROM orders ORDER BY 1",
    ) == [
        ("A1", "c1", datetime(2024, 1, 2, 10), 13.0, 3.0, 2),  # 2 × 1.5 + 10; line 7 dropped
        ("B1", "c2", datetime(2024, 1, 4, 8, 30), 7.25, 4.0, 2),
    ]
    assert rows(ws, "SELECT line_no, product_id FROM order_lines ORDER BY 1") == [
        (1, "p1"),
        (2, "p2"),
        (4, "p4"),
        (5, "p5"),
    ]
    size = path.stat().st_size
    assert seen == sorted(seen) and seen[-1] == size and len(set(seen)) >= 4


def test_same_result_as_arrow_batches(ws, tmp_path):
    """A column named like DuckDB's row number makes the reader fall back to Arrow."""
    plain, clash = tmp_path / "plain.parquet", tmp_path / "clash.parquet"
    _write(plain, row_group_size=3)
    pq.write_table(pa.table({**LINES, "file_row_number": ["x"] * 7}), clash)
    assert readers.open_source(plain).parts and not readers.open_source(clash).parts
    first = import_files(ws, "orders", [plain])
    orders = rows(ws, "SELECT * EXCLUDE (import_id) FROM orders ORDER BY 1")
    quarantine = rows(ws, "SELECT row_number, reason FROM quarantine ORDER BY 1")
    ws.store.duck.execute("DELETE FROM orders; DELETE FROM order_lines; DELETE FROM quarantine")
    second = import_files(ws, "orders", [clash])
    assert (first.rows_read, first.quarantined) == (second.rows_read, second.quarantined)
    assert rows(ws, "SELECT * EXCLUDE (import_id) FROM orders ORDER BY 1") == orders
    assert rows(ws, "SELECT row_number, reason FROM quarantine ORDER BY 1") == quarantine
