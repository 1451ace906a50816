"""Every model follows the same conventions (scikit-learn's) and has an exact gradient.

One test per convention, parametrised over all models, so a new model is checked by adding it
to ``kequn.models.MODELS``.
"""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kequn.models
from kequn.errors import InputError, NotFittedError
from kequn.models import (
    MODELS,
    BetaGeoModel,
    ConvergenceWarning,
    GammaGammaModel,
    ParetoNBDModel,
    load_cdnow_summary,
)
from kequn.models._base import BaseModel, RFTData

ALL = list(MODELS.values())


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_summary()


_FITTED: dict[type, BaseModel] = {}


def fitted(model_cls: type[BaseModel], df: pd.DataFrame) -> BaseModel:
    """One fit per model class for the whole module (fits are what takes time)."""
    if model_cls not in _FITTED:
        _FITTED[model_cls] = model_cls().fit(*fit_args(model_cls, df))
    return _FITTED[model_cls]


def fit_args(model_cls: type[BaseModel], df: pd.DataFrame) -> tuple:
    if model_cls is GammaGammaModel:
        return (df["frequency"], df["monetary_value"])
    return (df["frequency"], df["recency"], df["T"])


def predict_calls(model: BaseModel, df: pd.DataFrame) -> list:
    """Every prediction method of the model, ready to call."""
    x, tx, big_t, m = df["frequency"], df["recency"], df["T"], df["monetary_value"]
    if isinstance(model, GammaGammaModel):
        return [
            lambda: model.conditional_expected_average_profit(x, m),
            lambda: model.log_likelihood(x, m),
            lambda: model.summary,
            lambda: model.to_dict(),
        ]
    return [
        lambda: model.conditional_expected_number_of_purchases_up_to_time(10, x, tx, big_t),
        lambda: model.conditional_probability_alive(x, tx, big_t),
        lambda: model.expected_number_of_purchases_up_to_time(10),
        lambda: model.score_samples(x, tx, big_t),
        lambda: model.log_likelihood(x, tx, big_t),
        lambda: model.summary,
        lambda: model.to_dict(),
    ]


def test_public_surface_is_pinned() -> None:
    assert sorted(kequn.models.__all__) == sorted(
        [
            "BetaGeoModel",
            "CDNOW_CALIBRATION_END",
            "CDNOW_OBSERVATION_END",
            "ConvergenceWarning",
            "DataWarning",
            "GammaGammaModel",
            "MODELS",
            "ParetoNBDModel",
            "calibration_holdout_table",
            "customer_lifetime_value",
            "load_cdnow_summary",
            "load_cdnow_transactions",
            "simulate_bgnbd",
            "simulate_paretonbd",
            "summary_from_orders",
            "summary_from_transactions",
        ]
    )
    assert set(MODELS) == {"bgnbd", "pareto", "gamma-gamma"}


@pytest.mark.parametrize("model_cls", ALL)
def test_init_stores_settings_only(model_cls: type[BaseModel]) -> None:
    model = model_cls(max_iter=50, tol=1e-8)
    params = set(inspect.signature(model_cls.__init__).parameters) - {"self"}
    assert set(vars(model)) == params
    assert model.max_iter == 50 and model.tol == 1e-8
    assert not [k for k in vars(model) if k.endswith("_")]
    assert repr(model).startswith(model_cls.__name__ + "(")


@pytest.mark.parametrize("model_cls", ALL)
def test_fit_returns_self_and_learns_attributes_ending_in_underscore(
    model_cls: type[BaseModel], cdnow: pd.DataFrame
) -> None:
    model = model_cls()
    assert model.fit(*fit_args(model_cls, cdnow)) is model
    learned = {k for k in vars(model) if k.endswith("_")}
    assert {"params_", "log_likelihood_", "covariance_", "converged_", "n_iter_"} <= learned
    assert list(model.params_) == list(model_cls.param_names)
    assert all(np.isfinite(v) and v > 0 for v in model.params_.values())
    assert model.summary.shape == (len(model_cls.param_names), 4)
    document = json.loads(json.dumps(model.to_dict()))
    assert document["model"] == model_cls.name
    assert set(document["params"]) == set(model_cls.param_names)
    assert document["log_likelihood"] == pytest.approx(model.log_likelihood_)


@pytest.mark.parametrize("model_cls", ALL)
def test_not_fitted_error_before_fit(model_cls: type[BaseModel], cdnow: pd.DataFrame) -> None:
    model = model_cls()
    for call in predict_calls(model, cdnow.iloc[:5]):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    with pytest.raises(AttributeError):  # NotFittedError is also an AttributeError
        model.confidence_intervals()


