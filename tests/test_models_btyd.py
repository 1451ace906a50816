"""BG/NBD, Pareto/NBD and Gamma-Gamma against the published CDNow figures.

Sources: Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", Marketing Science
(BG/NBD and Pareto/NBD estimates, the holdout comparison); Fader, Hardie & Lee (2005), "RFM and
CLV", JMR, and Hardie's note on the Gamma-Gamma model; Hardie's BG/NBD spreadsheet (the
conditional expectation of customer 1). Further values as in /work/shared/data/README.md.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import gammaln, hyp2f1

from kequn.models import (
    CDNOW_CALIBRATION_END,
    CDNOW_OBSERVATION_END,
    BetaGeoModel,
    GammaGammaModel,
    ParetoNBDModel,
    calibration_holdout_table,
    customer_lifetime_value,
    load_cdnow_summary,
    load_cdnow_transactions,
    simulate_bgnbd,
    simulate_paretonbd,
    summary_from_transactions,
)


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_summary()


@pytest.fixture(scope="module")
def bgnbd(cdnow: pd.DataFrame) -> BetaGeoModel:
    return BetaGeoModel().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])


@pytest.fixture(scope="module")
def pareto(cdnow: pd.DataFrame) -> ParetoNBDModel:
    return ParetoNBDModel().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])


@pytest.fixture(scope="module")
def gamma_gamma(cdnow: pd.DataFrame) -> GammaGammaModel:
    return GammaGammaModel().fit(cdnow["frequency"], cdnow["monetary_value"])


@pytest.fixture(scope="module")
def cal_holdout() -> pd.DataFrame:
    tx = load_cdnow_transactions()
    return summary_from_transactions(
        tx["customer_id"], tx["date"], tx["amount"], CDNOW_CALIBRATION_END, CDNOW_OBSERVATION_END
    )


def rounded(params: dict[str, float], digits: int) -> dict[str, float]:
    return {k: round(v, digits) for k, v in params.items()}


# --- published parameter estimates ------------------------------------------------------


def test_bgnbd_reproduces_fader_hardie_lee_2005(bgnbd: BetaGeoModel) -> None:
    assert rounded(bgnbd.params_, 3) == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert round(bgnbd.log_likelihood_, 1) == -9582.4
    assert bgnbd.converged_


def test_pareto_nbd_reproduces_fader_hardie_lee_2005(pareto: ParetoNBDModel) -> None:
    assert rounded(pareto.params_, 3) == {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.668}
    # The paper prints beta = 11.669: it fitted the unrounded data (next test). The maximum is
    # flat in beta (standard error 6.2); lifetimes finds 11.6677 on this rounded summary.
    assert pareto.params_["beta"] == pytest.approx(11.669, abs=0.002)
    assert round(pareto.log_likelihood_, 1) == -9595.0
    assert pareto.converged_


def test_exact_summary_from_transactions_gives_every_printed_digit(
    cal_holdout: pd.DataFrame,
) -> None:
    """The published summary rounds recency and T to 0.01 week; from the transactions the
    times are exact (days / 7) and the fits land on the paper's figures to the last digit."""
    x, tx, big_t = cal_holdout["frequency"], cal_holdout["recency"], cal_holdout["T"]
    bg = BetaGeoModel().fit(x, tx, big_t)
    assert rounded(bg.params_, 3) == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert round(bg.log_likelihood_, 1) == -9582.4
    pn = ParetoNBDModel().fit(x, tx, big_t)
    assert rounded(pn.params_, 3) == {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    assert round(pn.log_likelihood_, 1) == -9595.0
    gg = GammaGammaModel().fit(x, cal_holdout["monetary_value"])
    assert rounded(gg.params_, 2) == {"p": 6.25, "q": 3.74, "gamma": 15.44}


def test_gamma_gamma_reproduces_fader_hardie_lee_rfm_clv(gamma_gamma: GammaGammaModel) -> None:
    # On the published summary zbar is rounded to cents and gamma comes out 15.4477 (as in
    # lifetimes); from the exact amounts it is 15.4435 (test_exact_summary_...).
    params = gamma_gamma.params_
    assert rounded({k: params[k] for k in ("p", "q")}, 2) == {"p": 6.25, "q": 3.74}
    assert params["gamma"] == pytest.approx(15.44, abs=0.01)
    assert round(gamma_gamma.log_likelihood_, 2) == -4055.92
    assert gamma_gamma.n_repeat_buyers_ == 946


def test_log_likelihoods_at_the_published_parameters(cdnow: pd.DataFrame) -> None:
    """The likelihood formulas themselves, at the printed (rounded) estimates."""
    x, tx, big_t = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    bg = BetaGeoModel()
    bg.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert bg.log_likelihood(x, tx, big_t) == pytest.approx(-9582.4, abs=0.1)
    pn = ParetoNBDModel()
    pn.params_ = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    assert pn.log_likelihood(x, tx, big_t) == pytest.approx(-9595.0, abs=0.1)


def test_standard_errors_match_the_observed_information(
    bgnbd: BetaGeoModel, gamma_gamma: GammaGammaModel
) -> None:
    # lifetimes 0.11.3 (autograd Hessian) prints the same standard errors.
    se = bgnbd.standard_errors_
    assert se == pytest.approx(
        {"r": 0.012557, "alpha": 0.378221, "a": 0.185719, "b": 0.705345}, rel=1e-3
    )
    se = gamma_gamma.standard_errors_
    assert se == pytest.approx({"p": 1.189687, "q": 0.290166, "gamma": 4.159994}, rel=1e-3)
    table = bgnbd.summary
    assert list(table.columns) == ["estimate", "std_error", "lower_95", "upper_95"]
    assert (table["lower_95"] < table["estimate"]).all()
    assert (table["estimate"] < table["upper_95"]).all()
    assert (table["lower_95"] > 0).all()  # log-scale intervals stay positive
    wide = bgnbd.confidence_intervals(0.99)
    assert (wide["lower"] < table["lower_95"]).all()


# --- predictions ------------------------------------------------------------------------


def test_bgnbd_conditional_expectation_of_hardies_spreadsheet(bgnbd: BetaGeoModel) -> None:
    value = bgnbd.conditional_expected_number_of_purchases_up_to_time(39, 2, 30.43, 38.86)
    assert round(float(value[0]), 3) == 1.226


def test_bgnbd_unconditional_expectation(bgnbd: BetaGeoModel) -> None:
    t = [0.1429, 1, 3, 31.86, 32, 78]
    expected = [0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576]
    got = bgnbd.expected_number_of_purchases_up_to_time(t)
    # The fourth decimal varies with the fitted digits (lifetimes gives 1.8580 at t = 78).
    assert np.abs(got - expected).max() < 5e-4
    assert bgnbd.expected_number_of_purchases_up_to_time(0) == 0.0


def test_gamma_gamma_expected_spend_of_customers_1_to_10(
    cdnow: pd.DataFrame, gamma_gamma: GammaGammaModel
) -> None:
    head = cdnow.iloc[:10]
    got = gamma_gamma.conditional_expected_average_profit(head["frequency"], head["monetary_value"])
    expected = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    # Customer 1 is 24.6586: the reference list truncates, lifetimes agrees with us.
    assert np.abs(got.to_numpy() - expected).max() < 0.01
    assert got.index.equals(head.index)
    p, q, gamma = gamma_gamma.params_.values()
    population_mean = p * gamma / (q - 1)
    assert got.iloc[2] == pytest.approx(population_mean)  # no repeat purchase


def test_holdout_comparison_of_the_paper(
    bgnbd: BetaGeoModel, pareto: ParetoNBDModel, cal_holdout: pd.DataFrame
) -> None:
    bg_table = calibration_holdout_table(bgnbd, cal_holdout)
    pn_table = calibration_holdout_table(pareto, cal_holdout)
    assert list(bg_table.index) == ["0", "1", "2", "3", "4", "5", "6", "7+", "all"]
    assert bg_table.loc["all", "actual_total"] == 1882
    assert bg_table.loc["all", "customers"] == 2357
    assert bg_table.loc["all", "predicted_total"] == pytest.approx(1653.4, abs=0.05)
    assert pn_table.loc["all", "predicted_total"] == pytest.approx(1665.5, abs=0.05)
    assert bg_table.attrs["correlation"] == pytest.approx(0.626, abs=0.0005)
    assert pn_table.attrs["correlation"] == pytest.approx(0.630, abs=0.0005)
    groups = bg_table.drop(index="all")
    assert groups["customers"].sum() == 2357
    assert groups["actual_total"].sum() == 1882
    # Predictions rise with past frequency, as in the paper's Figure 4.
    assert groups["predicted"].is_monotonic_increasing


def test_p_alive(bgnbd: BetaGeoModel, pareto: ParetoNBDModel, cdnow: pd.DataFrame) -> None:
    x, tx, big_t = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    bg = bgnbd.conditional_probability_alive(x, tx, big_t)
    pn = pareto.conditional_probability_alive(x, tx, big_t)
    assert ((bg > 0) & (bg <= 1)).all() and ((pn > 0) & (pn <= 1)).all()
    assert (bg[x == 0] == 1).all()  # BG/NBD: no dropout before a repeat purchase
    # A long silence after a repeat purchase lowers P(alive); a recent one raises it.
    quiet, recent = bgnbd.conditional_probability_alive([5, 5], [5.0, 38.0], [38.86, 38.86])
    assert quiet < 0.5 < recent
    quiet, recent = pareto.conditional_probability_alive([5, 5], [5.0, 38.0], [38.86, 38.86])
    assert quiet < 0.5 < recent


def test_horizon_grid_and_per_customer_horizons(bgnbd: BetaGeoModel, cdnow: pd.DataFrame) -> None:
    x, tx, big_t = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    grid = bgnbd.conditional_expected_number_of_purchases_up_to_time(
        np.array([[13.0], [39.0]]), x, tx, big_t
    )
    assert grid.shape == (2, len(cdnow))
    each = bgnbd.conditional_expected_number_of_purchases_up_to_time(
        np.full(len(cdnow), 39.0), x, tx, big_t
    )
    assert np.allclose(grid[1], each)
    assert (grid[0] < grid[1]).all()


def test_pareto_expected_purchases_formulas(pareto: ParetoNBDModel) -> None:
    r, alpha, s, beta = pareto.params_.values()
    t = 39.0
    expected = r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))
    assert pareto.expected_number_of_purchases_up_to_time(t) == pytest.approx(expected)
    # A customer seen at T = 0 is a new customer: conditional = unconditional.
    new = pareto.conditional_expected_number_of_purchases_up_to_time(t, 0, 0.0, 0.0)
    assert float(new[0]) == pytest.approx(expected)


