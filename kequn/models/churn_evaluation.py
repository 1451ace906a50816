"""Training the churn model on a time split, and what the report measures.

A model is only worth using if it beats what is already there, so :func:`evaluate_churn`
trains at one cutoff and tests at a later one — never on customers' future — and reports,
on the same test customers:

* ROC AUC and Brier score of the model;
* BG/NBD (:class:`~kequn.models.BetaGeoModel` fitted at the training cutoff) as a baseline,
  twice: 1 − P(alive), the usual reading, and the model's own P(no purchase in the horizon);
* recency alone, the trivial baseline;
* a calibration table (deciles of predicted risk: mean prediction against observed rate);
* permutation importances on the test split, so a score can be explained.

:func:`train_churn` then (by default) refits the same settings at the test cutoff, the
latest cutoff whose N following days are all in the data, so predictions use the most recent
behaviour.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kequn.errors import InputError
from kequn.models.churn import (
    DEFAULT_HORIZON,
    MIN_CUSTOMERS,
    MIN_PER_CLASS,
    ChurnModel,
    _check_in_data,
    _check_labels,
    _plain,
    churn_dataset,
)
from kequn.models.churn_features import DataSpan, data_span, parse_day
from kequn.workspace import Workspace

__all__ = [
    "IMPORTANCE_MAX_ROWS",
    "ChurnReport",
    "calibration_table",
    "evaluate_churn",
    "permutation_importances",
    "resolve_cutoffs",
    "train_churn",
]

#: Permutation importance is computed on at most this many test customers (it predicts the
#: test set once per feature; a subset keeps that to seconds at any size).
IMPORTANCE_MAX_ROWS = 10_000


def resolve_cutoffs(
    span: DataSpan, cutoff: Any, test_cutoff: Any, horizon: int
) -> tuple[dt.date, dt.date]:
    """Training and test cutoffs, defaults filled in and checked against the data.

    The test cutoff defaults to the latest day whose ``horizon`` following days are in the
    data, the training cutoff to ``horizon`` days before the test cutoff: then the training
    labels end where the test features end, and the model never sees the test period.
    """
    train_day = parse_day(cutoff, "cutoff") if cutoff is not None else None
    if test_cutoff is not None:
        test_day = parse_day(test_cutoff, "test cutoff")
    elif train_day is not None:
        test_day = train_day + dt.timedelta(days=horizon)
    else:
        test_day = span.last_day - dt.timedelta(days=horizon)
    if train_day is None:
        train_day = test_day - dt.timedelta(days=horizon)
    _check_in_data(train_day, span, horizon, "cutoff")
    _check_in_data(test_day, span, horizon, "test cutoff")
    if train_day + dt.timedelta(days=horizon) > test_day:
        raise InputError(
            f"test cutoff {test_day.isoformat()!r} must be at least {horizon} days after the "
            f"training cutoff {train_day.isoformat()!r}, or the training labels would see "
            "the test period"
        )
    return train_day, test_day


@dataclass
class ChurnReport:
    """What :func:`evaluate_churn` measured on the time split; ``as_dict()`` for JSON."""

    horizon: int
    cutoff: dt.date
    test_cutoff: dt.date
    train_customers: int
    train_churn_rate: float
    test_customers: int
    test_churn_rate: float
    auc: float
    brier: float
    baseline_auc: float | None
    baseline_brier: float | None
    bgnbd_no_purchase_auc: float | None
    bgnbd_no_purchase_brier: float | None
    recency_auc: float
    calibration: pd.DataFrame
    importances: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    model_cutoff: dt.date | None = None
    model_customers: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": ChurnModel.name,
            "horizon_days": self.horizon,
            "cutoff": self.cutoff.isoformat(),
            "test_cutoff": self.test_cutoff.isoformat(),
            "train": {"customers": self.train_customers, "churn_rate": self.train_churn_rate},
            "test": {"customers": self.test_customers, "churn_rate": self.test_churn_rate},
            "auc": self.auc,
            "brier": self.brier,
            "baseline": {
                "name": "bgnbd_1_minus_p_alive",
                "auc": self.baseline_auc,
                "brier": self.baseline_brier,
            },
            "bgnbd_no_purchase": {
                "auc": self.bgnbd_no_purchase_auc,
                "brier": self.bgnbd_no_purchase_brier,
            },
            "recency_auc": self.recency_auc,
            "calibration": _records(self.calibration),
            "importances": _records(self.importances),
            "notes": list(self.notes),
            "model_cutoff": self.model_cutoff.isoformat() if self.model_cutoff else None,
            "model_customers": self.model_customers,
        }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                k: (None if isinstance(v, float) and math.isnan(v) else _plain(v))
                for k, v in row.items()
            }
        )
    return out


def calibration_table(y: Any, risk: Any, bins: int = 10) -> pd.DataFrame:
    """Customers in ``bins`` equal-sized groups by predicted risk (1 = lowest risk).

    Per group: customers, the mean predicted risk and the observed churn rate. A calibrated
    model has the two columns close; a good ranking has the observed rate rising.
    """
    labels = np.asarray(y, dtype=np.float64)
    p = np.asarray(risk, dtype=np.float64)
    n = len(p)
    if n == 0:
        raise InputError("no customers to build a calibration table from")
    bins = min(bins, n)
    group = np.empty(n, dtype=np.int64)
    group[np.argsort(p, kind="stable")] = np.arange(n) * bins // n
    count = np.bincount(group, minlength=bins)
    return pd.DataFrame(
        {
            "decile": np.arange(1, bins + 1),
            "customers": count,
            "mean_predicted": np.bincount(group, weights=p, minlength=bins) / count,
            "observed_rate": np.bincount(group, weights=labels, minlength=bins) / count,
            "min_predicted": pd.Series(p).groupby(group).min().to_numpy(),
            "max_predicted": pd.Series(p).groupby(group).max().to_numpy(),
        }
    )


def _auc_rows(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (Mann-Whitney: mean rank of the positives)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    return (ranks[:, truth].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def permutation_importances(
    model: ChurnModel,
    X: pd.DataFrame,
    y: Any,
    *,
    repeats: int = 5,
    max_rows: int = IMPORTANCE_MAX_ROWS,
    random_state: int = 0,
) -> pd.DataFrame:
    """How much ROC AUC drops when one feature's values are shuffled among customers.

    scikit-learn's ``permutation_importance`` computes the same numbers, but predicts once
    per feature *and* repeat and scores each with full input validation; here the repeats
    of one feature are stacked into one prediction and scored by ranks, which is several
    times faster on the few thousand customers of a small shop (at most ``max_rows`` test
    customers are used). Sorted by importance; ``std`` is over the repeats.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats must be a positive whole number, got {repeats!r}")
    model._fitted()
    frame = model._align(X)
    truth = _check_labels(y, len(frame))
    if truth.all() or not truth.any():
        raise InputError("permutation importance needs both churned and retained customers")
    rng = np.random.default_rng(random_state)
    if len(frame) > max_rows:
        pick = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
        frame, truth = frame.iloc[pick], truth[pick]
    n = len(frame)
    base = _auc_rows(truth, model.predict_proba(frame)[:, 1][None, :])[0]
    stacked = pd.concat([frame] * repeats, ignore_index=True)
    means, stds = [], []
    for name in frame.columns:
        original = stacked[name].to_numpy(copy=True)
        values = frame[name].to_numpy()
        stacked[name] = np.concatenate([values[rng.permutation(n)] for _ in range(repeats)])
        shuffled = model.predict_proba(stacked)[:, 1].reshape(repeats, n)
        stacked[name] = original
        drops = base - _auc_rows(truth, shuffled)
        means.append(float(drops.mean()))
        stds.append(float(drops.std()))
    return (
        pd.DataFrame({"feature": [str(c) for c in frame.columns], "importance": means, "std": stds})
        .sort_values(["importance", "feature"], ascending=[False, True])
        .reset_index(drop=True)
    )


