"""The CDNow data the CLV papers use, bundled in ``kequn/sample/data``.

Purchases of the cohort of 23,570 customers who first bought at CDNow in the first quarter of
1997, followed to 1998-06-30; the 1/10 sample of 2,357 customers is the one of Fader, Hardie &
Lee (2005), where the calibration period ends on 1997-09-30 (39 weeks) and the holdout period
runs 39 more weeks. Copies from the ``lifetimes`` package (MIT licence); see the README in the
data folder.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pandas as pd

#: Last day of the calibration period of the papers (included).
CDNOW_CALIBRATION_END = dt.date(1997, 9, 30)
#: Last day of the data, the end of the holdout period (included).
CDNOW_OBSERVATION_END = dt.date(1998, 6, 30)


def _data_file(name: str):
    return resources.files("kequn").joinpath("sample", "data", name)


def load_cdnow_transactions() -> pd.DataFrame:
    """The 6,919 transactions of the 1/10 sample, one row per transaction.

    Columns: ``customer_id`` (the sample id, 1–2,357, as in the published summary),
    ``master_id`` (the id in the full CDNow file), ``date``, ``quantity`` (CDs) and
    ``amount`` (dollars; 8 transactions are worth 0 and still count as purchases).
    """
    with _data_file("CDNOW_sample.txt").open("r", encoding="ascii") as fh:
        df = pd.read_csv(
            fh,
            sep=r"\s+",
            header=None,
            names=["master_id", "customer_id", "date", "quantity", "amount"],
            dtype={"master_id": str, "customer_id": "int64", "date": str, "quantity": "int64"},
        )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df[["customer_id", "master_id", "date", "quantity", "amount"]]


def load_cdnow_summary() -> pd.DataFrame:
    """The published per-customer summary of the 1/10 sample (calibration to 1997-09-30).

    Indexed by ``customer_id`` (1–2,357), with ``frequency`` (repeat purchase days),
    ``recency`` and ``T`` in weeks (two decimals, as published) and ``monetary_value`` (mean
    spend of the repeat purchase days, 0 without one).
    """
    with _data_file("cdnow_customers_summary_with_transactions.csv").open(
        "r", encoding="ascii", newline=""
    ) as fh:
        df = pd.read_csv(fh)
    df = df.rename(
        columns={
            "ID": "customer_id",
            "x": "frequency",
            "t_x": "recency",
            "zbar": "monetary_value",
        }
    )
    df["frequency"] = df["frequency"].astype("int64")
    return df.set_index("customer_id")[["frequency", "recency", "T", "monetary_value"]]