def test_customer_lifetime_value_is_discounted_expected_spend(
    bgnbd: BetaGeoModel, gamma_gamma: GammaGammaModel, cdnow: pd.DataFrame
) -> None:
    head = cdnow.iloc[:50]
    x, tx, big_t, m = head["frequency"], head["recency"], head["T"], head["monetary_value"]
    clv = gamma_gamma.customer_lifetime_value(
        bgnbd, x, tx, big_t, m, horizon=52.14, periods=12, discount_rate=0.01, margin=0.3
    )
    spend = gamma_gamma.conditional_expected_average_profit(x, m).to_numpy()
    step = 52.14 / 12
    expected = np.zeros(len(head))
    for i in range(1, 13):  # the definition, one period at a time
        bought = bgnbd.conditional_expected_number_of_purchases_up_to_time(
            i * step, x, tx, big_t
        ) - bgnbd.conditional_expected_number_of_purchases_up_to_time((i - 1) * step, x, tx, big_t)
        expected += 0.3 * spend * bought.to_numpy() / 1.01**i
    assert np.allclose(clv.to_numpy(), expected, rtol=1e-12)
    assert clv.index.equals(head.index)
    # Without discounting the periods add up to the whole horizon.
    flat = customer_lifetime_value(bgnbd, spend, x, tx, big_t, horizon=52.14, periods=7)
    whole = bgnbd.conditional_expected_number_of_purchases_up_to_time(52.14, x, tx, big_t)
    assert np.allclose(flat.to_numpy(), spend * whole.to_numpy())


