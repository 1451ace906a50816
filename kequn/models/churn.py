"""Churn risk: a gradient-boosting classifier on per-customer features at a cutoff day.

The question a CRM team asks is "who will not buy again in the next N days?". The answer is
learned from the workspace's own history: features as they were at a cutoff day
(:mod:`kequn.models.churn_features`, computed in SQL) and the label "no purchase in the N days
after it". scikit-learn's ``HistGradientBoostingClassifier`` fits that in seconds for a few
hundred thousand customers and reads missing values (a one-time buyer has no gap between
purchases) as missing rather than as zero.

This module holds the estimator, the data set at a cutoff and predictions;
:mod:`kequn.models.churn_evaluation` trains and judges it on a time split, and
:mod:`kequn.models.churn_store` keeps models and scores in the workspace (docs/churn.md).

``ChurnModel`` follows scikit-learn's conventions: settings in ``__init__``, ``fit``
returns ``self``, learned attributes end in ``_``, :class:`~kequn.errors.NotFittedError`
before ``fit``. scikit-learn is imported inside the methods that need it, so importing
:mod:`kequn.models` stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from kequn.errors import InputError, NotFittedError
from kequn.models.churn_features import (
    DataSpan,
    churn_features,
    churn_labels,
    data_span,
    event_types,
    parse_day,
)
from kequn.workspace import Workspace

__all__ = [
    "DEFAULT_HORIZON",
    "MIN_CUSTOMERS",
    "MIN_PER_CLASS",
    "ONE_THREAD_BELOW",
    "ChurnModel",
    "churn_dataset",
    "predict_churn",
]

DEFAULT_HORIZON = 90
#: Fewer customers than this at a training cutoff cannot teach a classifier anything.
MIN_CUSTOMERS = 50
#: Each label (churned, stayed) needs at least this many customers in the training set.
MIN_PER_CLASS = 10
#: Below this many rows gradient boosting runs on one thread unless told otherwise: waking
#: OpenMP threads costs more than it saves on small data, and on a machine busy with other
#: work extra threads wait for cores (measured: 2 threads 5x slower than 1 on a loaded 2-core
#: machine at 137,000 rows; on 3,000 rows one thread is faster even on an idle machine).
ONE_THREAD_BELOW = 50_000


class ChurnModel:
    """Churn risk (probability of no purchase in the next ``horizon`` days) per customer.

    ``fit(X, y)`` takes a feature frame (one row per customer, as built by
    :func:`churn_dataset`) and labels (``True`` = churned). ``horizon`` is the label's
    length in days; it is recorded with the model so predictions say what they mean.
    ``max_event_types`` caps the event types turned into feature columns at training time.
    ``n_threads`` caps the OpenMP threads of fitting and prediction (default: one thread
    below ``ONE_THREAD_BELOW`` rows, OpenMP's own choice above; on a machine shared with
    other work, 1 is often fastest at any size). The remaining settings go to
    scikit-learn's ``HistGradientBoostingClassifier``.
    """

    name: ClassVar[str] = "churn-hgb"

    def __init__(
        self,
        *,
        horizon: int = DEFAULT_HORIZON,
        max_event_types: int = 20,
        max_iter: int = 100,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        random_state: int = 0,
        n_threads: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.max_event_types = max_event_types
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state
        self.n_threads = n_threads

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({settings})"

    def get_params(self) -> dict[str, Any]:
        """The settings, as scikit-learn's ``get_params`` gives them (for cloning)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    # --- fitting ------------------------------------------------------------------------

    def _check_settings(self) -> None:
        for name in ("horizon", "max_event_types", "max_iter", "max_leaf_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{name} must be a positive whole number, got {value!r}")
        if self.max_leaf_nodes < 2:
            raise InputError(f"max_leaf_nodes must be >= 2, got {self.max_leaf_nodes!r}")
        if not (isinstance(self.learning_rate, int | float) and 0 < self.learning_rate <= 1):
            raise InputError(f"learning_rate must be in (0, 1], got {self.learning_rate!r}")
        if not (isinstance(self.min_samples_leaf, int) and self.min_samples_leaf >= 1):
            raise InputError(
                f"min_samples_leaf must be a positive whole number, got {self.min_samples_leaf!r}"
            )
        threads = self.n_threads
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InputError(f"n_threads must be None or a positive whole number, got {threads!r}")
        if not (isinstance(self.l2_regularization, int | float) and self.l2_regularization >= 0):
            raise InputError(f"l2_regularization must be >= 0, got {self.l2_regularization!r}")

    def fit(self, X: pd.DataFrame, y: Any) -> ChurnModel:
        """Fit on features ``X`` and labels ``y`` (True/1 = churned); returns ``self``.

        Columns missing for every row are left out (``ignored_features_``); the others are
        ``feature_names_in_``, the columns predictions need.

        Needs at least ``MIN_CUSTOMERS`` rows and ``MIN_PER_CLASS`` of each label: with
        fewer, any score it produced would be noise.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        self._check_settings()
        frame = _check_features(X)
        labels = _check_labels(y, len(frame))
        n_churned = int(labels.sum())
        n_stayed = len(labels) - n_churned
        if len(labels) < MIN_CUSTOMERS:
            raise InputError(
                f"only {len(labels)} customers to learn from; the churn model needs at least "
                f"{MIN_CUSTOMERS}"
            )
        if min(n_churned, n_stayed) < MIN_PER_CLASS:
            raise InputError(
                f"labels hold {n_churned} churned and {n_stayed} retained customers; each "
                f"needs at least {MIN_PER_CLASS} for the model to tell them apart"
            )
        estimator = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            random_state=self.random_state,
        )
        # A column without a single value (the gap between purchases when nobody has bought
        # twice yet) carries nothing to learn, and scikit-learn's binning fails on it.
        empty = [c for c in frame.columns if frame[c].isna().all()]
        if len(empty) == frame.shape[1]:
            raise InputError("every column of X is missing for every row; nothing to learn")
        used = frame.drop(columns=empty) if empty else frame
        with self._threads(len(used)):
            estimator.fit(used, labels)
        self.estimator_ = estimator
        self.feature_names_in_ = np.asarray(used.columns, dtype=object)
        self.ignored_features_ = [str(c) for c in empty]
        self.n_features_in_ = used.shape[1]
        self.classes_ = np.array([False, True])
        self.n_customers_ = len(labels)
        self.churn_rate_ = n_churned / len(labels)
        return self

    # --- predictions ----------------------------------------------------------------------

    def _fitted(self) -> Any:
        if not hasattr(self, "estimator_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) first "
                "(or `kequn churn train` in a workspace)"
            )
        return self.estimator_

    @contextlib.contextmanager
    def _threads(self, rows: int) -> Iterator[None]:
        """Limit OpenMP threads to ``n_threads`` (default: one below ``ONE_THREAD_BELOW``)."""
        limit = self.n_threads
        if limit is None and rows < ONE_THREAD_BELOW:
            limit = 1
        if limit is None:
            yield
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=limit, user_api="openmp"):
            yield

    @property
    def event_types_(self) -> list[str]:
        """The event types the model has feature columns for (fixed at training)."""
        self._fitted()
        prefix = "events_30d:"
        return [str(c)[len(prefix) :] for c in self.feature_names_in_ if str(c).startswith(prefix)]

    def _align(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X``'s columns in training order; missing ones are an error, extra ones ignored."""
        frame = _check_features(X)
        missing = [c for c in self.feature_names_in_ if c not in frame.columns]
        if missing:
            raise InputError(
                f"X lacks {len(missing)} feature(s) the model was trained on, e.g. "
                f"{missing[0]!r}; build X with the same event types (model.event_types_)"
            )
        return frame[list(self.feature_names_in_)]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Columns: P(retained), P(churned) — scikit-learn's layout."""
        estimator = self._fitted()
        frame = self._align(X)
        with self._threads(len(frame)):
            return estimator.predict_proba(frame)

    def predict_risk(self, X: pd.DataFrame) -> pd.Series:
        """P(no purchase in the next ``horizon`` days), a Series ``churn_risk`` on X's index."""
        proba = self.predict_proba(X)[:, 1]
        return pd.Series(proba, index=X.index, name="churn_risk")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """True where the churn risk is at least 0.5."""
        return self.predict_proba(X)[:, 1] >= 0.5


