"""The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987).

While alive a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``; her
lifetime is exponential with rate ``mu ~ Gamma(s, beta)``. The likelihood of (x, t_x, T) is::

    L = Gamma(r+x) alpha^r beta^s / Gamma(r)
        * [ (alpha+T)^-(r+x) (beta+T)^-s  +  s * (F(t_x) - F(T)) ]

    F(t) = integral from t to infinity of (alpha+u)^-(r+x) (beta+u)^-(s+1) du

the first term for a customer alive at T, the second for one who died between t_x and T.
``F`` is a Gauss hypergeometric function (Fader, Hardie & Shang's note writes it with
2F1(r+s+x, s+1; r+s+x+1; z)); its derivatives in r and s have no closed form, so this module
sums the series of ``F`` *and* of its exact parameter derivatives together
(:func:`_beta_series`), which gives an analytic gradient without numerical differences.
``F`` depends on (x, t) only, so it is evaluated once per distinct (x, t_x) and (x, T) pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma, gammaln

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

# Series terms below this fraction of the sum are dropped.
_SERIES_TOL = 1e-16
# Past this many terms (z within ~1e-6 of 1: |alpha - beta| a million times min(alpha, beta)
# + t, reached only in the optimiser's line search) the tail is estimated as geometric.
_SERIES_MAX_TERMS = 2_000_000


class ParetoNBDModel(TransactionModel):
    """Pareto/NBD: Poisson purchasing, exponential lifetime (parameters r, alpha, s, beta).

    ``alpha`` and ``beta`` are in the time unit of the data (weeks for the published CDNow
    figures). Expected purchases need ``s != 1``.
    """

    param_names = ("r", "alpha", "s", "beta")
    name = "pareto"

    def _prepare(
        self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray
    ) -> _ParetoData:
        return _ParetoData(x, tx, big_t, w)

    def _initial_params(self, data: RFTData) -> np.ndarray:
        r0, alpha0 = self._initial_rates(data)
        mean_t = float(np.sum(data.w * data.T) / data.total)
        return np.array([r0, alpha0, 1.0, max(mean_t, 1e-6)])

    def _loglik(self, params: np.ndarray, data: _ParetoData) -> tuple[float, np.ndarray]:
        return _loglik(params, data)

    def _loglik_rows(
        self, params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
    ) -> np.ndarray:
        r, alpha, s, beta = params
        data = _ParetoData(x, tx, big_t, np.ones(len(x)))
        lm = _row_terms(params, data)[0][data.inverse]  # back to the customers' order
        return gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta) + lm

    # --- predictions ----------------------------------------------------------------------

    def conditional_probability_alive(
        self, frequency: Any, recency: Any, T: Any
    ) -> np.ndarray | pd.Series:
        """P(still alive at T | x, t_x, T): the share of the first term of the likelihood."""
        params = self._params_array()
        x, tx, big_t = check_rft(frequency, recency, T)
        out = _p_alive(params, x, tx, big_t)
        return wrap(out, index_of(frequency, recency, T), "p_alive")

    def conditional_expected_number_of_purchases_up_to_time(
        self, t: Any, frequency: Any, recency: Any, T: Any
    ) -> np.ndarray | pd.Series:
        """Expected purchases in the next ``t`` time units given (x, t_x, T)::

            P(alive) (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)]

        ``t`` is a scalar, one value per customer, or a column (shape ``(k, 1)``) for k
        horizons at once.
        """
        r, alpha, s, beta = params = self._params_array()
        _check_s(s)
        x, tx, big_t = check_rft(frequency, recency, T)
        t_arr = check_horizon("t", t)
        p_alive = _p_alive(params, x, tx, big_t)
        with np.errstate(over="ignore", under="ignore"):
            bt = beta + big_t
            rate = (r + x) * bt / ((alpha + big_t) * (s - 1))
            out = rate * -np.expm1((s - 1) * (np.log(bt) - np.log(bt + t_arr))) * p_alive
        return wrap(out, index_of(frequency, recency, T), "expected_purchases")

    def expected_number_of_purchases_up_to_time(self, t: Any) -> np.ndarray | float:
        """E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)] for a new customer."""
        r, alpha, s, beta = self._params_array()
        _check_s(s)
        t_arr = check_horizon("t", t)
        out = r * beta / (alpha * (s - 1)) * -np.expm1((s - 1) * np.log(beta / (beta + t_arr)))
        return float(out) if np.ndim(out) == 0 else out


def _check_s(s: float) -> None:
    if abs(s - 1) < 1e-9:
        raise InputError(f"expected purchases need s != 1 (the fitted s is {s!r})")


# ---------------------------------------------------------------------------------------
# The likelihood
# ---------------------------------------------------------------------------------------


class _ParetoData(RFTData):
    """Unique rows plus the distinct (x, t) pairs where ``F`` is needed: (x, t_x), (x, T)."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> None:
        super().__init__(x, tx, big_t, w)
        n = len(self.x)
        both_t = np.concatenate([self.tx, self.T])
        both_x = np.concatenate([self.x, self.x])
        (self.pair_t, self.pair_x), _, inv = unique_rows([both_t, both_x])
        self.pair_tx, self.pair_T = inv[:n], inv[n:]


