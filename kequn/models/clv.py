"""CLV for a workspace: fit the models on its orders, predict, store per customer.

The summary is computed in SQL from the ``orders`` table (returns left out); fitting and
prediction are vectorised NumPy. Predictions are stored in ``clv_scores`` keyed by
(customer_id, as_of, model, horizon_days) so segment rules and later runs can use them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kequn.errors import InputError
from kequn.models.bgnbd import BetaGeoModel
from kequn.models.gammagamma import GammaGammaModel
from kequn.models.paretonbd import ParetoNBDModel
from kequn.models.summary import summary_from_orders
from kequn.workspace import Workspace

TRANSACTION_MODELS = {"bgnbd": BetaGeoModel, "pareto": ParetoNBDModel}
UNIT_DAYS = {"day": 1.0, "week": 7.0}


@dataclass
class ClvFit:
    """Fitted models and the summary they were fitted on."""

    calibration_end: dt.date
    time_unit: str
    summary: pd.DataFrame
    transactions: BetaGeoModel | ParetoNBDModel | None
    spend: GammaGammaModel | None


def last_purchase_day(workspace: Workspace) -> dt.date:
    """The day of the latest purchase: the default calibration end and as_of."""
    orders = workspace.table("orders")
    last = orders.filter(~orders.is_return).ordered_at.max().execute()
    if last is None or pd.isna(last):
        raise InputError("the workspace has no purchases yet; import orders first")
    return pd.Timestamp(last).date()


def fit_clv(
    workspace: Workspace,
    *,
    model: str = "bgnbd",
    calibration_end: Any = None,
    time_unit: str = "week",
) -> ClvFit:
    """Fit a transaction model (``bgnbd``, ``pareto``) and/or Gamma-Gamma (``gamma-gamma``).

    ``model="bgnbd"`` or ``"pareto"`` fits that model *and* Gamma-Gamma (needed for CLV);
    ``"gamma-gamma"`` fits only the spend model.
    """
    if model not in (*TRANSACTION_MODELS, "gamma-gamma"):
        raise InputError(f"model {model!r}: use bgnbd, pareto or gamma-gamma")
    if time_unit not in UNIT_DAYS:
        raise InputError(f"time unit {time_unit!r}: use day or week")
    end = _day(calibration_end) if calibration_end is not None else last_purchase_day(workspace)
    summary = summary_from_orders(
        workspace.table("orders"), end, freq="W" if time_unit == "week" else "D"
    )
    transactions = None
    if model in TRANSACTION_MODELS:
        transactions = TRANSACTION_MODELS[model]().fit(
            summary["frequency"], summary["recency"], summary["T"]
        )
    # Gamma-Gamma is a model of positive spend: repeat buyers whose repeat purchases were
    # all free (CDNow has a few zero-amount orders) cannot inform it.
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    spend = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    return ClvFit(end, time_unit, summary, transactions, spend)


def holdout_check(
    workspace: Workspace,
    *,
    calibration_end: Any,
    observation_end: Any,
    model: str = "bgnbd",
    time_unit: str = "week",
) -> pd.DataFrame:
    """The paper's calibration/holdout check on the workspace's orders.

    Fits ``model`` on the orders up to ``calibration_end`` and compares its predicted
    purchases in (calibration_end, observation_end] with the actual ones, by number of
    calibration repeat purchases; correlation in ``table.attrs["correlation"]``.
    """
    from kequn.models.evaluation import calibration_holdout_table

    if model not in TRANSACTION_MODELS:
        raise InputError(f"model {model!r}: use bgnbd or pareto")
    if time_unit not in UNIT_DAYS:
        raise InputError(f"time unit {time_unit!r}: use day or week")
    summary = summary_from_orders(
        workspace.table("orders"),
        _day(calibration_end),
        _day(observation_end),
        freq="W" if time_unit == "week" else "D",
    )
    fitted = TRANSACTION_MODELS[model]().fit(summary["frequency"], summary["recency"], summary["T"])
    table = calibration_holdout_table(fitted, summary)
    table.attrs["model"] = fitted.to_dict()
    return table


def predict_clv(
    workspace: Workspace,
    *,
    as_of: Any = None,
    horizon_days: int = 90,
    model: str = "bgnbd",
    discount_rate: float = 0.0,
    margin: float = 1.0,
    save: bool = True,
) -> pd.DataFrame:
    """Per customer: expected purchases and value over the horizon, P(alive), CLV.

    The models are fitted on the orders up to ``as_of`` (default: the last purchase day).
    ``discount_rate`` is annual; CLV discounts month by month. ``margin`` multiplies spend.
    """
    if model not in TRANSACTION_MODELS:
        raise InputError(f"model {model!r}: CLV needs bgnbd or pareto")
    if not (isinstance(horizon_days, int) and horizon_days > 0):
        raise InputError(f"horizon must be a positive number of days, got {horizon_days!r}")
    fit = fit_clv(workspace, model=model, calibration_end=as_of, time_unit="week")
    s = fit.summary
    unit = UNIT_DAYS[fit.time_unit]
    horizon = horizon_days / unit
    periods = max(1, round(horizon_days / 30))
    rate = (1.0 + discount_rate) ** ((horizon_days / periods) / 365.0) - 1.0
    tm = fit.transactions
    expected = np.asarray(
        tm.conditional_expected_number_of_purchases_up_to_time(
            horizon, s["frequency"], s["recency"], s["T"]
        )
    )
    value = np.asarray(
        fit.spend.conditional_expected_average_profit(s["frequency"], s["monetary_value"])
    )
    clv = np.asarray(
        fit.spend.customer_lifetime_value(
            tm,
            s["frequency"],
            s["recency"],
            s["T"],
            s["monetary_value"],
            horizon=horizon,
            periods=periods,
            discount_rate=rate,
            margin=margin,
        )
    )
    as_of_ts = pd.Timestamp(fit.calibration_end) + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    out = pd.DataFrame(
        {
            "customer_id": s.index.astype(str),
            "expected_purchases": expected,
            "p_alive": np.asarray(
                tm.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
            ),
            "expected_value": value,
            "clv": clv,
        }
    )
    if save:
        _save(workspace, out, as_of_ts, model, horizon_days)
    return out


def _save(
    workspace: Workspace, frame: pd.DataFrame, as_of: pd.Timestamp, model: str, horizon: int
) -> None:
    n = len(frame)
    table = pa.table(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "as_of": pa.array([as_of.to_pydatetime()] * n, pa.timestamp("us")),
            "model": [model] * n,
            "horizon_days": np.full(n, horizon, dtype=np.int64),
            "expected_purchases": frame["expected_purchases"].to_numpy(),
            "p_alive": frame["p_alive"].to_numpy(),
            "expected_value": frame["expected_value"].to_numpy(),
            "clv": frame["clv"].to_numpy(),
            "computed_at": pa.array([dt.datetime.now()] * n, pa.timestamp("us")),
        }
    )
    store = workspace.store
    with store.transaction():
        store.delete("clv_scores", as_of=as_of.to_pydatetime(), model=model, horizon_days=horizon)
        store.append("clv_scores", table)


def _day(value: Any) -> dt.date:
    try:
        return pd.Timestamp(value).date()
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a date: {value!r}; write it as YYYY-MM-DD") from exc
