"""Synthetic CRM data at any size, the same bytes for the same seed.

``generate_sample`` returns four Arrow tables (customers, orders, events, members);
``write_sample`` writes them as the files a CRM team would really be handed: a GBK customer
list with Chinese headers, a UTF-8 shop export of order lines, an event log with JSON
properties, and a loyalty-programme export (UTF-8 with BOM) that shares some people with the
customer list. docs/sample-data.md describes every column, the distributions and the dirt.

Everything is drawn as NumPy arrays and formatted with Arrow kernels, with no Python loop per
customer or per line: a million customers (about ten million order lines) take seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kequn.errors import InputError
from kequn.sample._csv import write_csv
from kequn.sample._events import build_events
from kequn.sample._orders import build_orders, invoice_numbers
from kequn.sample._people import MEMBER_SHARE, build_people, customer_ids
from kequn.sample._process import Window, build_catalog, simulate_population, simulate_purchases

TABLES = ("customers", "orders", "events", "members")
FORMATS = ("csv", "parquet")
# table -> (CSV file name, encoding, line end): as each kind of system really exports it
CSV_FILES = {
    "customers": ("customers.csv", "gbk", "\r\n"),
    "orders": ("orders.csv", "utf-8", "\n"),
    "events": ("events.csv", "utf-8", "\n"),
    "members": ("members.csv", "utf-8-sig", "\r\n"),
}
METADATA_KEY = b"kequn.sample"
# one random stream per part, so that asking for fewer tables changes none of the others
_STREAMS = {"population": 1, "purchases": 2, "people": 3, "orders": 4, "events": 5}


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{name}={value!r} is not allowed; give a whole number >= {minimum}")
    return int(value)


def _check_tables(tables: Iterable[str]) -> list[str]:
    wanted = [tables] if isinstance(tables, str) else list(tables)
    unknown = [t for t in wanted if t not in TABLES]
    if unknown:
        raise InputError(f"unknown sample table {unknown[0]!r}; choose from {', '.join(TABLES)}")
    return [t for t in TABLES if t in wanted]


def generate_sample(
    customers: int = 2000,
    seed: int = 42,
    start: str | date = "2023-01-01",
    end: str | date = "2025-12-31",
    *,
    lines_per_customer: float = 10.0,
    members: int | None = None,
    dirt: bool = True,
    tables: Iterable[str] = TABLES,
) -> dict[str, pa.Table]:
    """Generate the sample tables for ``customers`` customers active from ``start`` to ``end``.

    ``lines_per_customer`` sets the volume (order lines per customer on average, cancellations
    included); ``members`` the number of loyalty members (default: 40% of ``customers``, 30% of
    them customers too); ``dirt=False`` leaves out the deliberate duplicates, guest orders and
    unparseable values. ``tables`` picks which tables to build; each is the same whichever
    others are asked for. Times are local (China) time without an offset.

    Each table's schema metadata (key ``kequn.sample``) holds JSON with the parameters and,
    for orders and members, the exact counts of cancellations, dirt and overlap, so that a
    test can check what an import made of them.
    """
    n = _check_int("customers", customers, 1)
    seed = _check_int("seed", seed, 0)
    n_members = round(MEMBER_SHARE * n) if members is None else _check_int("members", members, 0)
    if not isinstance(lines_per_customer, int | float) or not lines_per_customer > 0:
        raise InputError(f"lines_per_customer={lines_per_customer!r} must be a number > 0")
    wanted = _check_tables(tables)
    window = Window(start, end)

    def rng(part: str) -> np.random.Generator:
        return np.random.default_rng([seed, _STREAMS[part]])

    catalog = build_catalog()
    pop = simulate_population(rng("population"), n, window)
    purchases = simulate_purchases(rng("purchases"), pop, window, catalog, lines_per_customer)
    ids = customer_ids(n)
    inv_no = invoice_numbers(purchases)
    about = {
        "seed": seed,
        "customers": n,
        "start": str(window.first_day),
        "end": str(window.first_day + window.n_days - 1),
        "lines_per_customer": lines_per_customer,
        "dirt": dirt,
    }
    out: dict[str, pa.Table] = {}
    if "customers" in wanted or "members" in wanted:
        cents = np.where(
            purchases.line_promo,
            catalog.promo_cents[purchases.line_product],
            catalog.price_cents[purchases.line_product],
        )
        spend = np.bincount(
            purchases.inv_cust[purchases.line_inv],
            weights=cents * purchases.line_qty / 100,
            minlength=n,
        )
        people, member_table, overlap = build_people(rng("people"), pop, window, spend, n_members)
        out["customers"] = _described(people, about)
        out["members"] = _described(member_table, {**about, **overlap})
    if "orders" in wanted:
        orders, counts = build_orders(
            rng("orders"), purchases, pop, window, catalog, ids, inv_no, dirt
        )
        out["orders"] = _described(orders, {**about, **counts})
    if "events" in wanted:
        events = build_events(rng("events"), purchases, pop, window, catalog, ids, inv_no)
        out["events"] = _described(events, about)
    return {name: out[name] for name in wanted}


def _described(table: pa.Table, about: dict) -> pa.Table:
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(about, ensure_ascii=False)})


def plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary columns decoded to plain text columns (for Parquet files
    that every reader sees as plain strings); the schema metadata is kept."""
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def sample_metadata(table: pa.Table) -> dict:
    """The JSON that ``generate_sample`` stored in ``table``'s schema metadata."""
    return json.loads((table.schema.metadata or {})[METADATA_KEY])


def write_sample(
    out_dir: str | Path,
    customers: int = 2000,
    seed: int = 42,
    formats: Iterable[str] | str = ("csv",),
    start: str | date = "2023-01-01",
    end: str | date = "2025-12-31",
    *,
    lines_per_customer: float = 10.0,
    members: int | None = None,
    dirt: bool = True,
    tables: Iterable[str] = TABLES,
) -> dict[str, Path]:
    """Generate the sample (see ``generate_sample``) and write it into ``out_dir``.

    ``formats`` is ``csv``, ``parquet`` or both (a list, or text like ``"csv,parquet"``). CSV
    files are customers.csv (GBK, CRLF), orders.csv and events.csv (UTF-8), members.csv (UTF-8
    with BOM, CRLF); Parquet files hold the same tables with the same text values. A
    manifest.json lists the files, the parameters and the counts of cancellations, dirt and
    member overlap. Returns the written paths by file name; existing files are replaced.
    """
    chosen = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        bad = unknown[0] if unknown else formats
        raise InputError(f"unknown sample format {bad!r}; choose from {', '.join(FORMATS)}")
    data = generate_sample(
        customers,
        seed,
        start,
        end,
        lines_per_customer=lines_per_customer,
        members=members,
        dirt=dirt,
        tables=tables,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    files: dict[str, dict] = {}
    for name, table in data.items():
        file_name, encoding, newline = CSV_FILES[name]
        targets = []
        if "csv" in chosen:
            write_csv(table, out / file_name, encoding=encoding, newline=newline)
            targets.append((file_name, encoding))
        if "parquet" in chosen:
            parquet_name = file_name.replace(".csv", ".parquet")
            pq.write_table(plain(table), out / parquet_name)
            targets.append((parquet_name, None))
        for target, enc in targets:
            written[target] = out / target
            files[target] = {"table": name, "rows": table.num_rows, "columns": table.column_names}
            if enc:
                files[target]["encoding"] = enc
    manifest = {"generator": "kequn.sample", "files": files}
    for name, table in data.items():
        manifest[name] = sample_metadata(table)
    (out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    written["manifest.json"] = out / "manifest.json"
    return written
