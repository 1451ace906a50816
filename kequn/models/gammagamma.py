"""The Gamma-Gamma model of spend per transaction, and customer lifetime value.

Each transaction of a customer is worth ``z ~ Gamma(p, nu)``; across customers
``nu ~ Gamma(q, gamma)``. The mean ``zbar`` of a customer's x repeat transactions then has
the density (Fader, Hardie & Lee 2005, "RFM and CLV"; Hardie's note on the model)::

    f(zbar | x) = Gamma(px+q) / (Gamma(px) Gamma(q)) * gamma^q zbar^(px-1) x^px
                  / (gamma + x zbar)^(px+q)

The model assumes spend is independent of the purchase process, so it combines with BG/NBD or
Pareto/NBD into a CLV: expected purchases per period times expected spend, discounted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma, gammaln

from kequn.errors import InputError
from kequn.models._base import (
    BaseModel,
    TransactionModel,
    as_float_array,
    check_nonnegative,
    check_rft,
    check_same_length,
    check_weights,
    dot,
    index_of,
    subsample_rows,
    unique_rows,
    wrap,
)

#: Fewer repeat buyers than this cannot pin down three parameters.
MIN_REPEAT_BUYERS = 10


class GammaGammaModel(BaseModel):
    """Gamma-Gamma spend model (parameters p, q, gamma), fitted on the repeat buyers.

    ``fit`` takes every customer's ``frequency`` and ``monetary_value`` (the mean spend of
    the repeat purchases) and uses those with ``frequency > 0``: customers without a repeat
    purchase carry no information on spend per repeat purchase. ``gamma`` is in the currency
    of the data.
    """

    param_names = ("p", "q", "gamma")
    name = "gamma-gamma"

    def fit(self, frequency: Any, monetary_value: Any, weights: Any = None) -> GammaGammaModel:
        """Fit by maximum likelihood on the customers with ``frequency > 0``; returns ``self``."""
        x, m = _check_xm(frequency, monetary_value)
        w = check_weights(weights, len(x))
        repeat = (x > 0) & (w > 0)
        zero = repeat & (m <= 0)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise InputError(
                f"monetary_value must be > 0 for customers with repeat purchases (the model "
                f"is for positive spend); position {i} has frequency={x[i]!r} and "
                f"monetary_value={m[i]!r}. Drop those customers or fix their amounts"
            )
        n_repeat = float(w[repeat].sum())
        if n_repeat < MIN_REPEAT_BUYERS:
            raise InputError(
                f"Gamma-Gamma needs at least {MIN_REPEAT_BUYERS} customers with repeat "
                f"purchases (frequency > 0), got {n_repeat:g}; use a longer calibration period"
            )
        (um, ux), uw, _ = unique_rows([m[repeat], x[repeat]], w[repeat])
        data = _Data(ux, um, uw)
        subsample = None
        pick = subsample_rows(len(ux))
        if pick is not None:
            sub = _Data(ux[pick], um[pick], uw[pick])
            subsample = (sub, sub.total)
        self._fit_data(data, data.total, subsample)
        self.n_repeat_buyers_ = n_repeat
        return self

    def _initial_params(self, data: _Data) -> np.ndarray:
        mean = float(dot(data.w, data.m) / data.total)
        # p = 1 and q = 2 give E[zbar] = p gamma / (q - 1) = gamma.
        return np.array([1.0, 2.0, max(mean, 1e-6)])

    def _loglik(self, params: np.ndarray, data: _Data) -> tuple[float, np.ndarray]:
        p, q, gamma = params
        x, w, ux, wx = data.x, data.w, data.ux, data.wx
        px = p * x
        log_gxm = np.log(gamma + x * data.m)
        # The gamma functions depend on x alone: once per distinct x.
        pux = p * ux
        psi_pxq = digamma(pux + q)
        ll = (
            dot(wx, gammaln(pux + q) - gammaln(pux))
            + dot(w, (px - 1) * data.log_m + px * data.log_x - (px + q) * log_gxm)
            + data.total * (q * math.log(gamma) - gammaln(q))
        )
        g_p = dot(wx, ux * (psi_pxq - digamma(pux))) + dot(
            w, x * (data.log_m + data.log_x - log_gxm)
        )
        g_q = dot(wx, psi_pxq) - dot(w, log_gxm) + data.total * (math.log(gamma) - digamma(q))
        g_gamma = data.total * q / gamma - dot(w, (px + q) / (gamma + x * data.m))
        return float(ll), np.array([g_p, g_q, g_gamma])

    def log_likelihood(self, frequency: Any, monetary_value: Any) -> float:
        """Log-likelihood of the repeat buyers among the given customers."""
        params = self._params_array()
        x, m = _check_xm(frequency, monetary_value)
        keep = x > 0
        return self._loglik(params, _Data(x[keep], m[keep], np.ones(int(keep.sum()))))[0]

    def conditional_expected_average_profit(
        self, frequency: Any, monetary_value: Any
    ) -> np.ndarray | pd.Series:
        """Expected spend per transaction given a customer's x repeat purchases and mean::

            E[Z | x, zbar] = p (gamma + x zbar) / (p x + q - 1)

        a weighted mean of the population mean p gamma / (q - 1) and the customer's own
        zbar, with weight on zbar growing with x. For x = 0 it is the population mean.
        """
        p, q, gamma = self._params_array()
        x, m = _check_xm(frequency, monetary_value)
        out = p * (gamma + x * m) / (p * x + q - 1)
        return wrap(out, index_of(frequency, monetary_value), "expected_spend")

    def customer_lifetime_value(
        self,
        transaction_model: TransactionModel,
        frequency: Any,
        recency: Any,
        T: Any,
        monetary_value: Any,
        *,
        horizon: float,
        periods: int = 12,
        discount_rate: float = 0.0,
        margin: float = 1.0,
    ) -> np.ndarray | pd.Series:
        """CLV from a fitted transaction model and this spend model; see
        :func:`customer_lifetime_value`."""
        spend = np.asarray(self.conditional_expected_average_profit(frequency, monetary_value))
        out = customer_lifetime_value(
            transaction_model,
            spend,
            frequency,
            recency,
            T,
            horizon=horizon,
            periods=periods,
            discount_rate=discount_rate,
            margin=margin,
        )
        return wrap(np.asarray(out), index_of(frequency, recency, T, monetary_value), "clv")


class _Data:
    def __init__(self, x: np.ndarray, m: np.ndarray, w: np.ndarray) -> None:
        self.x, self.m, self.w = x, m, w
        self.log_x, self.log_m = np.log(x), np.log(m)
        self.ux, x_idx = np.unique(x, return_inverse=True)
        self.wx = np.bincount(x_idx, weights=w, minlength=len(self.ux))
        self.total = float(w.sum())


def _check_xm(frequency: Any, monetary_value: Any) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array("frequency", frequency)
    m = as_float_array("monetary_value", monetary_value)
    check_same_length(frequency=x, monetary_value=m)
    check_nonnegative("frequency", x)
    check_nonnegative("monetary_value", m)
    return x, m


def customer_lifetime_value(
    transaction_model: TransactionModel,
    expected_spend: Any,
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    horizon: float,
    periods: int = 12,
    discount_rate: float = 0.0,
    margin: float = 1.0,
) -> np.ndarray | pd.Series:
    """Discounted value of each customer's expected purchases over ``horizon``.

    The horizon (in the model's time unit) is cut into ``periods`` equal periods; period i
    contributes ``margin * spend * (E[Y(i h)] - E[Y((i-1) h)]) / (1 + discount_rate)^i``
    with E[Y(t)] the conditional expected purchases up to t. This is lifetimes'
    ``customer_lifetime_value`` (monthly periods, monthly rate) without its Python loop over
    periods on a DataFrame: all periods are predicted in one broadcast call.
    """
    if not (isinstance(periods, int | np.integer) and periods > 0):
        raise InputError(f"periods must be a positive integer, got {periods!r}")
    if not (np.isfinite(horizon) and horizon > 0):
        raise InputError(f"horizon must be a positive number of time units, got {horizon!r}")
    if not (np.isfinite(discount_rate) and discount_rate > -1):
        raise InputError(f"discount_rate must be > -1 (a rate per period), got {discount_rate!r}")
    if not np.isfinite(margin):
        raise InputError(f"margin must be a finite number, got {margin!r}")
    x, tx, big_t = check_rft(frequency, recency, T)
    spend = as_float_array("expected_spend", expected_spend)
    if len(spend) == 1:
        spend = np.full(len(x), spend[0])
    check_same_length(frequency=x, expected_spend=spend)
    step = horizon / periods
    times = step * np.arange(0, periods + 1)
    cumulative = np.asarray(
        transaction_model.conditional_expected_number_of_purchases_up_to_time(
            times[:, None], x, tx, big_t
        )
    ).reshape(periods + 1, len(x))
    per_period = np.diff(cumulative, axis=0)
    discount = (1.0 + discount_rate) ** -np.arange(1, periods + 1)
    out = margin * spend * np.einsum("i,ij->j", discount, per_period)
    return wrap(out, index_of(frequency, recency, T), "clv")
