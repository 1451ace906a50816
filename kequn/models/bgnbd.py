"""The BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005).

While active, a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``;
after each repeat purchase she drops out for good with probability ``p ~ Beta(a, b)``. Only
``frequency`` (x, repeat purchases), ``recency`` (t_x, time of the last one) and ``T`` (time
since the first purchase) enter the likelihood::

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
        * [ (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) ]

computed here as a log-sum-exp, with its exact gradient, over unique (x, t_x, T) rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from kequn.errors import InputError
from kequn.models._base import (
    RFTData,
    TransactionModel,
    check_horizon,
    check_rft,
    dot,
    index_of,
    unique_rows,
    wrap,
)


class BetaGeoModel(TransactionModel):
    """BG/NBD: Poisson purchasing, dropout after a purchase (parameters r, alpha, a, b).

    ``alpha`` is in the time unit of the data (weeks for the published CDNow figures).

    Example::

        model = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])
        model.params_   # {'r': 0.243, 'alpha': 4.414, 'a': 0.793, 'b': 2.426}
    """

    param_names = ("r", "alpha", "a", "b")
    name = "bgnbd"

    # --- likelihood -----------------------------------------------------------------------

    def _initial_params(self, data: RFTData) -> np.ndarray:
        r0, alpha0 = self._initial_rates(data)
        return np.array([r0, alpha0, 1.0, 3.0])

    def _loglik(self, params: np.ndarray, data: RFTData) -> tuple[float, np.ndarray]:
        return _loglik(params, data)

    def _loglik_rows(
        self, params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
    ) -> np.ndarray:
        r, alpha, a, b = params
        lse, _ = _row_terms(params, x, tx, big_t)
        return (
            gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b) + lse
        )

    # --- predictions ----------------------------------------------------------------------

    def conditional_probability_alive(
        self, frequency: Any, recency: Any, T: Any
    ) -> np.ndarray | pd.Series:
        """P(still active at T | x, t_x, T). Customers with no repeat purchase are alive:
        in the BG/NBD a customer can only drop out right after a repeat purchase."""
        r, alpha, a, b = self._params_array()
        x, tx, big_t = check_rft(frequency, recency, T)
        out = _p_alive(r, alpha, a, b, x, tx, big_t)
        return wrap(out, index_of(frequency, recency, T), "p_alive")

    def conditional_expected_number_of_purchases_up_to_time(
        self, t: Any, frequency: Any, recency: Any, T: Any
    ) -> np.ndarray | pd.Series:
        """Expected repeat purchases in the next ``t`` time units given (x, t_x, T).

        Equation (10) of Fader, Hardie & Lee (2005). ``t`` is a scalar, one value per
        customer, or a column (shape ``(k, 1)``) for k horizons at once (a ``(k, n)``
        result). The Gauss hypergeometric function depends on (x, T, t) only, so it is
        evaluated once per distinct combination.
        """
        r, alpha, a, b = self._params_array()
        _check_a(a)
        x, tx, big_t = check_rft(frequency, recency, T)
        t_arr = check_horizon("t", t)
        shape = np.broadcast_shapes(t_arr.shape, x.shape)

        def first_factor(t_: np.ndarray, x_: np.ndarray, big_t_: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore", under="ignore"):
                z = t_ / (alpha + big_t_ + t_)
                front = np.exp((r + x_) * np.log1p(-z))  # ((alpha+T)/(alpha+T+t))^(r+x)
                hyp = hyp2f1(r + x_, b + x_, a + b + x_ - 1, z)
                return ((a + b + x_ - 1) / (a - 1)) * (1.0 - front * hyp)

        if t_arr.ndim == 0 or t_arr.shape[-1] == 1:  # the same horizon(s) for everyone
            ut, t_inv = np.unique(t_arr, return_inverse=True)
            (u_bigt, ux), _, inv = unique_rows([big_t, x])
            grid = first_factor(ut[:, None], ux[None, :], u_bigt[None, :])
            first = grid[t_inv.reshape(t_arr.shape)][..., inv].reshape(shape)
        else:
            t_b, x_b, big_t_b = np.broadcast_arrays(t_arr, x, big_t)
            (ut, ux, u_bigt), _, inv = unique_rows([t_b.ravel(), x_b.ravel(), big_t_b.ravel()])
            first = first_factor(ut, ux, u_bigt)[inv].reshape(shape)
        out = first * _p_alive(r, alpha, a, b, x, tx, big_t)
        return wrap(out, index_of(frequency, recency, T), "expected_purchases")

    def expected_number_of_purchases_up_to_time(self, t: Any) -> np.ndarray | float:
        """E[X(t)]: expected repeat purchases of a new customer in ``t`` time units."""
        r, alpha, a, b = self._params_array()
        _check_a(a)
        t_arr = check_horizon("t", t)
        with np.errstate(over="ignore", under="ignore"):
            z = t_arr / (alpha + t_arr)
            out = ((a + b - 1) / (a - 1)) * (
                1.0 - np.exp(r * np.log1p(-z)) * hyp2f1(r, b, a + b - 1, z)
            )
        return float(out) if np.ndim(out) == 0 else out


def _check_a(a: float) -> None:
    if abs(a - 1) < 1e-9:
        raise InputError(f"expected purchases need a != 1 (the fitted a is {a!r})")


def _row_terms(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: log[(alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x)] and the share
    ``w4`` of its second term (for ``score_samples``)."""
    r, alpha, a, b = params
    a3 = -(r + x) * np.log(alpha + big_t)
    pos = x > 0
    d = (
        np.log(a)
        - np.log(b + np.maximum(x, 1.0) - 1.0)
        + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
    )
    lse = a3 + np.where(pos, np.logaddexp(0.0, d), 0.0)
    return lse, np.where(pos, expit(d), 0.0)