def _row_terms(
    params: np.ndarray, data: _ParetoData, *, grad: bool = False
) -> tuple[np.ndarray, ...]:
    """log of the bracket of the likelihood, per row, and what its gradient needs.

    Returns ``(lm, w_e, u_x, u_T, dlogF, log_at, log_bt)`` where ``lm`` is
    log[E + s (F(t_x) - F(T))], E = (alpha+T)^-(r+x) (beta+T)^-s, ``w_e`` = E / exp(lm)
    (= P(alive)), ``u_x`` = s F(t_x) / exp(lm), ``u_T`` = s F(T) / exp(lm) and ``dlogF`` the
    gradient of log F at each pair (one row per pair, one column per parameter).
    """
    r, alpha, s, beta = params
    x, big_t = data.x, data.T
    log_f, dlog_f = _log_f(params, data.pair_x, data.pair_t, grad=grad)
    log_at = np.log(alpha + big_t)
    log_bt = np.log(beta + big_t)
    log_e = -(r + x) * log_at - s * log_bt
    log_fx = log_f[data.pair_tx]
    log_ft = log_f[data.pair_T]
    # log(F(t_x) - F(T)); F is decreasing in t, and the difference is 0 when t_x == T.
    diff = np.minimum(log_ft - log_fx, 0.0)
    with np.errstate(divide="ignore"):
        log_i = log_fx + np.log(-np.expm1(diff))
    log_si = np.log(s) + log_i
    lm = np.logaddexp(log_e, log_si)
    w_e = np.exp(log_e - lm)
    u_x = np.exp(np.log(s) + log_fx - lm)
    u_t = np.exp(np.log(s) + log_ft - lm)
    return lm, w_e, u_x, u_t, dlog_f, log_at, log_bt


def _loglik(params: np.ndarray, data: _ParetoData) -> tuple[float, np.ndarray]:
    """Total log-likelihood and its gradient in (r, alpha, s, beta)."""
    r, alpha, s, beta = params
    ux, wx, w = data.ux, data.wx, data.w
    lm, w_e, u_x, u_t, dlog_f, log_at, log_bt = _row_terms(params, data, grad=True)
    ll_x = gammaln(r + ux) - gammaln(r)
    ll = float(dot(wx, ll_x) + data.total * (r * np.log(alpha) + s * np.log(beta)) + dot(w, lm))

    x, big_t = data.x, data.T
    # d lm = w_e d log E + (u_x - u_T) d log s [s only] + u_x d log F(t_x) - u_T d log F(T)
    w_we, w_ux, w_ut = w * w_e, w * u_x, w * u_t
    n_pairs = len(dlog_f)
    pair_weight = np.bincount(data.pair_tx, weights=w_ux, minlength=n_pairs) - np.bincount(
        data.pair_T, weights=w_ut, minlength=n_pairs
    )
    grad_pairs = np.einsum("i,ij->j", pair_weight, dlog_f)  # no BLAS: see dot()
    g_r = dot(wx, digamma(r + ux) - digamma(r)) + data.total * np.log(alpha) - dot(w_we, log_at)
    g_alpha = data.total * r / alpha - dot(w_we, (r + x) / (alpha + big_t))
    g_s = data.total * np.log(beta) - dot(w_we, log_bt) + (w_ux.sum() - w_ut.sum()) / s
    g_beta = data.total * s / beta - dot(w_we, s / (beta + big_t))
    return ll, np.array([g_r, g_alpha, g_s, g_beta]) + grad_pairs