# --- the summary from transactions ------------------------------------------------------


def test_summary_from_transactions_reproduces_the_published_summary(
    cal_holdout: pd.DataFrame, cdnow: pd.DataFrame
) -> None:
    assert cal_holdout.index.equals(cdnow.index)
    assert (cal_holdout["frequency"] == cdnow["frequency"]).all()
    assert (cal_holdout["recency"].round(2) == cdnow["recency"]).all()
    assert (cal_holdout["T"].round(2) == cdnow["T"]).all()
    # zbar is published rounded half up (22.345 -> 22.35); 78 means end in exactly 5.
    half_up = np.floor(cal_holdout["monetary_value"] * 100 + 0.5 + 1e-9) / 100
    assert (half_up == cdnow["monetary_value"]).all()
    assert cal_holdout.loc[1, "T"] == pytest.approx(272 / 7)  # first seen 1997-01-01
    assert cal_holdout["frequency_holdout"].sum() == 1882
    assert (cal_holdout["duration_holdout"] == 39.0).all()


def test_summary_rules_on_a_small_example() -> None:
    ids = ["a", "a", "a", "a", "b", "b", "c"]
    stamps = pd.to_datetime(
        [
            "2024-01-01 09:00",
            "2024-01-01 18:00",  # same day: one transaction of 30
            "2024-01-08 10:00",
            "2024-01-15 00:00",  # a zero-amount purchase still counts
            "2024-01-02 12:00",
            "2024-02-01 12:00",  # after the calibration end: holdout
            "2024-01-31 23:59",  # first purchase on the last calibration day
        ]
    )
    amounts = [10.0, 20.0, 5.0, 0.0, 7.0, 9.0, 3.0]
    out = summary_from_transactions(ids, stamps, amounts, "2024-01-31", "2024-02-29", freq="D")
    assert out.loc["a"].to_dict() == {
        "frequency": 2,
        "recency": 14.0,
        "T": 30.0,
        "monetary_value": 2.5,
        "frequency_holdout": 0,
        "monetary_value_holdout": 0.0,
        "duration_holdout": 29.0,
    }
    assert out.loc["b", "frequency"] == 0 and out.loc["b", "frequency_holdout"] == 1
    assert out.loc["b", "monetary_value_holdout"] == 9.0
    assert out.loc["c", "T"] == 0.0
    weeks = summary_from_transactions(ids, stamps, amounts, "2024-01-31")
    assert weeks.loc["a", "T"] == pytest.approx(30 / 7)
    assert "frequency_holdout" not in weeks.columns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration_end": "2023-12-31"}, "before the first purchase"),
        ({"observation_end": "2024-01-10"}, "must be after calibration_end"),
        ({"calibration_end": "2024-03-01", "observation_end": "2024-04-01"}, "holds no data"),
        ({"freq": "M"}, "freq must be one of"),
        ({"calibration_end": "not a date"}, "calibration_end must be a date"),
    ],
)
def test_summary_rejects_bad_periods(kwargs: dict, message: str) -> None:
    args = {
        "customer_ids": ["a", "a"],
        "timestamps": pd.to_datetime(["2024-01-01", "2024-02-01"]),
        "amounts": [1.0, 2.0],
        "calibration_end": "2024-01-15",
        "observation_end": "2024-02-15",
    } | kwargs
    with pytest.raises(ValueError, match=message):
        summary_from_transactions(**args)


