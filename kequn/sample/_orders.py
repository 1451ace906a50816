"""The orders table: order lines as a shop back-office exports them, with deliberate dirt.

Columns follow the UCI Online Retail export (InvoiceNo, InvoiceDate, CustomerID, StockCode,
Description, Quantity, UnitPrice) with Category and Channel added and Country left out. Every
value is text as it would be in the file, except Quantity.

The dirt, injected only into purchase lines (cancellations stay clean) and disjoint, so that
each reason can be counted exactly:

* guest checkouts: whole invoices with no CustomerID (0.05% of purchase invoices);
* unparseable dates: InvoiceDate replaced by one of BAD_DATES (0.02% of lines);
* unparseable prices: UnitPrice replaced by one of BAD_PRICES (0.02% of lines);
* exact duplicates: a line written twice in a row (0.1% of lines);

each at least 3, and at most a tenth of what is there (a tiny sample stays mostly clean).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kequn.sample import _vocab as vocab
from kequn.sample._format import coded, format_cents, format_times, ints_to_text, join
from kequn.sample._process import Catalog, Population, Purchases, Window, draw

ORDER_COLUMNS = [
    "InvoiceNo", "InvoiceDate", "CustomerID", "StockCode", "Description", "Category", "Quantity",
    "UnitPrice", "Channel",
]  # fmt: skip
FIRST_INVOICE = 536365  # as in the UCI Online Retail data
BAD_DATES = ["N/A", "abc", "2024/13/45 25:61", "#VALUE!"]
BAD_PRICES = ["N/A", "abc", "#REF!", "12..50"]
GUEST_SHARE = 0.0005
BAD_DATE_SHARE = 0.0002
BAD_PRICE_SHARE = 0.0002
DUPLICATE_SHARE = 0.001
DIRT_MINIMUM = 3
SAME_CHANNEL = 0.7  # share of orders placed in the channel the customer came from


def invoice_numbers(purchases: Purchases) -> pa.Array:
    """536365, 536366, …; a cancellation's number starts with C (C536380)."""
    number = ints_to_text(FIRST_INVOICE + np.arange(purchases.n_invoices))
    cancel = pa.array(purchases.cancel_of >= 0)
    return pc.if_else(cancel, join("C", number), number)


def _dirt_count(share: float, available: int, dirt: bool) -> int:
    """``share`` of what is available, at least DIRT_MINIMUM, at most a tenth of it."""
    return min(max(DIRT_MINIMUM, round(share * available)), available // 10) if dirt else 0


def build_orders(
    rng: np.random.Generator,
    purchases: Purchases,
    pop: Population,
    window: Window,
    catalog: Catalog,
    customer_ids: pa.Array,
    inv_no: pa.Array,
    dirt: bool,
) -> tuple[pa.Table, dict[str, int]]:
    """The order lines table (text columns dictionary-encoded) and its exact counts."""
    p = purchases
    n_inv, n_lines = p.n_invoices, len(p.line_inv)
    cancel = p.cancel_of >= 0
    channel = np.where(
        rng.random(n_inv) < SAME_CHANNEL,
        pop.channel[p.inv_cust],
        draw(rng, [w for _, w in vocab.CHANNELS], n_inv),
    )
    channel[cancel] = channel[p.cancel_of[cancel]]  # a return goes back where it was bought

    # dirt: guest invoices first, then disjoint sets of clean purchase lines
    purchase_inv = np.flatnonzero(~cancel)
    guest = np.zeros(n_inv, dtype=bool)
    k_guest = _dirt_count(GUEST_SHARE, len(purchase_inv), dirt)
    guest[rng.choice(purchase_inv, k_guest, replace=False)] = True
    clean = np.flatnonzero(~cancel[p.line_inv] & ~guest[p.line_inv])
    k_date = _dirt_count(BAD_DATE_SHARE, len(clean), dirt)
    k_price = _dirt_count(BAD_PRICE_SHARE, len(clean) - k_date, dirt)
    k_dup = _dirt_count(DUPLICATE_SHARE, len(clean) - k_date - k_price, dirt)
    picked = rng.choice(clean, k_date + k_price + k_dup, replace=False)
    bad_date = np.sort(picked[:k_date])
    bad_price = np.sort(picked[k_date : k_date + k_price])
    copies = np.ones(n_lines, dtype=np.int64)
    copies[picked[k_date + k_price :]] = 2

    # each column as indices into a short list of texts; bad values appended to the list
    date_index = p.line_inv.copy()
    date_index[bad_date] = n_inv + np.arange(k_date) % len(BAD_DATES)
    dates = pa.concat_arrays(
        [format_times(p.inv_time, window.first_day, "shop"), pa.array(BAD_DATES)]
    )
    n_products = catalog.n
    price_index = p.line_product + n_products * p.line_promo
    price_index[bad_price] = 2 * n_products + np.arange(k_price) % len(BAD_PRICES)
    prices = pa.concat_arrays(
        [
            format_cents(np.concatenate([catalog.price_cents, catalog.promo_cents]).tolist()),
            pa.array(BAD_PRICES),
        ]
    )
    line_cust = p.inv_cust[p.line_inv]
    # each duplicate line right after its original, as an export glitch writes it
    rows = np.repeat(np.arange(n_lines), copies) if k_dup else slice(None)
    table = pa.table(
        [
            coded(p.line_inv[rows], inv_no, unique=True),
            coded(date_index[rows], dates),
            coded(line_cust[rows], customer_ids, null=guest[p.line_inv][rows], unique=True),
            coded(p.line_product[rows], catalog.stock_code, unique=True),
            coded(p.line_product[rows], catalog.description),
            coded(catalog.category[p.line_product[rows]], [c[0] for c in vocab.CATEGORIES]),
            pa.array(p.line_qty[rows]),
            coded(price_index[rows], prices),
            coded(channel[p.line_inv][rows], [c for c, _ in vocab.CHANNELS]),
        ],
        names=ORDER_COLUMNS,
    )
    counts = {
        "rows": table.num_rows,
        "invoices": n_inv,
        "purchase_invoices": int((~cancel).sum()),
        "cancellation_invoices": int(cancel.sum()),
        "cancellation_rows": int(cancel[p.line_inv].sum()),
        "duplicate_rows": k_dup,
        "missing_customer_invoices": k_guest,
        "missing_customer_rows": int(guest[p.line_inv].sum()),
        "bad_date_rows": k_date,
        "bad_price_rows": k_price,
    }
    return table, counts
