"""Write N synthetic order lines as CSV and Parquet, for the import benchmarks.

    python bench/gen_orders.py --lines 10000000 --out bench/out

The lines are the first N of ``kequn.sample``'s orders table (UTF-8 shop export, UCI Online
Retail columns, with its cancellations, duplicates and bad rows) for enough customers; the
same N and seed give the same bytes. The Parquet file holds the same text values as the CSV,
so both routes do the same parsing work. Import ``write_orders`` to call it from a benchmark.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from kequn.sample._csv import write_csv
from kequn.sample.generator import generate_sample, plain

LINES_PER_CUSTOMER = 10.0


def write_orders(
    lines: int,
    out_dir: str | Path,
    seed: int = 42,
    formats: tuple[str, ...] = ("csv", "parquet"),
) -> dict[str, Path]:
    """Write exactly ``lines`` order lines to ``out_dir``/orders.csv and/or orders.parquet."""
    if lines < 1:
        raise ValueError(f"lines={lines!r} must be at least 1")
    # a little more than needed, so that the first `lines` rows are there whatever the draw
    customers = max(1, math.ceil(lines / LINES_PER_CUSTOMER * 1.05) + 50)
    table = generate_sample(customers, seed, tables=["orders"])["orders"]
    if table.num_rows < lines:  # not expected; ask for more customers once
        table = generate_sample(2 * customers, seed, tables=["orders"])["orders"]
    table = table.slice(0, lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if "csv" in formats:
        write_csv(table, out / "orders.csv")
        written["csv"] = out / "orders.csv"
    if "parquet" in formats:
        pq.write_table(plain(table), out / "orders.parquet")
        written["parquet"] = out / "orders.parquet"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000_000, help="order lines to write")
    parser.add_argument("--out", default="bench/out", help="folder for orders.csv/.parquet")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--formats", default="csv,parquet", help="csv, parquet or both")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    written = write_orders(args.lines, args.out, args.seed, tuple(args.formats.split(",")))
    took = time.perf_counter() - start
    for path in written.values():
        print(f"{path}  {path.stat().st_size / 1e6:,.1f} MB")
    print(f"{args.lines:,} order lines in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
