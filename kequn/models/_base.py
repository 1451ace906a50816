"""What every CLV model shares: input checks, maximum-likelihood fitting, standard errors.

The models follow scikit-learn's conventions so that they feel familiar: ``__init__`` stores
settings only, ``fit`` returns ``self``, everything learned ends in ``_`` and a model used
before ``fit`` raises :class:`kequn.errors.NotFittedError`.

Fitting maximises the log-likelihood with L-BFGS-B on the *logarithms* of the parameters
(all of them are positive), with the analytic gradient each model supplies. Customers with
the same inputs contribute the same likelihood, so the data are first collapsed to unique
rows with a count (lifetimes' ``weights`` trick, done automatically): on real data measured in
days a million customers collapse to a few hundred thousand rows or fewer.

Standard errors come from the observed information, the Hessian of the log-likelihood, taken
on the log scale by central differences of the analytic gradient. Intervals are computed on
the log scale and mapped back, so they never include impossible negative values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import optimize, stats

from kequn.errors import InputError, NotFittedError

#: Above this many distinct rows a fit starts on a random subset of ``SUBSAMPLE_ROWS`` rows
#: (see ``BaseModel._fit_data``); the result is still the optimum on all the data.
SUBSAMPLE_ABOVE = 200_000
SUBSAMPLE_ROWS = 25_000

# Log-parameters are kept within these bounds: exp(±20) covers every plausible time unit
# (hours to decades) and keeps the likelihood finite during the line search.
_LOG_BOUND = 20.0


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before it met its convergence criteria."""


class DataWarning(UserWarning):
    """The data can be fitted but probably not as the caller meant (e.g. a period past it)."""


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def as_float_array(name: str, value: Any) -> np.ndarray:
    """A 1-D float64 copy of ``value``; a clear ``InputError`` naming ``name`` otherwise.

    NaN and infinities are rejected rather than dropped: a silently shorter input makes
    totals stop matching the source.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numbers, got {_preview(value)!r}: {exc}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name} must be finite; position {i} holds {arr[i]!r}")
    return arr


def check_nonnegative(name: str, arr: np.ndarray) -> None:
    """Reject negative values, quoting the first one and where it is."""
    bad = arr < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name} must be >= 0; position {i} holds {arr[i]!r}")


def check_same_length(**arrays: np.ndarray) -> int:
    """All arrays have one length (> 0); returns it."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise InputError(f"inputs must have the same length, got {detail}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise InputError(f"{next(iter(lengths))} is empty; there is nothing to fit or score")
    return n


