"""Benchmark: a segment of 10 million members exported to a file, streamed, in bounded memory.

    .venv/bin/python bench/export.py                     # 10 M customers, CSV, Parquet, JSONL
    .venv/bin/python bench/export.py --rows 2000000      # smaller

A workspace of ``--rows`` customers is built once in ``--dir`` (``bench/out/export``) with
Arrow appends, and the segment ``all`` (rule ``true``) applied. Each export then runs in a
fresh subprocess that reports its wall time and peak resident memory (``VmHWM`` from
``/proc/self/status``: ``ru_maxrss`` would carry the parent's peak across ``exec``).
``--pandas`` adds the route before streaming (the members read into a pandas frame, then
``to_csv``) for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHILD = """
import json, sys, time
from kequn import open_workspace
from kequn.segments import export_segment

def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

started = time.perf_counter()
ws = open_workspace(sys.argv[1])
if sys.argv[3] == "pandas":
    from kequn.segments.engine import current_members
    c, ids = ws.table("customers"), current_members(ws, "all")
    frame = (c.semi_join(ids, c.customer_id == ids.customer_id)
             .select("customer_id", "name", "city", "channel", "email", "phone")
             .order_by("customer_id").to_pandas())
    frame.to_csv(sys.argv[2], index=False, encoding="utf-8-sig")
    n = len(frame)
else:
    n = export_segment(ws, "all", sys.argv[2])
ws.close()
print(json.dumps({"rows": n, "seconds": time.perf_counter() - started, "peak_mb": peak_mb()}))
"""


def build(folder: Path, n: int) -> None:
    import kequn
    from kequn.segments import Segment, apply
    from kequn.store import TABLES

    ws = kequn.init_workspace(folder)
    cities = np.array(["北京", "上海", "广州", "深圳", "杭州", "成都"])
    for start in range(0, n, 1_000_000):
        idx = np.arange(start, min(n, start + 1_000_000))
        ids = pc.binary_join_element_wise(
            "C", pc.utf8_lpad(pa.array(idx).cast(pa.string()), 8, "0"), ""
        )
        table = pa.table(
            {
                "customer_id": ids,
                "name": pc.binary_join_element_wise(
                    "客户", pa.array(idx % 9973).cast(pa.string()), ""
                ),
                "city": pa.array(cities[idx % 6]),
                "channel": pa.array(np.where(idx % 2 == 0, "shop", "app")),
                "email": pc.binary_join_element_wise(ids, "example.com", "@"),
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
    ws.con.raw_sql("CHECKPOINT")
    ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path("bench/out/export"))
    parser.add_argument("--pandas", action="store_true", help="also the pandas route")
    args = parser.parse_args()
    folder = args.dir / f"ws-{args.rows}"
    if not (folder / "kequn.toml").exists():
        started = time.perf_counter()
        build(folder, args.rows)
        print(f"built {args.rows:,} customers in {time.perf_counter() - started:.1f} s")
    routes = [("kequn", s) for s in (".csv", ".parquet", ".jsonl")]
    if args.pandas:
        routes.append(("pandas", ".csv"))
    for route, suffix in routes:
        out = args.dir / f"all-{route}{suffix}"
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder), str(out), route],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        figures = json.loads(done.stdout)
        size = out.stat().st_size / 1e6
        print(f"{route:6} {suffix:8} {figures['rows']:>12,} rows  {figures['seconds']:6.1f} s  "
              f"peak {figures['peak_mb']:6.0f} MB  file {size:,.0f} MB")  # fmt: skip
        out.unlink()


if __name__ == "__main__":
    main()