def _check_population(y: pd.Series, day: dt.date, horizon: int, what: str) -> None:
    n = len(y)
    churned = int(y.sum())
    stayed = n - churned
    where = f"at the {what} {day.isoformat()}"
    if what == "cutoff" and n < MIN_CUSTOMERS:
        raise InputError(
            f"only {n} customers had bought {where}; the churn model needs at least "
            f"{MIN_CUSTOMERS}. Import more orders or pick a later cutoff"
        )
    least = MIN_PER_CLASS if what == "cutoff" else 1
    if min(churned, stayed) < least:
        if churned == 0 or stayed == 0:
            state = "all of them bought again" if churned == 0 else "none of them bought again"
            raise InputError(
                f"{where}, {n} customers had bought and {state} within {horizon} days: only "
                "one class in the labels, so there is nothing to learn or test. Pick another "
                "cutoff or horizon"
            )
        raise InputError(
            f"{where}, {churned} customers churned and {stayed} bought again within "
            f"{horizon} days; each needs at least {least}. Pick another cutoff or horizon"
        )


def evaluate_churn(
    workspace: Workspace,
    *,
    cutoff: Any = None,
    test_cutoff: Any = None,
    horizon: int = DEFAULT_HORIZON,
    model: ChurnModel | None = None,
    importance_repeats: int = 5,
) -> tuple[ChurnModel, ChurnReport]:
    """Fit at ``cutoff``, test at ``test_cutoff``; the fitted model and what it scored.

    Defaults: see :func:`resolve_cutoffs`. ``model`` gives the settings (its ``horizon`` is
    replaced by ``horizon``); it is not changed. The BG/NBD baselines are fitted on the
    summary at the training cutoff and scored on the test customers, so all scores are
    judged on the same split; a baseline that cannot be fitted (no repeat buyer) is left out
    with a note in the report rather than failing the evaluation.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    settings = (model or ChurnModel(horizon=horizon)).get_params()
    settings["horizon"] = horizon
    estimator = ChurnModel(**settings)
    estimator._check_settings()
    orders = workspace.table("orders")
    span = data_span(orders)
    train_day, test_day = resolve_cutoffs(span, cutoff, test_cutoff, horizon)

    X_train, y_train = churn_dataset(
        workspace, train_day, horizon, max_event_types=estimator.max_event_types
    )
    _check_population(y_train, train_day, horizon, "cutoff")
    estimator.fit(X_train, y_train)

    X_test, y_test = churn_dataset(workspace, test_day, horizon, types=estimator.event_types_)
    _check_population(y_test, test_day, horizon, "test cutoff")
    risk = estimator.predict_risk(X_test)
    truth = y_test.to_numpy(dtype=bool)

    notes: list[str] = []
    baselines = _bgnbd_risk(orders, train_day, test_day, horizon, X_test.index, notes)
    scored: dict[str, float | None] = {}
    for key, values in zip(("dead", "quiet"), baselines or (None, None), strict=True):
        ok = values is not None
        scored[f"{key}_auc"] = float(roc_auc_score(truth, values)) if ok else None
        scored[f"{key}_brier"] = float(brier_score_loss(truth, values)) if ok else None

    importances = permutation_importances(
        estimator, X_test, truth, repeats=importance_repeats, random_state=0
    )
    report = ChurnReport(
        horizon=horizon,
        cutoff=train_day,
        test_cutoff=test_day,
        train_customers=len(y_train),
        train_churn_rate=float(y_train.mean()),
        test_customers=len(y_test),
        test_churn_rate=float(truth.mean()),
        auc=float(roc_auc_score(truth, risk)),
        brier=float(brier_score_loss(truth, risk)),
        baseline_auc=scored["dead_auc"],
        baseline_brier=scored["dead_brier"],
        bgnbd_no_purchase_auc=scored["quiet_auc"],
        bgnbd_no_purchase_brier=scored["quiet_brier"],
        recency_auc=float(roc_auc_score(truth, X_test["recency_days"])),
        calibration=calibration_table(truth, risk),
        importances=importances,
        notes=notes,
    )
    return estimator, report


def _bgnbd_risk(
    orders: Any,
    train_day: dt.date,
    test_day: dt.date,
    horizon: int,
    index: pd.Index,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray] | None:
    """BG/NBD fitted at the training cutoff, scored at the test cutoff, two ways.

    * 1 − P(alive): the usual reading of the model as a churn score;
    * P(no purchase in the horizon) = 1 − P(alive) + P(alive) · ((α+T)/(α+T+t))^(r+x), the
      model's own probability of the label (a living customer's rate has the posterior
      Gamma(r+x, α+T)). It differs where 1 − P(alive) is blind: BG/NBD holds every customer
      without a repeat purchase alive, however long ago they bought.
    """
    from kequn.models.bgnbd import BetaGeoModel
    from kequn.models.summary import summary_from_orders

    try:
        calibration = summary_from_orders(orders, train_day, freq="W")
        bg = BetaGeoModel().fit(calibration["frequency"], calibration["recency"], calibration["T"])
        test = summary_from_orders(orders, test_day, freq="W").reindex(index)
    except InputError as exc:  # e.g. no repeat buyer: the report still stands without it
        notes.append(f"BG/NBD baselines left out: {exc}")
        return None
    x, big_t = test["frequency"].to_numpy(), test["T"].to_numpy()
    p_alive = np.asarray(
        bg.conditional_probability_alive(x, test["recency"].to_numpy(), big_t), dtype=np.float64
    )
    r, alpha = bg.params_["r"], bg.params_["alpha"]
    quiet_if_alive = ((alpha + big_t) / (alpha + big_t + horizon / 7.0)) ** (r + x)
    return 1.0 - p_alive, 1.0 - p_alive + p_alive * quiet_if_alive


def train_churn(
    workspace: Workspace,
    *,
    cutoff: Any = None,
    test_cutoff: Any = None,
    horizon: int = DEFAULT_HORIZON,
    model: ChurnModel | None = None,
    refit: bool = True,
    importance_repeats: int = 5,
) -> tuple[ChurnModel, ChurnReport]:
    """:func:`evaluate_churn`, then (``refit``) the same settings fitted at the test cutoff.

    The evaluation says how well the *procedure* predicts a period it has not seen; the
    refitted model applies it to the most recent complete labels, which is what predictions
    should use. ``report.model_cutoff`` says which cutoff the returned model learned from.
    """
    fitted, report = evaluate_churn(
        workspace,
        cutoff=cutoff,
        test_cutoff=test_cutoff,
        horizon=horizon,
        model=model,
        importance_repeats=importance_repeats,
    )
    if refit:
        final = ChurnModel(**fitted.get_params())
        X, y = churn_dataset(
            workspace, report.test_cutoff, horizon, max_event_types=final.max_event_types
        )
        _check_population(y, report.test_cutoff, horizon, "cutoff")
        fitted = final.fit(X, y)
        report.model_cutoff = report.test_cutoff
    else:
        report.model_cutoff = report.cutoff
    report.model_customers = fitted.n_customers_
    return fitted, report