def test_summary_rejects_bad_columns() -> None:
    days = pd.to_datetime(["2024-01-01", "2024-01-02"])
    with pytest.raises(ValueError, match="timestamps must be dates"):
        summary_from_transactions(["a", "b"], [20240101, 20240102], [1.0, 2.0], "2024-01-31")
    with pytest.raises(ValueError, match="timestamps must not be missing; position 1"):
        summary_from_transactions(["a", "b"], [days[0], pd.NaT], [1.0, 2.0], "2024-01-31")
    with pytest.raises(ValueError, match="amounts must be finite; position 0"):
        summary_from_transactions(["a", "b"], days, [np.nan, 2.0], "2024-01-31")
    with pytest.raises(ValueError, match="customer_ids must not be missing"):
        summary_from_transactions(["a", None], days, [1.0, 2.0], "2024-01-31")
    with pytest.raises(ValueError, match="same length"):
        summary_from_transactions(["a"], days, [1.0, 2.0], "2024-01-31")


# --- the likelihoods, checked independently ---------------------------------------------


def pareto_likelihood_by_quadrature(params: dict, x: int, tx: float, big_t: float) -> float:
    """L = Gamma(r+x) a^r b^s / Gamma(r) [(a+T)^-(r+x) (b+T)^-s + s int_tx^T ...]."""
    r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
    integral, _ = integrate.quad(
        lambda u: (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1),
        tx,
        big_t,
        epsabs=0,
        epsrel=1e-13,
    )
    front = math.exp(gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta))
    return math.log(front * ((alpha + big_t) ** -(r + x) * (beta + big_t) ** -s + s * integral))