def _loglik(params: np.ndarray, data: RFTData) -> tuple[float, np.ndarray]:
    """Total log-likelihood and its gradient in (r, alpha, a, b).

    Rows without a repeat purchase (``x = 0``, first in ``data``) contribute
    -r log(alpha+T) only; the others log(e^A3 + e^A4) = A3 + softplus(A4 - A3).
    """
    r, alpha, a, b = params
    ux, wx, total, n0 = data.ux, data.wx, data.total, data.n_zero
    # Terms of x alone, once per distinct x.
    psi_abx = digamma(a + b + ux)
    psi_ab = digamma(a + b)
    ll = dot(wx, gammaln(r + ux) - gammaln(r) + betaln(a, b + ux) - betaln(a, b))
    g_r = dot(wx, digamma(r + ux) - digamma(r))
    g_a = dot(wx, psi_ab - psi_abx)
    g_b = dot(wx, digamma(b + ux) - psi_abx - digamma(b) + psi_ab)
    ll += total * r * np.log(alpha)
    g_r += total * np.log(alpha)
    g_alpha = total * r / alpha

    # No repeat purchase: A3 = -r log(alpha+T).
    w0, at0 = data.w[:n0], alpha + data.T[:n0]
    log_at0 = np.log(at0)
    ll -= r * dot(w0, log_at0)
    g_r -= dot(w0, log_at0)
    g_alpha -= r * dot(w0, 1.0 / at0)

    # Repeat buyers.
    x, tx, w = data.x[n0:], data.tx[n0:], data.w[n0:]
    at, atx, bx1 = alpha + data.T[n0:], alpha + tx, b + x - 1.0
    rx = r + x
    log_at, log_atx = np.log(at), np.log(atx)
    d = np.log(a) - np.log(bx1) + rx * (log_at - log_atx)  # A4 - A3
    e = np.exp(-np.abs(d))
    softplus = np.maximum(d, 0.0) + np.log1p(e)
    w4 = np.where(d >= 0, 1.0, e) / (1.0 + e)  # expit(d), the share of the A4 term
    ww4 = w * w4
    ll += dot(w, softplus - rx * log_at)
    g_r -= dot(w, log_at) + dot(ww4, log_atx - log_at)
    g_alpha -= dot(w, rx / at) + dot(ww4, rx * (1.0 / atx - 1.0 / at))
    g_a += ww4.sum() / a
    g_b -= dot(ww4, 1.0 / bx1)
    return float(ll), np.array([g_r, g_alpha, g_a, g_b])


def _p_alive(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        d = (
            np.log(a)
            - np.log(b + np.maximum(x, 1.0) - 1.0)
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
        )
        return np.where(x > 0, expit(-d), 1.0)


def simulate_bgnbd(
    r: float,
    alpha: float,
    a: float,
    b: float,
    T: Any,
    *,
    random_state: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Draw (frequency, recency, T) for customers observed for ``T`` time units each.

    Exact and vectorised: the Poisson count K in (0, T], the number of repeat purchases
    before dropout N ~ Geometric(p) on {1, 2, ...}, x = min(K, N), and the x-th of K uniform
    arrival times ~ T * Beta(x, K - x + 1). For tests and benchmarks.
    """
    rng = np.random.default_rng(random_state)
    big_t = np.asarray(T, dtype=np.float64).ravel()
    n = len(big_t)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    k = rng.poisson(lam * big_t)
    dropout_after = rng.geometric(np.clip(p, 1e-300, 1.0))
    x = np.minimum(k, dropout_after)
    pos = x > 0
    tx = np.zeros(n)
    tx[pos] = big_t[pos] * rng.beta(x[pos], k[pos] - x[pos] + 1)
    return pd.DataFrame({"frequency": x.astype(np.int64), "recency": tx, "T": big_t})