def _log_f(
    params: np.ndarray, x: np.ndarray, t: np.ndarray, *, grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """log F(t) for each (x, t) pair and, with ``grad``, its gradient in (r, alpha, s, beta).

    Substituting c + u = (c + t)/w with c the larger of alpha and beta gives
    F = (c+t)^-k J(k, p, z), k = r+s+x, z = |alpha-beta|/(c+t) in [0, 1), p = s+1 when
    alpha >= beta and p = r+x otherwise, and J the integral summed by ``_beta_series``.
    """
    r, alpha, s, beta = params
    k = r + s + x
    if alpha >= beta:
        ct, other_t, p = alpha + t, beta + t, np.full_like(x, s + 1.0)
    else:
        ct, other_t, p = beta + t, alpha + t, r + x
    z = abs(alpha - beta) / ct
    log_ct = np.log(ct)
    log_j, dk, dp, dz = _beta_series(k, p, z, derivs=grad)
    log_f = -k * log_ct + log_j
    if not grad:
        return log_f, None
    # d log F / d c = -k/(c+t) + (dJ/dz / J) dz/dc, with dz/dc = (other + t)/(c+t)^2 and
    # d log F / d other = -(dJ/dz / J) / (c+t).
    d_own = -k / ct + dz * other_t / ct**2
    d_other = -dz / ct
    common = -log_ct + dk  # shared by r and s through k
    if alpha >= beta:
        d_r, d_s, d_alpha, d_beta = common, common + dp, d_own, d_other
    else:
        d_r, d_s, d_alpha, d_beta = common + dp, common, d_other, d_own
    return log_f, np.column_stack([d_r, d_alpha, d_s, d_beta])


def _beta_series(
    k: np.ndarray, p: np.ndarray, z: np.ndarray, *, derivs: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """log J and the ratios J_k/J, J_p/J, J_z/J for J(k, p, z) = int_0^1 w^(k-1)(1-zw)^-p dw.

    J = sum_n c_n/(k+n) with c_n = (p)_n z^n / n!, a series of positive terms for
    0 <= z < 1 (J = 2F1(p, k; k+1; z)/k). The derivatives are the term-by-term derivatives:

        J_k = -sum c_n/(k+n)^2
        J_p =  sum c_n H_n/(k+n),   H_n = sum_{j<n} 1/(p+j)  (= dlog c_n/dp)
        J_z =  sum c_n (p+n)/(k+n+1)

    Pairs are processed in cache-sized chunks. Within a chunk the terms are added one n at a
    time for all pairs, dropping pairs as they converge (the tail is below ``_SERIES_TOL``
    of the sum); the few pairs with z near 1 (thousands of terms) are then finished in
    growing blocks of n at once, from cumulative products of the term ratios. Terms carry a
    constant factor exp(-shift) where (1-z)^-p, a bound on the largest term, would overflow.
    """
    n_pairs = len(k)
    sums = np.zeros((4, n_pairs))  # J, J_k, J_p, J_z, all times exp(-shift)
    shift = np.maximum(-p * np.log1p(-z) - 600.0, 0.0)
    for lo in range(0, n_pairs, _CHUNK):
        part = slice(lo, lo + _CHUNK)
        sums[:, part] = _series_chunk(k[part], p[part], z[part], shift[part], derivs)
    log_j = np.log(sums[0]) + shift
    if not derivs:
        zero = np.zeros(n_pairs)
        return log_j, zero, zero, zero
    return log_j, sums[1] / sums[0], sums[2] / sums[0], sums[3] / sums[0]


# Pairs per chunk of the series: its temporaries stay in the CPU cache.
_CHUNK = 1 << 15
# Term by term while more pairs than this are converging; in blocks of terms after.
_FEW = 256


def _series_chunk(
    k: np.ndarray, p: np.ndarray, z: np.ndarray, shift: np.ndarray, derivs: bool
) -> np.ndarray:
    sums = np.zeros((4, len(k)))
    idx = np.arange(len(k))
    kk, pp, zz = k, p, z
    c = np.exp(-shift)  # the current term's c_n
    h = np.zeros(len(k))  # H_n
    acc = np.zeros((4, len(k)))  # sums of the pairs still active, in their order
    n = 0
    # Term by term for the many pairs with quick convergence.
    while len(idx) > _FEW:
        inv_kn = 1.0 / (kk + n)
        term = c * inv_kn
        acc[0] += term
        if derivs:
            acc[1] -= term * inv_kn
            acc[2] += term * h
            acc[3] += c * (pp + n) / (kk + n + 1.0)
            h = h + 1.0 / (pp + n)
        c = c * ((pp + n) * zz / (n + 1.0))
        n += 1
        if n % 4 == 0 or n > _SERIES_MAX_TERMS:
            done = _converged(c, h, kk, pp, zz, n, acc[0])
            if n > _SERIES_MAX_TERMS:
                done[:] = True
            if done.any():
                sums[:, idx[done]] = acc[:, done]
                keep = ~done
                idx, kk, pp, zz, c, h = (a[keep] for a in (idx, kk, pp, zz, c, h))
                acc = acc[:, keep]
    if len(idx):
        sums[:, idx] = _series_blocks(kk, pp, zz, c, h, n, acc, derivs)
    return sums


def _converged(
    c: np.ndarray,
    h: np.ndarray,
    k: np.ndarray,
    p: np.ndarray,
    z: np.ndarray,
    n: int,
    total: np.ndarray,
) -> np.ndarray:
    """From term n on, successive terms shrink by at least max(ratio_n, z); while that is
    >= 1 the terms still grow. Converged when the geometric bound on the tail (with room for
    the slowly growing H_n of J_p) is below ``_SERIES_TOL`` of the sum."""
    bound = np.maximum((p + n) * z / (n + 1.0), z)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        tail = np.where(bound < 1.0, c / (k + n) / (1.0 - bound), np.inf)
    return tail * (1.0 + 4.0 * h) <= _SERIES_TOL * total


def _series_blocks(
    k: np.ndarray,
    p: np.ndarray,
    z: np.ndarray,
    c0: np.ndarray,
    h0: np.ndarray,
    start: int,
    acc: np.ndarray,
    derivs: bool,
) -> np.ndarray:
    """Finish the series of a few slowly converging pairs, many terms at a time."""
    sums = np.zeros_like(acc)
    idx = np.arange(len(k))
    width = 64
    while True:
        n = np.arange(start, start + width, dtype=np.float64)
        ratio = (p[:, None] + n) * z[:, None] / (n + 1.0)  # c_{n+1} / c_n
        growth = np.ones((len(idx), width))
        growth[:, 1:] = ratio[:, :-1]
        c = c0[:, None] * np.cumprod(growth, axis=1)
        inv_kn = 1.0 / (k[:, None] + n)
        term = c * inv_kn
        acc[0] += term.sum(axis=1)
        inv_pn = 1.0 / (p[:, None] + n)
        if derivs:
            steps = np.zeros((len(idx), width))
            steps[:, 1:] = inv_pn[:, :-1]
            h = h0[:, None] + np.cumsum(steps, axis=1)
            acc[1] -= (term * inv_kn).sum(axis=1)
            acc[2] += (term * h).sum(axis=1)
            acc[3] += (c * (p[:, None] + n) / (k[:, None] + n + 1.0)).sum(axis=1)
            h0 = h[:, -1] + inv_pn[:, -1]
        c0 = c[:, -1] * ratio[:, -1]
        start += width
        done = _converged(c0, h0, k, p, z, start, acc[0])
        if start >= _SERIES_MAX_TERMS:
            # Only reached with z within ~1e-6 of 1: estimate the rest as geometric.
            tail = c0 / (k + start) / (1.0 - z)
            acc[0] += tail
            if derivs:
                acc[1] -= tail / (k + start)
                acc[2] += tail * h0
                acc[3] += tail
            done[:] = True
        if done.any():
            sums[:, idx[done]] = acc[:, done]
            keep = ~done
            if not keep.any():
                return sums
            idx, k, p, z, c0, h0 = (a[keep] for a in (idx, k, p, z, c0, h0))
            acc = acc[:, keep]
        # Longer blocks once every remaining pair has shrinking terms (a cumulative product
        # cannot overflow then), bounded in memory.
        if ((p + start) * z / (start + 1.0) < 1.0).all():
            width = int(min(width * 2, 8192, max(64, 2**22 // len(idx))))
        else:
            width = 64


def _p_alive(params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    data = _ParetoData(x, tx, big_t, np.ones(len(x)))
    with np.errstate(over="ignore", under="ignore"):
        _, w_e, *_ = _row_terms(params, data)
    return w_e[data.inverse]  # back from unique rows to the customers' order


def simulate_paretonbd(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    T: Any,
    *,
    random_state: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Draw (frequency, recency, T) for customers observed for ``T`` time units each.

    Exact and vectorised: lifetime ~ Exp(mu), x ~ Poisson(lambda * min(lifetime, T)) and the
    last of x uniform purchase times on (0, min(lifetime, T)). For tests and benchmarks.
    """
    rng = np.random.default_rng(random_state)
    big_t = np.asarray(T, dtype=np.float64).ravel()
    n = len(big_t)
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    life = rng.exponential(1.0 / np.maximum(mu, 1e-300))
    window = np.minimum(life, big_t)
    x = rng.poisson(lam * window)
    pos = x > 0
    tx = np.zeros(n)
    tx[pos] = window[pos] * rng.beta(x[pos], 1.0)
    return pd.DataFrame({"frequency": x.astype(np.int64), "recency": tx, "T": big_t})
