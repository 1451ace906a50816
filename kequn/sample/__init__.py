"""Sample data: a synthetic CRM data generator and the real CDNow purchases.

* ``generate_sample`` / ``write_sample``: customers, orders, events and loyalty members of any
  size, deterministic for a seed (see docs/sample-data.md).
* ``cdnow_orders_path`` / ``load_cdnow_orders`` / ``write_cdnow_orders``: the CDNow
  transactions of Fader, Hardie & Lee (2005), bundled in ``kequn/sample/data``.
"""

from kequn.sample.cdnow import cdnow_orders_path, load_cdnow_orders, write_cdnow_orders
from kequn.sample.generator import generate_sample, sample_metadata, write_sample

__all__ = [
    "cdnow_orders_path",
    "generate_sample",
    "load_cdnow_orders",
    "sample_metadata",
    "write_cdnow_orders",
    "write_sample",
]
