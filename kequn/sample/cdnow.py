"""The CDNow purchases: a real sample to set beside the synthetic one.

The customers who first bought at the online music shop CDNow in the first quarter of 1997,
followed to the end of June 1998, as published by Fader, Hardie & Lee (2005), "Counting Your
Customers the Easy Way: An Alternative to the Pareto/NBD Model", Marketing Science 24(2); the
files are the copies the ``lifetimes`` package ships (MIT licence).

* ``master``: 69,659 transactions of 23,570 customers (``CDNOW_master.txt``);
* ``sample``: the 1/10 sample used in the papers, 6,919 transactions of 2,357 customers
  (``CDNOW_sample.txt``); its customer ids are the sample ids (1-2,357) that the published
  summary (frequency, recency, T) is keyed by.

One row is one transaction; several on one day stay separate rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kequn.errors import InputError, SourceNotFound
from kequn.sample._csv import write_csv

DATA_DIR = Path(__file__).parent / "data"
CDNOW_FILES = {"master": "CDNOW_master.txt", "sample": "CDNOW_sample.txt"}
ORDER_COLUMNS = ["customer_id", "order_date", "quantity", "amount"]


def cdnow_orders_path(which: str = "master") -> Path:
    """The bundled raw CDNow file (whitespace-separated text) for ``master`` or ``sample``."""
    if which not in CDNOW_FILES:
        raise InputError(f"which={which!r} is not a CDNow file; choose from master, sample")
    path = DATA_DIR / CDNOW_FILES[which]
    if not path.exists():
        raise SourceNotFound(f"the bundled CDNow file {str(path)!r} is missing")
    return path


def _columns(which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Customer id, date, CDs and dollars as text, one entry per transaction."""
    text = cdnow_orders_path(which).read_text(encoding="ascii")
    if which == "master":
        tokens = np.array(text.split()[4:]).reshape(-1, 4)  # after the header line
        return tokens[:, 0], tokens[:, 1], tokens[:, 2], tokens[:, 3]
    # master id, sample id, date, CDs, dollars; no header
    tokens = np.array(text.split()).reshape(-1, 5)
    return tokens[:, 1], tokens[:, 2], tokens[:, 3], tokens[:, 4]


def load_cdnow_orders(which: str = "master") -> pa.Table:
    """The CDNow transactions as a table: customer_id (int64), order_date (date32),
    quantity (int64, CDs bought) and amount (float64, US dollars)."""
    customer, day, cds, dollars = _columns(which)
    dates = pc.cast(pc.strptime(pa.array(day), format="%Y%m%d", unit="s"), pa.date32())
    return pa.table(
        [
            pa.array(customer.astype(np.int64)),
            dates,
            pa.array(cds.astype(np.int64)),
            pa.array(dollars.astype(np.float64)),
        ],
        names=ORDER_COLUMNS,
    )


def write_cdnow_orders(out_dir: str | Path, which: str = "master") -> Path:
    """Write the CDNow transactions as ``cdnow_<which>_orders.csv`` in ``out_dir``.

    Headers ``customer_id,order_date,quantity,amount``; dates as YYYY-MM-DD; the dollar amounts
    exactly as in the source text. There is no order id column, so an importer makes one order
    per row. Returns the path written.
    """
    customer, day, cds, dollars = _columns(which)
    text = pa.array(day)
    dates = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(text, 0, 4),
        pc.utf8_slice_codeunits(text, 4, 6),
        pc.utf8_slice_codeunits(text, 6, 8),
        "-",
    )
    table = pa.table(
        [
            pa.array(customer.astype(np.int64)),
            dates,
            pa.array(cds.astype(np.int64)),
            pa.array(dollars),
        ],
        names=ORDER_COLUMNS,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cdnow_{which}_orders.csv"
    write_csv(table, path)
    return path