def check_rft(frequency: Any, recency: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the (frequency, recency, T) summary the transaction models use.

    frequency is a whole number of repeat purchases; recency (time of the last purchase) and
    T (time of the end of the period) are measured from the first purchase, so
    ``0 <= recency <= T`` and ``recency == 0`` when ``frequency == 0``.
    """
    x = as_float_array("frequency", frequency)
    tx = as_float_array("recency", recency)
    big_t = as_float_array("T", T)
    check_same_length(frequency=x, recency=tx, T=big_t)
    check_nonnegative("frequency", x)
    frac = x != np.floor(x)
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        raise InputError(
            f"frequency must be whole numbers (repeat purchases); position {i} holds {x[i]!r}"
        )
    check_nonnegative("recency", tx)
    check_nonnegative("T", big_t)
    late = tx > big_t
    if late.any():
        i = int(np.flatnonzero(late)[0])
        raise InputError(
            f"recency must be <= T (the last purchase cannot come after the end of the period); "
            f"position {i} has recency={tx[i]!r} and T={big_t[i]!r}"
        )
    orphan = (x == 0) & (tx != 0)
    if orphan.any():
        i = int(np.flatnonzero(orphan)[0])
        raise InputError(
            f"recency must be 0 when frequency is 0 (no repeat purchase to date); "
            f"position {i} has recency={tx[i]!r}"
        )
    return x, tx, big_t


def check_weights(weights: Any, n: int) -> np.ndarray:
    """Counts of identical customers; ones when ``None``."""
    if weights is None:
        return np.ones(n)
    w = as_float_array("weights", weights)
    if len(w) != n:
        raise InputError(f"weights must have one entry per customer ({n}), got {len(w)}")
    check_nonnegative("weights", w)
    if not w.sum() > 0:
        raise InputError("weights are all zero; there is nothing to fit")
    return w


def check_horizon(name: str, t: Any) -> np.ndarray:
    """A non-negative time (scalar or array) for predictions."""
    arr = np.asarray(t, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise InputError(f"{name} must be finite and >= 0, got {_preview(t)!r}")
    return arr


def _preview(value: Any) -> Any:
    if isinstance(value, np.ndarray | pd.Series | list | tuple) and len(value) > 5:
        return list(np.asarray(value).ravel()[:5]) + ["..."]
    return value


def index_of(*values: Any) -> pd.Index | None:
    """The pandas index of the first Series among ``values``, so results keep customer ids."""
    for v in values:
        if isinstance(v, pd.Series):
            return v.index
    return None


def wrap(result: np.ndarray, index: pd.Index | None, name: str) -> np.ndarray | pd.Series:
    """Return a Series on the caller's index when the caller passed Series."""
    if index is not None and result.ndim == 1 and len(result) == len(index):
        return pd.Series(result, index=index, name=name)
    return result


def subsample_rows(n: int) -> np.ndarray | None:
    """Row numbers of the subset a fit of ``n`` distinct rows starts from, or ``None`` when
    ``n`` is small enough to fit directly. A fixed seed keeps fits reproducible."""
    if n <= SUBSAMPLE_ABOVE:
        return None
    rng = np.random.default_rng(20050101)
    return np.sort(rng.choice(n, size=min(n, SUBSAMPLE_ROWS), replace=False))


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two vectors without BLAS.

    ``a @ b`` calls OpenBLAS, which spreads a dot product of 10^5 elements over its threads;
    on a machine busy with other work those threads wait for cores and one dot product takes
    milliseconds instead of microseconds. ``einsum`` runs NumPy's own SIMD loop.
    """
    return float(np.einsum("i,i->", a, b))


# ---------------------------------------------------------------------------------------
# Collapsing identical rows
# ---------------------------------------------------------------------------------------


def unique_rows(
    columns: Sequence[np.ndarray], weights: np.ndarray | None = None, *, give_up: float = 0.5
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Unique rows of ``columns`` with summed ``weights`` and the inverse index.

    Hash-based (pandas ``factorize``), so it costs a few passes over the data rather than a
    sort; the key is re-factorised after each column so it never overflows. Put the column
    with the fewest distinct values first: when it alone already has more than ``give_up``
    times as many distinct values as rows (continuous data), the rows are returned as they
    are, since collapsing would cost more than it saves.
    """
    n = len(columns[0])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    key = np.zeros(n, dtype=np.int64)
    for i, col in enumerate(columns):
        codes, uniques = pd.factorize(col, sort=False)
        if i == 0 and len(uniques) > give_up * n:
            return list(columns), w, np.arange(n)
        key, _ = pd.factorize(key * len(uniques) + codes, sort=False)
    n_unique = int(key.max()) + 1 if n else 0
    first = np.empty(n_unique, dtype=np.int64)
    first[key[::-1]] = np.arange(n - 1, -1, -1)
    counts = np.bincount(key, weights=w, minlength=n_unique)
    return [col[first] for col in columns], counts, key


# ---------------------------------------------------------------------------------------
# The estimator base class
# ---------------------------------------------------------------------------------------


class BaseModel:
    """Maximum-likelihood fitting, standard errors and the scikit-learn conventions.

    Subclasses name their parameters in ``param_names`` and implement ``_prepare`` (inputs to
    a data object), ``_loglik`` (total log-likelihood and its gradient with respect to the
    natural parameters) and ``_initial_params``.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    #: Model name used in messages and the CLI's JSON output.
    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        initial_params: Mapping[str, float] | None = None,
        max_iter: int = 500,
        tol: float = 1e-10,
    ) -> None:
        self.initial_params = initial_params
        self.max_iter = max_iter
        self.tol = tol

    def __repr__(self) -> str:
        settings = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_") and v is not None
        )
        return f"{type(self).__name__}({settings})"

    # --- to implement -------------------------------------------------------------------

    def _loglik(self, params: np.ndarray, data: Any) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def _initial_params(self, data: Any) -> np.ndarray:
        raise NotImplementedError

    # --- fitting --------------------------------------------------------------------------

    def _check_settings(self) -> np.ndarray | None:
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter > 0):
            raise InputError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not (isinstance(self.tol, float | int) and 0 < self.tol < 1):
            raise InputError(f"tol must be a number in (0, 1), got {self.tol!r}")
        if self.initial_params is None:
            return None
        given = dict(self.initial_params)
        unknown = set(given) - set(self.param_names)
        missing = set(self.param_names) - set(given)
        if unknown or missing:
            raise InputError(
                f"initial_params must name exactly {list(self.param_names)}, got {sorted(given)}"
            )
        values = np.array([float(given[k]) for k in self.param_names])
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise InputError(f"initial_params must be positive numbers, got {given!r}")
        return values

    def _fit_data(self, data: Any, total_weight: float, subsample: Any = None) -> None:
        """Maximise the log-likelihood of ``data`` and set the learned attributes.

        With ``subsample`` (a data object for a random subset of the rows, used above
        ``SUBSAMPLE_ABOVE`` rows) the model is first fitted to the subset; its Hessian, scaled
        to the full data, then drives Newton steps on the full data, which converge in a few
        evaluations where L-BFGS-B would need dozens. Without it, or if that fails,
        L-BFGS-B runs on the full data.
        """
        start = self._check_settings()
        if start is None:
            start = self._initial_params(data)
        theta0 = np.clip(np.log(start), -_LOG_BOUND + 1, _LOG_BOUND - 1)
        full = _Objective(self._loglik, data, total_weight)
        fitted = None
        if subsample is not None:
            sub_data, sub_total = subsample
            sub = _Objective(self._loglik, sub_data, sub_total)
            theta_s, _, hess_s, result = _maximise(sub, theta0, self.max_iter, self.tol)
            if result.success and np.isfinite(hess_s).all():
                newton = _newton(full, theta_s, hess_s * (total_weight / sub_total))
                if newton is not None:
                    theta, value, steps = newton
                    # Forward differences: half the gradient evaluations of central ones,
                    # ample for standard errors on data this large.
                    hess = _numerical_hessian(full.gradient, theta, forward=True)
                    fitted = (theta, value, hess, int(result.nit) + steps, True, "")
        if fitted is None:
            theta, value, hess, result = _maximise(full, theta0, self.max_iter, self.tol)
            fitted = (theta, value, hess, int(result.nit), bool(result.success), result.message)
        theta, value, hess, n_iter, converged, message = fitted

        params = np.exp(theta)
        named = dict(zip(self.param_names, params.tolist(), strict=True))
        if not np.isfinite(value):
            raise InputError(
                f"{self.name} fit failed: the log-likelihood is not finite at the optimiser's "
                f"end point {named!r}; check the inputs or pass initial_params"
            )
        self.params_ = named
        self.log_likelihood_ = float(-value / full.scale)
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.n_customers_ = float(total_weight)
        self._set_covariance(hess, params, warn=self.converged_)
        if not self.converged_:
            warnings.warn(
                f"{self.name} fit did not converge after {n_iter} iterations "
                f"({message}); the parameters {self.params_!r} may be off. Raise "
                "max_iter, pass initial_params, or check the data (too few repeat buyers?)",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _set_covariance(self, hess: np.ndarray, params: np.ndarray, *, warn: bool) -> None:
        """Covariance of the log-parameters from the observed information ``-hess``.

        Not positive definite means no interval: NaN, with a warning unless the fit has
        already warned that it did not converge.
        """
        info = -(hess + hess.T) / 2
        try:
            np.linalg.cholesky(info)
            cov_log = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            cov_log = np.full_like(info, np.nan)
            if warn:
                warnings.warn(
                    f"{self.name}: the information matrix is not positive definite at "
                    f"{self.params_!r}, so standard errors are undefined (NaN); the optimum "
                    "may be on a flat ridge (too few repeat buyers for this model?)",
                    ConvergenceWarning,
                    stacklevel=4,
                )
        self.covariance_log_ = cov_log
        # Delta method: d theta = theta * d log(theta).
        self.covariance_ = cov_log * np.outer(params, params)

    # --- results --------------------------------------------------------------------------

    def _check_fitted(self) -> dict[str, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(...) before using it"
            )
        return self.params_

    def _params_array(self) -> np.ndarray:
        return np.array([self._check_fitted()[k] for k in self.param_names])

    @property
    def standard_errors_(self) -> dict[str, float]:
        """Standard error of each parameter (delta method from the log scale)."""
        self._check_fitted()
        se = np.sqrt(np.diag(self.covariance_))
        return dict(zip(self.param_names, se.tolist(), strict=True))

    def confidence_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Wald intervals on the log scale, mapped back (so always positive)."""
        params = self._params_array()
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level!r}")
        z = stats.norm.ppf(0.5 + level / 2)
        se_log = np.sqrt(np.diag(self.covariance_log_))
        return pd.DataFrame(
            {"lower": params * np.exp(-z * se_log), "upper": params * np.exp(z * se_log)},
            index=pd.Index(self.param_names, name="param"),
        )

    @property
    def summary(self) -> pd.DataFrame:
        """One row per parameter: estimate, standard error and a 95% interval."""
        params = self._params_array()
        ci = self.confidence_intervals(0.95)
        return pd.DataFrame(
            {
                "estimate": params,
                "std_error": np.sqrt(np.diag(self.covariance_)),
                "lower_95": ci["lower"].to_numpy(),
                "upper_95": ci["upper"].to_numpy(),
            },
            index=pd.Index(self.param_names, name="param"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the fit (what ``kequn clv fit --json`` prints)."""
        self._check_fitted()
        ci = self.confidence_intervals(0.95)
        return {
            "model": self.name,
            "params": dict(self.params_),
            "std_errors": self.standard_errors_,
            "intervals_95": {
                k: [float(ci.loc[k, "lower"]), float(ci.loc[k, "upper"])] for k in self.param_names
            },
            "log_likelihood": self.log_likelihood_,
            "n_customers": self.n_customers_,
            "n_iter": self.n_iter_,
            "converged": self.converged_,
        }


class _Objective:
    """The negative mean log-likelihood on log-parameters, and the total gradient."""

    def __init__(self, loglik: Callable, data: Any, total_weight: float) -> None:
        self.loglik, self.data = loglik, data
        self.scale = 1.0 / total_weight  # the mean: tolerances independent of size
        self._last: tuple[np.ndarray, tuple[float, np.ndarray]] | None = None

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if self._last is None or not np.array_equal(self._last[0], theta):
            self._last = (theta.copy(), self._evaluate(theta))
        value, grad = self._last[1]  # the line search and the gradient ask for one point
        return value, grad.copy()

    def _evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(theta)
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            ll, grad = self.loglik(params, self.data)
        if not np.isfinite(ll) or not np.isfinite(grad).all():
            # Outside the region the likelihood can be evaluated: tell the line search to
            # step back, without a gradient that would poison the L-BFGS memory.
            return math.inf, np.zeros_like(theta)
        return float(-ll * self.scale), -(grad * params) * self.scale

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """Gradient of the total log-likelihood in the log-parameters."""
        return -self(theta)[1] / self.scale


def _maximise(
    objective: _Objective, theta0: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, float, np.ndarray, Any]:
    """L-BFGS-B, then Newton steps on the exact gradient: L-BFGS-B stops on a tolerance, a
    Newton step from there lands on the optimum to machine precision. Returns the end point,
    its objective value, the Hessian there and the L-BFGS-B result."""
    result = optimize.minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * len(theta0),
        options={"maxiter": int(max_iter), "ftol": tol * 1e-3, "gtol": tol, "maxcor": 20},
    )
    theta = result.x
    value, _ = objective(theta)
    if not np.isfinite(value):
        return theta, value, np.full((len(theta), len(theta)), np.nan), result
    hess = _numerical_hessian(objective.gradient, theta)
    polished = _newton(objective, theta, hess, max_steps=3)
    if polished is not None and np.max(np.abs(polished[0] - theta)) > 1e-4:
        # The polish moved noticeably: take the Hessian again at the end point.
        hess = _numerical_hessian(objective.gradient, polished[0])
    if polished is not None:
        theta, value, _ = polished
    return theta, value, hess, result


def _newton(
    objective: _Objective, theta: np.ndarray, hess: np.ndarray, max_steps: int = 50
) -> tuple[np.ndarray, float, int] | None:
    """Newton steps from a Hessian (exact, or scaled from a subsample) kept up to date with
    BFGS updates, halving a step that does not improve. Returns (end point, objective value,
    steps), or ``None`` when the steps stop improving before the predicted gain is
    negligible."""
    value, _ = objective(theta)
    if not np.isfinite(value):
        return None
    curvature = -np.asarray(hess, dtype=np.float64)  # positive definite at a maximum
    g = objective.gradient(theta)
    for step_no in range(max_steps):
        try:
            step = np.linalg.solve(curvature, g)
        except np.linalg.LinAlgError:
            return None
        gain = float(g @ step)  # twice the predicted gain in log-likelihood
        if not gain > 0:
            return None  # not an ascent direction: the curvature is not positive definite
        if gain < 1e-10 or gain * objective.scale < 1e-16:
            return theta, value, step_no
        for shrink in (1.0, 0.5, 0.25, 0.125):
            candidate = np.clip(theta + shrink * step, -_LOG_BOUND, _LOG_BOUND)
            new_value, _ = objective(candidate)
            if np.isfinite(new_value) and new_value <= value:
                break
        else:
            # No step improves: converged if the predicted gain is at rounding level.
            return (theta, value, step_no) if gain * objective.scale < 1e-12 else None
        g_new = objective.gradient(candidate)
        s_vec, y_vec = candidate - theta, g - g_new  # y = change in -gradient
        sy = float(s_vec @ y_vec)
        if sy > 1e-12 * float(np.sqrt((s_vec @ s_vec) * (y_vec @ y_vec))):
            bs = curvature @ s_vec
            curvature = (
                curvature - np.outer(bs, bs) / float(s_vec @ bs) + np.outer(y_vec, y_vec) / sy
            )
        theta, value, g = candidate, new_value, g_new
    return theta, value, max_steps


def _numerical_hessian(
    gradient: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, *, forward: bool = False
) -> np.ndarray:
    """Differences of an exact gradient (central, or forward from ``theta``); symmetrised."""
    k = len(theta)
    hess = np.empty((k, k))
    g0 = gradient(theta) if forward else None
    for j in range(k):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up = theta.copy()
        up[j] += h
        if g0 is not None:
            hess[:, j] = (gradient(up) - g0) / h
        else:
            down = theta.copy()
            down[j] -= h
            hess[:, j] = (gradient(up) - gradient(down)) / (2 * h)
    return (hess + hess.T) / 2


# ---------------------------------------------------------------------------------------
# Transaction models: BG/NBD and Pareto/NBD
# ---------------------------------------------------------------------------------------


class RFTData:
    """(frequency, recency, T) collapsed to unique rows, plus the unique frequencies.

    Terms of the likelihood that depend on the frequency alone (the gamma and beta functions)
    are computed once per distinct frequency, usually a few dozen values. Rows are ordered
    with the customers without a repeat purchase first (``x[:n_zero] == 0``): their
    likelihood is simpler and the models treat them apart.
    """

    def __init__(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> None:
        (big_t, x, tx), w, inverse = unique_rows([big_t, x, tx], w)
        order = np.argsort(x > 0, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.x, self.tx, self.T, self.w = x[order], tx[order], big_t[order], w[order]
        self.inverse = rank[inverse]
        self.n_zero = int(np.count_nonzero(self.x == 0))
        self.ux, self.x_idx = np.unique(self.x, return_inverse=True)
        self.wx = np.bincount(self.x_idx, weights=self.w, minlength=len(self.ux))
        self.total = float(self.w.sum())


class TransactionModel(BaseModel):
    """Shared ``fit`` and checks of the models of the purchase process."""

    def fit(self, frequency: Any, recency: Any, T: Any, weights: Any = None) -> TransactionModel:
        """Fit by maximum likelihood to each customer's repeat purchases.

        ``frequency`` counts repeat purchase periods (days), ``recency`` is the time from the
        first to the last purchase and ``T`` from the first purchase to the end of the
        calibration period, all in one time unit (the parameters ``alpha`` and ``beta`` are in
        that unit). ``weights`` counts customers sharing a row, for pre-aggregated data.
        Returns ``self``.
        """
        x, tx, big_t = check_rft(frequency, recency, T)
        w = check_weights(weights, len(x))
        if not (w[x > 0] > 0).any():
            raise InputError(
                f"frequency is 0 for every customer: with no repeat purchase the purchase and "
                f"dropout rates cannot be estimated ({self.name} needs repeat buyers; use a "
                "longer calibration period)"
            )
        data = self._prepare(x, tx, big_t, w)
        subsample = None
        pick = subsample_rows(len(data.x))
        if pick is not None:
            sub = self._prepare(data.x[pick], data.tx[pick], data.T[pick], data.w[pick])
            if (sub.x > 0).any():
                subsample = (sub, sub.total)
        self._fit_data(data, data.total, subsample)
        return self

    def _prepare(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> Any:
        return RFTData(x, tx, big_t, w)

    def score_samples(self, frequency: Any, recency: Any, T: Any) -> np.ndarray | pd.Series:
        """Each customer's log-likelihood under the fitted parameters."""
        params = self._params_array()
        x, tx, big_t = check_rft(frequency, recency, T)
        with np.errstate(over="ignore", under="ignore"):
            out = self._loglik_rows(params, x, tx, big_t)
        return wrap(out, index_of(frequency, recency, T), "log_likelihood")

    def _loglik_rows(
        self, params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
    ) -> np.ndarray:
        """Per-row log-likelihood (no weights), for ``score_samples``."""
        raise NotImplementedError

    def log_likelihood(self, frequency: Any, recency: Any, T: Any, weights: Any = None) -> float:
        """Total log-likelihood of the given customers under the fitted parameters."""
        params = self._params_array()
        x, tx, big_t = check_rft(frequency, recency, T)
        w = check_weights(weights, len(x))
        with np.errstate(over="ignore", under="ignore"):
            ll, _ = self._loglik(params, self._prepare(x, tx, big_t, w))
        return float(ll)

    def _initial_rates(self, data: RFTData) -> tuple[float, float]:
        """Starting ``r`` and ``alpha`` from the mean purchase rate of the repeat buyers."""
        rate = float(np.sum(data.w * data.x) / max(np.sum(data.w * data.T), 1e-12))
        r0 = 1.0
        return r0, r0 / max(rate, 1e-6)
