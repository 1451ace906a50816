"""Benchmark: import N order lines from CSV and Parquet, kequn vs the pandas route.

The pandas route is what a user would otherwise write: read_csv, drop_duplicates,
then a groupby from lines to orders. Each run happens in its own process so that peak
memory (ru_maxrss) belongs to that run alone.

    python bench/import_orders.py --lines 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "out"


def make_lines(n: int, path_csv: Path, path_parquet: Path, seed: int = 7) -> None:
    """Order lines like a shop export: ~4 lines per invoice, 1 per 10 lines of customers."""
    rng = np.random.default_rng(seed)
    invoices = np.sort(rng.integers(0, n // 4, n))
    customers = (invoices * 2654435761 % max(n // 10, 1)).astype(np.int64)
    start = np.datetime64("2023-01-01T00:00")
    minutes = (invoices * (3 * 365 * 24 * 60) // max(n // 4, 1)).astype("timedelta64[m]")
    table = pa.table(
        {
            "InvoiceNo": pa.array(np.char.add("INV", invoices.astype(str))),
            "InvoiceDate": pa.array((start + minutes).astype("datetime64[s]").astype(str)),
            "CustomerID": pa.array(customers.astype(str)),
            "StockCode": pa.array(rng.integers(10000, 99999, n).astype(str)),
            "Quantity": pa.array(rng.integers(1, 12, n)),
            "UnitPrice": pa.array(np.round(rng.gamma(2.0, 6.0, n), 2)),
        }
    )
    pacsv.write_csv(table, path_csv)
    pq.write_table(table, path_parquet)


def run_child(args: list[str]) -> dict:
    """Run this script in a child process; return its JSON result plus its peak RSS."""
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(wall, 2)
    result["load"] = round(load, 1)
    return result


def child_kequn(path: str) -> None:
    from kequn import init_workspace
    from kequn.ingest import import_files

    folder = OUT / "ws-bench"
    shutil.rmtree(folder, ignore_errors=True)
    ws = init_workspace(folder)
    t = time.perf_counter()
    report = import_files(ws, "orders", [path])
    seconds = time.perf_counter() - t
    ws.close()
    _emit(seconds, orders=report.imported, lines=report.rows_read)


def child_pandas(path: str) -> None:
    import pandas as pd

    t = time.perf_counter()
    if path.endswith(".parquet"):
        lines = pd.read_parquet(path)
    else:
        lines = pd.read_csv(path, dtype={"CustomerID": str, "StockCode": str})
    lines = lines.drop_duplicates()
    lines = lines.dropna(subset=["CustomerID"])
    lines["InvoiceDate"] = pd.to_datetime(lines["InvoiceDate"])
    lines["amount"] = lines["Quantity"] * lines["UnitPrice"]
    orders = lines.groupby("InvoiceNo").agg(
        customer_id=("CustomerID", "first"),
        ordered_at=("InvoiceDate", "min"),
        amount=("amount", "sum"),
        quantity=("Quantity", "sum"),
    )
    _emit(time.perf_counter() - t, orders=len(orders), lines=len(lines))


def _emit(seconds: float, **extra: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    # CPU seconds (all threads) change less than wall time when the machine is busy
    cpu = usage.ru_utime + usage.ru_stime
    print(
        json.dumps(
            {"seconds": round(seconds, 2), "cpu_s": round(cpu, 1), "peak_mb": round(peak_mb)}
            | extra
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "PATH"))
    args = parser.parse_args()
    if args.child:
        tool, path = args.child
        {"kequn": child_kequn, "pandas": child_pandas}[tool](path)
        return
    OUT.mkdir(exist_ok=True)
    csv_path, pq_path = OUT / f"lines-{args.lines}.csv", OUT / f"lines-{args.lines}.parquet"
    if not csv_path.exists() or not pq_path.exists():
        t = time.perf_counter()
        make_lines(args.lines, csv_path, pq_path)
        print(f"generated {args.lines:,} lines in {time.perf_counter() - t:.1f} s")
    print(
        f"{'input':<8} {'tool':<7} {'seconds':>8} {'CPU s':>6} {'peak MB':>8} {'orders':>11} "
        f"{'load':>5}"
    )
    results = {}
    for fmt, path in (("csv", csv_path), ("parquet", pq_path)):
        for tool in ("kequn", "pandas"):
            r = run_child(["--child", tool, str(path)])
            results[(fmt, tool)] = r
            print(
                f"{fmt:<8} {tool:<7} {r['seconds']:>8.2f} {r['cpu_s']:>6.1f} {r['peak_mb']:>8} "
                f"{r['orders']:>11,} "
                f"{r['load']:>5.1f}"
            )
    for fmt in ("csv", "parquet"):
        k, p = results[(fmt, "kequn")], results[(fmt, "pandas")]
        print(
            f"{fmt}: kequn is {p['seconds'] / k['seconds']:.1f}x faster, "
            f"peak memory {k['peak_mb'] / p['peak_mb']:.2f} of pandas'"
        )


if __name__ == "__main__":
    main()