@pytest.mark.parametrize("model_cls", ALL)
def test_predictions_keep_the_customer_index(
    model_cls: type[BaseModel], cdnow: pd.DataFrame
) -> None:
    model = fitted(model_cls, cdnow)
    head = cdnow.iloc[10:20]
    per_customer = 1 if model_cls is GammaGammaModel else 2  # the first calls of the list
    for call in predict_calls(model, head)[:per_customer]:
        result = call()
        assert isinstance(result, pd.Series)
        assert result.index.equals(head.index)
        assert np.isfinite(result).all()


def bad_inputs(model_cls: type[BaseModel]) -> list[tuple[dict, str]]:
    """(changes to valid inputs, the argument the message must name)."""
    cases = [
        ({"frequency": [-1, 1, 2]}, "frequency"),
        ({"frequency": [np.nan, 1, 2]}, "frequency"),
        ({"frequency": [1, 2]}, "same length"),
    ]
    if model_cls is GammaGammaModel:
        return cases + [
            ({"monetary_value": [-5.0, 10.0, 10.0]}, "monetary_value"),
            ({"monetary_value": [0.0, 10.0, 10.0]}, "monetary_value"),
        ]
    return cases + [
        ({"frequency": [0.5, 1, 2]}, "frequency must be whole numbers"),
        ({"recency": [5.0, 40.0, 3.0]}, "recency must be <= T"),
        ({"recency": [-1.0, 2.0, 3.0]}, "recency"),
        ({"T": [10.0, np.inf, 10.0]}, "T must be finite"),
        ({"frequency": [0, 1, 2], "recency": [1.0, 2.0, 3.0]}, "recency must be 0"),
    ]


@pytest.mark.parametrize(
    ("model_cls", "change", "message"),
    [(m, change, msg) for m in ALL for change, msg in bad_inputs(m)],
)
def test_bad_input_raises_value_error_naming_the_argument(
    model_cls: type[BaseModel], change: dict, message: str
) -> None:
    valid = {"frequency": [1, 1, 2], "recency": [5.0, 2.0, 3.0], "T": [10.0, 10.0, 10.0]}
    valid["monetary_value"] = [10.0, 12.0, 9.0]
    args = valid | change
    model = model_cls()
    with pytest.raises(ValueError, match=message) as info:
        if model_cls is GammaGammaModel:
            model.fit(args["frequency"], args["monetary_value"])
        else:
            model.fit(args["frequency"], args["recency"], args["T"])
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize("model_cls", [BetaGeoModel, ParetoNBDModel])
def test_all_zero_frequency_is_a_clear_error(model_cls: type[BaseModel]) -> None:
    with pytest.raises(ValueError, match="frequency is 0 for every customer"):
        model_cls().fit([0, 0, 0], [0.0, 0.0, 0.0], [5.0, 6.0, 7.0])


def test_gamma_gamma_needs_repeat_buyers() -> None:
    with pytest.raises(ValueError, match="at least 10 customers with repeat purchases"):
        GammaGammaModel().fit([0, 1, 2, 0], [0.0, 10.0, 12.0, 0.0])


@pytest.mark.parametrize("model_cls", ALL)
def test_bad_settings_are_reported(model_cls: type[BaseModel], cdnow: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="max_iter"):
        model_cls(max_iter=0).fit(*fit_args(model_cls, cdnow))
    wrong = {"nope": 1.0}
    with pytest.raises(ValueError, match="initial_params must name exactly"):
        model_cls(initial_params=wrong).fit(*fit_args(model_cls, cdnow))


@pytest.mark.parametrize("model_cls", ALL)
def test_too_few_iterations_warn(model_cls: type[BaseModel], cdnow: pd.DataFrame) -> None:
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model_cls(max_iter=2).fit(*fit_args(model_cls, cdnow))


@pytest.mark.parametrize("model_cls", ALL)
def test_initial_params_are_used(model_cls: type[BaseModel], cdnow: pd.DataFrame) -> None:
    reference = fitted(model_cls, cdnow)
    start = {k: v * 1.5 for k, v in reference.params_.items()}
    refit = model_cls(initial_params=start).fit(*fit_args(model_cls, cdnow))
    assert refit.params_ == pytest.approx(reference.params_, rel=1e-5)