def _check_features(X: Any) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise InputError(
            f"X must be a pandas DataFrame of features (named columns), got {type(X).__name__}"
        )
    if X.shape[1] == 0:
        raise InputError("X has no columns; build it with churn_dataset(workspace, cutoff)")
    if len(X) == 0:
        raise InputError("X has no rows; there are no customers to fit or score")
    bad = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c].dtype)]
    if bad:
        raise InputError(
            f"X column {bad[0]!r} is not numeric ({X[bad[0]].dtype}); features must be numbers"
        )
    return X


def _check_labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"y must hold one label per row of X ({n}), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"y must be True/False or 1/0, got values like {arr[:3].tolist()!r}"
        ) from None
    bad = ~np.isin(num, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"y must be True/False or 1/0; position {i} holds {_plain(arr[i])!r}")
    return num == 1.0


# ---------------------------------------------------------------------------------------
# Workspace level: data sets, evaluation, predictions
# ---------------------------------------------------------------------------------------


def churn_dataset(
    workspace: Workspace,
    cutoff: Any,
    horizon: int | None = DEFAULT_HORIZON,
    *,
    types: list[str] | None = None,
    max_event_types: int = 20,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """Features at ``cutoff`` and, with a ``horizon``, the labels of the days after it.

    ``types`` fixes the event-type columns (a trained model's ``event_types_``); by default
    the ``max_event_types`` most frequent types up to the cutoff. The label window must lie
    inside the data: a cutoff whose ``horizon`` following days reach past the last purchase
    would call everyone churned.
    """
    orders, events = workspace.table("orders"), workspace.table("events")
    day = parse_day(cutoff)
    span = data_span(orders)
    _check_in_data(day, span, horizon, "cutoff")
    if types is None:
        types = event_types(events, day, max_event_types)
    X = churn_features(orders, events, day, types)
    if horizon is None:
        return X, None
    y = churn_labels(orders, day, horizon).reindex(X.index)
    return X, y


def _check_in_data(day: dt.date, span: DataSpan, horizon: int | None, name: str) -> None:
    if day < span.first_day:
        raise InputError(
            f"{name} {day.isoformat()!r} is before the first purchase "
            f"({span.first_day.isoformat()}); no customer had bought yet. Pick a later day"
        )
    if horizon is None:
        if day > span.last_day:
            raise InputError(
                f"{name} {day.isoformat()!r} is after the last purchase in the data "
                f"({span.last_day.isoformat()}); the days in between would look like "
                "inactivity. Import newer orders or pick an earlier day"
            )
        return
    latest = span.last_day - dt.timedelta(days=horizon)
    if day > latest:
        raise InputError(
            f"{name} {day.isoformat()!r}: the {horizon} days after it run past the last "
            f"purchase in the data ({span.last_day.isoformat()}), so who churned is not known "
            f"yet. Pick a {name} on or before {latest.isoformat()} or a shorter horizon"
        )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def predict_churn(workspace: Workspace, model: ChurnModel, as_of: Any = None) -> pd.DataFrame:
    """Churn risk of every customer with a purchase up to ``as_of`` (default: the day of
    the last purchase), as a frame ``customer_id``, ``churn_risk``, sorted by id."""
    span = data_span(workspace.table("orders"))
    day = parse_day(as_of, "as_of") if as_of is not None else span.last_day
    model._fitted()
    _check_in_data(day, span, None, "as_of")
    X, _ = churn_dataset(workspace, day, None, types=model.event_types_)
    risk = model.predict_risk(X)
    return pd.DataFrame({"customer_id": X.index.to_numpy(), "churn_risk": risk.to_numpy()})
