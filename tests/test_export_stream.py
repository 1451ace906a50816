"""Streamed exports: any number of members to CSV, JSON, Parquet or Excel in bounded memory.

The memory test builds a workspace of 1.5 million customers (more than a sort is allowed,
see ``kequn.store.SORT_ROWS``) and exports it in a fresh subprocess that reports its peak
resident memory; ``bench/export.py`` does the same for 10 million (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from server_util import Server

from kequn import init_workspace, open_workspace
from kequn.errors import InputError
from kequn.export import EXCEL_MAX_ROWS, STREAM_TYPES
from kequn.segments import Segment, apply, export_segment
from kequn.store import TABLES

ODD = '张 "伟", 北京\n二号'  # a value that needs quotes in CSV


def build(folder: Path, n: int, *, odd_every: int = 0) -> None:
    """``n`` customers C0000000… appended as Arrow, and segment ``all`` applied (rule true)."""
    ws = init_workspace(folder)
    chunk = 500_000
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        ids = pc.binary_join_element_wise(
            "C", pc.utf8_lpad(pa.array(idx).cast(pa.string()), 7, "0"), ""
        )
        names = pc.binary_join_element_wise("客户", pa.array(idx % 997).cast(pa.string()), "")
        if odd_every:
            names = pc.if_else(pa.array(idx % odd_every == 1), ODD, names)
        table = pa.table(
            {
                "customer_id": ids,
                "name": names,
                "city": pa.array(np.array(["北京", "上海", "广州"])[idx % 3]),
                "phone": pc.binary_join_element_wise(
                    "139", pa.array(10_000_000 + idx).cast(pa.string()), ""
                ),
            }
        )
        for col in TABLES["customers"].names:
            if col not in table.column_names:
                table = table.append_column(
                    col, pa.nulls(len(idx), TABLES["customers"][col].to_pyarrow())
                )
        ws.store.append("customers", table)
    apply(ws, [Segment(name="all", rule="true")], date(2024, 6, 30))
    ws.con.raw_sql("CHECKPOINT")  # else the next open replays the log (memory not ours)
    ws.close()


def expected_id(i: int) -> str:
    return f"C{i:07d}"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "ws"
    build(folder, 150_000, odd_every=50_000)
    return folder


def test_csv_json_parquet_stream_every_row(small: Path, tmp_path: Path) -> None:
    counted: list[int] = []
    progress: list[int] = []
    with open_workspace(small) as ws:
        for suffix in (".csv", ".json", ".jsonl", ".parquet"):
            out = tmp_path / f"all{suffix}"
            n = export_segment(
                ws,
                "all",
                out,
                columns=["name", "city", "phone"],
                on_count=counted.append,
                progress=progress.append,
            )
            assert n == 150_000
    assert counted == [150_000] * 4
    assert sum(progress) == 4 * 150_000 and len(progress) > 4  # batch by batch
    raw = (tmp_path / "all.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfcustomer_id,name,city,phone\n")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 150_000
    assert [r["customer_id"] for r in rows[:3]] == [expected_id(0), expected_id(1), expected_id(2)]
    assert rows[1]["name"] == ODD and rows[50_001]["name"] == ODD  # quoted, read back whole
    assert rows[2] == {"customer_id": "C0000002", "name": "客户2", "city": "广州",
                       "phone": "13910000002"}  # fmt: skip
    doc = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    assert len(doc) == 150_000 and doc[1]["name"] == ODD and doc[0]["city"] == "北京"
    lines = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 150_000 and json.loads(lines[3])["customer_id"] == expected_id(3)
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.num_rows == 150_000
    assert table.column("customer_id").to_pylist()[-1] == expected_id(149_999)


def test_unknown_type_and_column(small: Path, tmp_path: Path) -> None:
    with open_workspace(small) as ws:
        with pytest.raises(InputError, match=r"unknown file type '\.txt'.*\.jsonl"):
            export_segment(ws, "all", tmp_path / "x.txt")
        with pytest.raises(InputError, match="did you mean 'city'"):
            export_segment(ws, "all", tmp_path / "x.csv", columns=["ctiy"])
        # the stream is closed after an error: the memory limit is the database's again
        limit = ws.store.duck.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit not in ("122.0 MiB", "128.0 MiB")
    assert ".jsonl" in STREAM_TYPES


def test_http_export_streams_csv_and_json(small: Path) -> None:
    srv = Server(small)
    try:
        with srv.client() as client:
            with client.stream("POST", "/v1/segments/all/export", json={"format": "csv"}) as r:
                assert r.status_code == 200
                assert r.headers["x-kequn-rows"] == "150000"
                assert "transfer-encoding" in r.headers  # chunked: no length known upfront
                body = b"".join(r.iter_bytes())
            rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
            assert len(rows) == 150_000 and rows[1]["name"] == ODD
            assert {r["customer_id"] for r in rows} == {expected_id(i) for i in range(150_000)}
            r = client.post("/v1/segments/all/export", json={"format": "json", "columns": ["city"]})
            assert r.status_code == 200 and r.headers["x-kequn-rows"] == "150000"
            assert r.json()[4] == {"customer_id": "C0000004", "city": "上海"}
            r = client.post("/v1/segments/all/export", json={"format": "parquet"})
            assert r.status_code == 200
            assert pq.read_table(io.BytesIO(r.content)).num_rows == 150_000
    finally:
        srv.stop()


MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from kequn import open_workspace
    from kequn.segments import export_segment

    def peak_mb():
        # VmHWM: this process's own peak; ru_maxrss would keep the parent's from before exec
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    ws = open_workspace(sys.argv[1])
    ws.table("customers").count().execute()
    base = peak_mb()
    started = time.perf_counter()
    counted = []
    n = export_segment(ws, "all", sys.argv[2], on_count=counted.append)
    seconds = time.perf_counter() - started
    peak = peak_mb()
    ws.close()
    print(json.dumps({"rows": n, "counted": counted, "base_mb": base, "peak_mb": peak,
                      "seconds": seconds}))
    """
)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big") / "ws"
    build(folder, 1_500_000)
    return folder


def test_large_export_in_bounded_memory(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["rows"] == 1_500_000 and figures["counted"] == [1_500_000]
    # the whole export (1.5M rows, 70 MB of CSV) adds at most 250 MB to the process
    assert figures["peak_mb"] - figures["base_mb"] < 250, figures
    assert figures["peak_mb"] < 500, figures
    with out.open(encoding="utf-8-sig") as f:
        assert f.readline() == "customer_id,name,city,channel,email,phone\n"
        ids = {line.split(",", 1)[0] for line in f}
    assert ids == {expected_id(i) for i in range(1_500_000)}


def test_excel_refused_beyond_its_rows_before_writing(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.xlsx"
    with open_workspace(big) as ws, pytest.raises(InputError, match=r"1,500,000 rows do not fit"):
        export_segment(ws, "all", out)
    assert not out.exists() and EXCEL_MAX_ROWS < 1_500_000