@pytest.mark.parametrize(
    "params",
    [
        {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669},  # alpha < beta
        {"r": 0.8, "alpha": 30.0, "s": 1.7, "beta": 2.0},  # alpha > beta, z near 1
        {"r": 2.0, "alpha": 1.0, "s": 0.3, "beta": 60.0},  # alpha << beta
    ],
)
def test_pareto_likelihood_against_quadrature(params: dict) -> None:
    rows = [(1, 1.71, 38.86), (0, 0.0, 38.86), (5, 20.0, 30.0), (29, 38.43, 38.86), (3, 7.0, 7.0)]
    rows += [(0, 0.0, 20.0), (1, 1.71, 38.86)]  # customers without repeat purchase in between
    model = ParetoNBDModel()
    model.params_ = params
    x, tx, big_t = map(np.array, zip(*rows, strict=True))
    got = model.score_samples(x, tx, big_t)
    expected = [pareto_likelihood_by_quadrature(params, *row) for row in rows]
    assert np.allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_bgnbd_likelihood_against_the_paper_formula(cdnow: pd.DataFrame) -> None:
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    model = BetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    x, tx, big_t = (cdnow[c].to_numpy() for c in ("frequency", "recency", "T"))
    beta_ratio = np.exp(gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x))
    front = np.exp(gammaln(r + x) - gammaln(r)) * alpha**r
    drop = np.where(x > 0, a / (b + np.maximum(x, 1) - 1) * (alpha + tx) ** -(r + x), 0)
    expected = np.log(beta_ratio * front * ((alpha + big_t) ** -(r + x) + drop))
    assert np.allclose(model.score_samples(x, tx, big_t), expected, rtol=1e-12)


def test_beta_series_matches_scipy_hyp2f1() -> None:
    """The Pareto/NBD series, including z near 1 (alpha and beta far apart) and large p."""
    from kequn.models.paretonbd import _beta_series

    k = np.array([0.5, 3.0, 30.0, 1.2, 0.8, 1.16, 60.0, 5.0, 0.3])
    p = np.array([1.6, 0.5, 40.0, 2.0, 0.3, 1.6, 1.0, 400.0, 0.6])
    z = np.array([0.1, 0.9, 0.5, 0.99, 0.0, 0.999, 0.3, 0.6, 0.9999])
    log_j, d_k, d_p, d_z = _beta_series(k, p, z)
    expected = np.log(hyp2f1(p, k, k + 1, z) / k)
    assert np.allclose(log_j, expected, rtol=1e-13, atol=0)
    # Derivatives: J_z is p J(k+1, p+1, z), a closed form to check against.
    assert np.allclose(d_z, p * hyp2f1(p + 1, k + 1, k + 2, z) / (k + 1) / np.exp(expected))
    # J_k and J_p against central differences of log J.
    h = 1e-6
    for j, derivative in ((0, d_k), (1, d_p)):
        up = [k.copy(), p.copy(), z]
        down = [k.copy(), p.copy(), z]
        up[j] = up[j] + h
        down[j] = down[j] - h
        numeric = (_beta_series(*up)[0] - _beta_series(*down)[0]) / (2 * h)
        assert np.allclose(derivative, numeric, rtol=1e-5, atol=1e-7)


def test_simulated_customers_give_back_their_parameters() -> None:
    rng = np.random.default_rng(7)
    big_t = rng.integers(140, 365, 6_000) / 7.0  # whole days, in weeks
    true_bg = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0}
    df = simulate_bgnbd(**true_bg, T=big_t, random_state=rng)
    fitted = BetaGeoModel().fit(df["frequency"], np.floor(df["recency"] * 7) / 7, df["T"])
    for name, value in true_bg.items():
        low, high = fitted.confidence_intervals(0.999).loc[name]
        assert low < value < high, name
    true_pn = {"r": 0.7, "alpha": 8.0, "s": 0.9, "beta": 4.0}  # alpha > beta this time
    df = simulate_paretonbd(**true_pn, T=big_t, random_state=rng)
    fitted = ParetoNBDModel().fit(df["frequency"], np.floor(df["recency"] * 7) / 7, df["T"])
    for name, value in true_pn.items():
        low, high = fitted.confidence_intervals(0.999).loc[name]
        assert low < value < high, name


def test_weights_equal_repeated_rows(cdnow: pd.DataFrame) -> None:
    counts = cdnow.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    weighted = BetaGeoModel().fit(counts["frequency"], counts["recency"], counts["T"], counts["n"])
    assert rounded(weighted.params_, 3) == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert weighted.n_customers_ == 2357


def test_expected_purchases_refuse_the_singular_parameter() -> None:
    bg = BetaGeoModel()
    bg.params_ = {"r": 0.5, "alpha": 4.0, "a": 1.0, "b": 2.0}
    with pytest.raises(ValueError, match="a != 1"):
        bg.expected_number_of_purchases_up_to_time(10)
    pn = ParetoNBDModel()
    pn.params_ = {"r": 0.5, "alpha": 4.0, "s": 1.0, "beta": 2.0}
    with pytest.raises(ValueError, match="s != 1"):
        pn.conditional_expected_number_of_purchases_up_to_time(10, [1], [2.0], [5.0])
