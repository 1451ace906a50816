"""From transactions to the per-customer summary the CLV models take.

The rules are the papers' (Fader, Hardie & Lee 2005), so the CDNow summary they publish is
reproduced exactly:

* time is counted in whole days; all of a customer's orders on one day are one transaction
  (worth the day's total), zero-amount orders included;
* ``frequency`` is the number of *repeat* purchase days in the calibration period (days after
  the first one);
* ``recency`` runs from the first to the last purchase day, ``T`` from the first purchase day
  to ``calibration_end``, both in days divided by the length of the time unit: a customer
  first seen on 1997-01-01 has T = 272 days = 38.86 weeks at a calibration end of
  1997-09-30 (the end day itself belongs to the calibration period);
* ``monetary_value`` is the mean of the day totals of the repeat purchase days (0 without
  one): the first purchase is left out, as in the Gamma-Gamma papers;
* with ``observation_end``, ``frequency_holdout`` counts purchase days after
  ``calibration_end`` up to and including ``observation_end``, ``duration_holdout`` is that
  period's length and ``monetary_value_holdout`` the mean day total in it.

Only customers whose first purchase falls in the calibration period are summarised.

Two entry points compute the same thing: :func:`summary_from_transactions` on arrays in
memory (pandas, vectorised) and :func:`summary_from_orders` on the canonical ``orders`` table
of a store, in SQL through Ibis (rows with ``is_return`` set are not purchases).
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import numpy as np
import pandas as pd

from kequn.errors import InputError
from kequn.models._base import DataWarning, as_float_array

#: Days per time unit.
TIME_UNITS = {"D": 1, "W": 7}

_COLUMNS = ["frequency", "recency", "T", "monetary_value"]
_HOLDOUT = ["frequency_holdout", "monetary_value_holdout", "duration_holdout"]


def summary_from_transactions(
    customer_ids: Any,
    timestamps: Any,
    amounts: Any,
    calibration_end: Any,
    observation_end: Any = None,
    freq: str = "W",
) -> pd.DataFrame:
    """Per-customer (frequency, recency, T, monetary_value) from transaction arrays.

    ``customer_ids``, ``timestamps`` (dates or datetimes; time-zone-aware values count in
    their own local date) and ``amounts`` are parallel arrays of *purchases*: leave returns
    out. ``calibration_end`` and ``observation_end`` are days, both included in their
    periods. ``freq`` is the time unit of recency and T: ``"W"`` (weeks, as in the papers) or
    ``"D"``. Returns a DataFrame indexed by customer id, sorted.
    """
    unit = _unit(freq)
    ids = _as_ids(customer_ids)
    days = _as_days("timestamps", timestamps)
    amt = as_float_array("amounts", amounts)
    if not len(ids) == len(days) == len(amt):
        raise InputError(
            f"customer_ids, timestamps and amounts must have the same length, got "
            f"{len(ids)}, {len(days)} and {len(amt)}"
        )
    if len(ids) == 0:
        raise InputError("no transactions given; there is nothing to summarise")
    cal, obs = _check_period(calibration_end, observation_end, days.min(), days.max())

    cal_ts, obs_ts = pd.Timestamp(cal), pd.Timestamp(obs) if obs is not None else None
    tx = pd.DataFrame({"customer_id": ids, "day": days, "amount": amt})
    daily = tx.groupby(["customer_id", "day"], sort=True)["amount"].sum().reset_index()
    in_cal = daily[daily["day"] <= cal_ts]
    # Sorted by (customer, day): a customer's first row is the first purchase day.
    is_first = ~in_cal["customer_id"].duplicated()
    by = in_cal.groupby("customer_id", sort=True)
    first = by["day"].min()
    n_days = by.size()
    repeat_spend = in_cal["amount"].where(~is_first, 0.0).groupby(in_cal["customer_id"]).sum()
    out = pd.DataFrame(
        {
            "frequency": (n_days - 1).astype(np.int64),
            "recency": _days(by["day"].max() - first) / unit,
            "T": _days(cal_ts - first) / unit,
            "monetary_value": _mean_or_zero(repeat_spend, n_days - 1),
        }
    )
    if obs is not None:
        in_hold = daily[(daily["day"] > cal_ts) & (daily["day"] <= obs_ts)]
        hold = in_hold.groupby("customer_id", sort=True)["amount"].agg(["size", "sum"])
        hold = hold.reindex(out.index, fill_value=0)
        out["frequency_holdout"] = hold["size"].astype(np.int64)
        out["monetary_value_holdout"] = _mean_or_zero(hold["sum"], hold["size"])
        out["duration_holdout"] = float((obs - cal).days) / unit
    out.index.name = "customer_id"
    return out


def summary_from_orders(
    orders: Any,
    calibration_end: Any,
    observation_end: Any = None,
    freq: str = "W",
) -> pd.DataFrame:
    """The same summary as :func:`summary_from_transactions`, computed in SQL through Ibis.

    ``orders`` is an Ibis table with the canonical ``orders`` columns ``customer_id``,
    ``ordered_at`` (timestamp), ``amount`` and ``is_return``; returns are left out. Only the
    per-customer result (one row per customer) leaves the database.
    """
    import ibis

    unit = _unit(freq)
    missing = {"customer_id", "ordered_at", "amount", "is_return"} - set(orders.columns)
    if missing:
        raise InputError(f"orders lacks the column(s) {sorted(missing)}; pass the orders table")
    purchases = orders.filter(~orders.is_return.fill_null(False))
    purchases = purchases.mutate(day=purchases.ordered_at.date())

    checks = purchases.aggregate(
        n=purchases.count(),
        n_null=(
            purchases.customer_id.isnull() | purchases.day.isnull() | purchases.amount.isnull()
        ).sum(),
        first_day=purchases.day.min(),
        last_day=purchases.day.max(),
    ).execute()
    if int(checks["n"].iloc[0]) == 0:
        raise InputError("orders holds no purchases; there is nothing to summarise")
    if int(checks["n_null"].iloc[0]):
        raise InputError(
            f"{int(checks['n_null'].iloc[0])} purchase(s) in orders lack customer_id, "
            "ordered_at or amount; fix or remove them before fitting CLV models"
        )
    cal, obs = _check_period(
        calibration_end,
        observation_end,
        np.datetime64(pd.Timestamp(checks["first_day"].iloc[0]).date(), "D"),
        np.datetime64(pd.Timestamp(checks["last_day"].iloc[0]).date(), "D"),
    )

    daily = purchases.group_by(["customer_id", "day"]).aggregate(total=purchases.amount.sum())
    in_cal = daily.filter(daily.day <= cal)
    in_cal = in_cal.mutate(
        rank=ibis.row_number().over(ibis.window(group_by="customer_id", order_by="day"))
    )
    per = in_cal.group_by("customer_id").aggregate(
        n_days=in_cal.count(),
        first_day=in_cal.day.min(),
        last_day=in_cal.day.max(),
        repeat_spend=in_cal.total.sum(where=in_cal["rank"] > 0),
    )
    per = per.mutate(
        recency_days=per.last_day.delta(per.first_day, unit="day"),
        T_days=ibis.literal(cal).delta(per.first_day, unit="day"),
    )
    columns = ["customer_id", "n_days", "recency_days", "T_days", "repeat_spend"]
    if obs is not None:
        in_hold = daily.filter((daily.day > cal) & (daily.day <= obs))
        hold = in_hold.group_by("customer_id").aggregate(
            hold_days=in_hold.count(), hold_spend=in_hold.total.sum()
        )
        per = per.left_join(hold, "customer_id").drop("customer_id_right")
        columns += ["hold_days", "hold_spend"]
    df = per.select(columns).order_by("customer_id").execute()

    n_days = df["n_days"].astype(np.int64)
    out = pd.DataFrame(
        {
            "frequency": (n_days - 1).to_numpy(),
            "recency": df["recency_days"].to_numpy(np.float64) / unit,
            "T": df["T_days"].to_numpy(np.float64) / unit,
            "monetary_value": _mean_or_zero(
                df["repeat_spend"].fillna(0.0).to_numpy(np.float64), (n_days - 1).to_numpy()
            ),
        },
        index=pd.Index(df["customer_id"], name="customer_id"),
    )
    if obs is not None:
        hold_days = df["hold_days"].fillna(0).to_numpy(np.int64)
        out["frequency_holdout"] = hold_days
        out["monetary_value_holdout"] = _mean_or_zero(
            df["hold_spend"].fillna(0.0).to_numpy(np.float64), hold_days
        )
        out["duration_holdout"] = float((obs - cal).days) / unit
    return out


# ---------------------------------------------------------------------------------------


def _unit(freq: str) -> float:
    if freq not in TIME_UNITS:
        raise InputError(f"freq must be one of {sorted(TIME_UNITS)} (days, weeks), got {freq!r}")
    return float(TIME_UNITS[freq])


def _as_ids(values: Any) -> np.ndarray:
    ids = values.to_numpy() if isinstance(values, pd.Series | pd.Index) else np.asarray(values)
    if ids.ndim != 1:
        raise InputError(f"customer_ids must be one-dimensional, got shape {ids.shape}")
    null = pd.isna(ids)
    if null.any():
        i = int(np.flatnonzero(null)[0])
        raise InputError(f"customer_ids must not be missing; position {i} holds {ids[i]!r}")
    return ids


def _as_days(name: str, values: Any) -> np.ndarray:
    """Calendar days (datetime64[D]) of dates or datetimes; never integers, never NaT."""
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        raise InputError(
            f"{name} must be dates or datetimes, got numbers ({series.dtype}); parse them "
            "first, e.g. pd.to_datetime(values.astype(str), format='%Y%m%d')"
        )
    try:
        stamps = pd.to_datetime(series)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} must be dates or datetimes: {exc}") from None
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)  # the local calendar day
    null = stamps.isna().to_numpy()
    if null.any():
        i = int(np.flatnonzero(null)[0])
        raise InputError(f"{name} must not be missing; position {i} holds {series.iloc[i]!r}")
    return stamps.to_numpy().astype("datetime64[D]")


def _as_day(name: str, value: Any) -> dt.date:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} must be a date, got {value!r}: {exc}") from None
    if pd.isna(stamp):
        raise InputError(f"{name} must be a date, got {value!r}")
    return stamp.date()


def _check_period(
    calibration_end: Any, observation_end: Any, first: np.datetime64, last: np.datetime64
) -> tuple[dt.date, dt.date | None]:
    """The calibration end must leave customers to summarise, the holdout must hold data."""
    cal = _as_day("calibration_end", calibration_end)
    first_d, last_d = pd.Timestamp(first).date(), pd.Timestamp(last).date()
    if cal < first_d:
        raise InputError(
            f"calibration_end {cal.isoformat()!r} is before the first purchase "
            f"({first_d.isoformat()}); no customer has started yet"
        )
    if observation_end is None:
        # A few quiet days before "today" are normal; a gap longer than a month and a quarter
        # of the data's span usually means the data ends there.
        if (cal - last_d).days > max(30, (last_d - first_d).days // 4):
            warnings.warn(
                f"calibration_end {cal.isoformat()!r} is {(cal - last_d).days} days after the "
                f"last purchase in the data ({last_d.isoformat()}): if the data simply ends "
                "there, every customer will look inactive; use the last day the data covers",
                DataWarning,
                stacklevel=3,
            )
        return cal, None
    obs = _as_day("observation_end", observation_end)
    if obs <= cal:
        raise InputError(
            f"observation_end {obs.isoformat()!r} must be after calibration_end {cal.isoformat()!r}"
        )
    if cal >= last_d:
        raise InputError(
            f"calibration_end {cal.isoformat()!r} is on or after the last purchase "
            f"({last_d.isoformat()}), so the holdout period holds no data; pick an earlier "
            "calibration_end"
        )
    return cal, obs


def _days(delta: Any) -> np.ndarray:
    return np.asarray(delta, dtype="timedelta64[D]").astype(np.float64)


def _mean_or_zero(total: Any, count: Any) -> np.ndarray:
    total = np.asarray(total, dtype=np.float64)
    count = np.asarray(count, dtype=np.float64)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