@pytest.mark.parametrize("model_cls", ALL)
def test_large_data_path_finds_the_same_optimum(
    model_cls: type[BaseModel], cdnow: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above SUBSAMPLE_ABOVE rows a fit starts from a subset, then Newton on all rows."""
    import kequn.models._base as base

    reference = fitted(model_cls, cdnow)
    monkeypatch.setattr(base, "SUBSAMPLE_ABOVE", 100)
    monkeypatch.setattr(base, "SUBSAMPLE_ROWS", 300)
    model = model_cls().fit(*fit_args(model_cls, cdnow))
    assert model.converged_
    assert model.params_ == pytest.approx(reference.params_, rel=1e-6)
    assert model.log_likelihood_ == pytest.approx(reference.log_likelihood_, abs=1e-6)
    assert model.standard_errors_ == pytest.approx(reference.standard_errors_, rel=1e-3)


# --- exact gradients ----------------------------------------------------------------------


def numeric_gradient(model: BaseModel, params: np.ndarray, data: object) -> np.ndarray:
    grad = np.empty(len(params))
    for j in range(len(params)):
        h = 1e-6 * params[j]
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        grad[j] = (model._loglik(up, data)[0] - model._loglik(down, data)[0]) / (2 * h)
    return grad


TRANSACTION_POINTS = [
    (BetaGeoModel, [0.243, 4.414, 0.793, 2.426]),
    (BetaGeoModel, [2.0, 0.5, 3.0, 0.7]),
    (ParetoNBDModel, [0.553, 10.578, 0.606, 11.669]),  # alpha < beta
    (ParetoNBDModel, [0.8, 30.0, 1.7, 2.0]),  # alpha > beta
    (ParetoNBDModel, [1.5, 0.2, 0.4, 40.0]),  # alpha << beta: z near 1
    (ParetoNBDModel, [0.5, 5.0, 0.5, 5.0]),  # alpha == beta: z = 0
]


@pytest.mark.parametrize(("model_cls", "params"), TRANSACTION_POINTS)
def test_transaction_model_gradient_is_exact(
    model_cls: type[BaseModel], params: list[float], cdnow: pd.DataFrame
) -> None:
    model = model_cls()
    x, tx, big_t = (cdnow[c].to_numpy(np.float64) for c in ("frequency", "recency", "T"))
    data = model._prepare(x, tx, big_t, np.ones(len(x)))
    theta = np.array(params)
    _, grad = model._loglik(theta, data)
    assert np.allclose(grad, numeric_gradient(model, theta, data), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("params", [[6.25, 3.74, 15.44], [0.5, 8.0, 2.0]])
def test_gamma_gamma_gradient_is_exact(params: list[float], cdnow: pd.DataFrame) -> None:
    from kequn.models.gammagamma import _Data

    rep = cdnow[cdnow["frequency"] > 0]
    data = _Data(
        rep["frequency"].to_numpy(np.float64),
        rep["monetary_value"].to_numpy(),
        np.ones(len(rep)),
    )
    model = GammaGammaModel()
    theta = np.array(params)
    _, grad = model._loglik(theta, data)
    assert np.allclose(grad, numeric_gradient(model, theta, data), rtol=1e-6, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    r=st.floats(0.05, 5),
    alpha=st.floats(0.05, 50),
    a=st.floats(0.05, 5),
    b=st.floats(0.05, 5),
    s=st.floats(0.05, 5),
    beta=st.floats(0.05, 50),
)
def test_gradients_are_exact_anywhere(
    r: float, alpha: float, a: float, b: float, s: float, beta: float
) -> None:
    """Random parameters, a small fixed data set: both transaction models' gradients."""
    x = np.array([0, 0, 1, 2, 5, 12, 1, 3], dtype=np.float64)
    tx = np.array([0, 0, 1.5, 30.0, 20.0, 38.0, 38.86, 0.5])
    big_t = np.array([38.86, 27.0, 38.86, 38.86, 32.0, 38.86, 38.86, 30.0])
    for model, theta in (
        (BetaGeoModel(), [r, alpha, a, b]),
        (ParetoNBDModel(), [r, alpha, s, beta]),
    ):
        data = model._prepare(x, tx, big_t, np.ones(len(x)))
        theta = np.array(theta)
        value, grad = model._loglik(theta, data)
        assert np.isfinite(value)
        assert np.allclose(grad, numeric_gradient(model, theta, data), rtol=1e-5, atol=1e-5)


def test_rows_are_collapsed_with_counts() -> None:
    x = np.array([0, 0, 1, 1, 2], dtype=np.float64)
    tx = np.array([0, 0, 3.0, 3.0, 4.0])
    big_t = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    data = RFTData(x, tx, big_t, np.ones(5))
    assert len(data.x) == 3 and data.total == 5
    assert sorted(data.w.tolist()) == [1.0, 2.0, 2.0]
    assert data.n_zero == 1 and data.x[0] == 0
    # Each customer maps back to its row.
    assert np.array_equal(data.x[data.inverse], x)
    assert np.array_equal(data.tx[data.inverse], tx)


def test_predictions_do_not_warn(cdnow: pd.DataFrame) -> None:
    """Extreme but valid inputs stay finite and quiet (pytest turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model_cls in (BetaGeoModel, ParetoNBDModel):
            model = fitted(model_cls, cdnow)
            x = np.array([0, 300, 1, 50])
            tx = np.array([0.0, 1e4, 0.0, 1.0])
            big_t = np.array([0.0, 1e4, 1e4, 1e4])
            for value in (
                model.conditional_probability_alive(x, tx, big_t),
                model.conditional_expected_number_of_purchases_up_to_time(1e3, x, tx, big_t),
            ):
                assert np.isfinite(value).all()
