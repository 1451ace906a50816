"""Fit time of kequn's CLV models against lifetimes 0.11.3, on CDNow and at scale.

Run:  .venv/bin/python bench/clv.py [--customers 1000000] [--repeat 3] [--skip-lifetimes]

lifetimes is only needed here (``pip install lifetimes==0.11.3 'setuptools<81'``, or the
``bench`` extra); it is never a runtime dependency of kequn. Each fit is timed best-of
``--repeat`` (lifetimes at scale once: it takes seconds to minutes). Both libraries'
estimates are scored with kequn's log-likelihood so that "same optimum" is checked on one
formula (lifetimes' own stored value is a per-customer mean on rescaled time).

The synthetic customers come from the BG/NBD (or Pareto/NBD) process with the CDNow
parameters, a 12-week acquisition cohort and a calibration end 39 weeks after its start,
with every time rounded down to whole days as in real transaction data.

BLAS runs single-threaded (unless OPENBLAS_NUM_THREADS is already set): the optimisers work
on 3 or 4 parameters, where BLAS threads only add overhead, and on a machine busy with other
work scipy's L-BFGS-B otherwise spends milliseconds per iteration waiting for its threads.
Neither library's likelihood uses BLAS, so this favours neither.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402  (after the BLAS setting, before NumPy loads)
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kequn.models import (  # noqa: E402
    BetaGeoModel,
    GammaGammaModel,
    ParetoNBDModel,
    load_cdnow_summary,
    simulate_bgnbd,
    simulate_paretonbd,
)

CDNOW_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
CDNOW_PARETO = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
CDNOW_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def best_of(repeat: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (the machine is shared; the minimum is the signal)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def synthetic(process: str, n: int, seed: int = 1, whole_days: bool = True) -> pd.DataFrame:
    """n customers, times in weeks; in whole days (as a summary of real data has them) or
    continuous (as lifetimes' generators make them, no two customers alike)."""
    rng = np.random.default_rng(seed)
    if whole_days:
        entry_day = rng.integers(0, 84, n)  # first purchases spread over 12 weeks
        big_t = (273 - entry_day) / 7.0  # calibration end 39 weeks after the cohort starts
    else:
        big_t = rng.uniform(27.0, 39.0, n)
    if process == "bgnbd":
        df = simulate_bgnbd(**CDNOW_BGNBD, T=big_t, random_state=rng)
    else:
        df = simulate_paretonbd(**CDNOW_PARETO, T=big_t, random_state=rng)
    if whole_days:
        df["recency"] = np.floor(df["recency"].to_numpy() * 7.0) / 7.0
    # Spend: the mean of x Gamma(p, nu) amounts, nu ~ Gamma(q, gamma).
    x = df["frequency"].to_numpy()
    nu = rng.gamma(CDNOW_GG["q"], 1.0 / CDNOW_GG["gamma"], n)
    pos = x > 0
    zbar = np.zeros(n)
    zbar[pos] = rng.gamma(CDNOW_GG["p"] * x[pos], 1.0 / (nu[pos] * x[pos]))
    df["monetary_value"] = np.round(zbar, 2).clip(min=0.01) * pos
    return df


def row(label: str, seconds: float, ll: float | None, params: dict[str, float]) -> str:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in params.items())
    ll_text = f"{ll:14.2f}" if ll is not None else " " * 14
    return f"  {label:<34} {seconds:9.3f} s   LL {ll_text}   {shown}"


def lifetimes_fitters() -> Any:
    try:
        import lifetimes
    except ImportError:
        sys.exit("lifetimes is not installed: pip install lifetimes==0.11.3 'setuptools<81'")
    return lifetimes


def bench_transaction(
    title: str,
    model_cls: type,
    lifetimes_cls: Any,
    names: tuple[str, ...],
    df: pd.DataFrame,
    repeat: int,
    lifetimes_repeat: int,
    with_lifetimes: bool,
) -> float:
    x, tx, big_t = df["frequency"], df["recency"], df["T"]
    print(f"{title}  ({len(df):,} customers)")
    secs, model = best_of(repeat, lambda: model_cls().fit(x, tx, big_t))
    print(row("kequn", secs, model.log_likelihood_, model.params_))
    if not with_lifetimes:
        return secs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        l_secs, fitter = best_of(lifetimes_repeat, lambda: lifetimes_cls().fit(x, tx, big_t))
    l_params = dict(zip(model_cls.param_names, fitter.params_[list(names)].tolist(), strict=True))
    scorer = model_cls()
    scorer.params_ = l_params
    l_ll = scorer.log_likelihood(x, tx, big_t)
    print(row("lifetimes 0.11.3", l_secs, l_ll, l_params))
    print(
        f"  -> kequn {l_secs / secs:.0f}x faster; "
        f"log-likelihood difference {model.log_likelihood_ - l_ll:+.3f}"
    )
    return secs


def bench_gamma_gamma(
    df: pd.DataFrame, repeat: int, lifetimes_repeat: int, with_lifetimes: bool
) -> None:
    rep = df[df["frequency"] > 0]
    print(f"Gamma-Gamma  ({len(rep):,} repeat buyers)")
    secs, model = best_of(
        repeat, lambda: GammaGammaModel().fit(df["frequency"], df["monetary_value"])
    )
    print(row("kequn", secs, model.log_likelihood_, model.params_))
    if not with_lifetimes:
        return
    lifetimes = lifetimes_fitters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        l_secs, fitter = best_of(
            lifetimes_repeat,
            lambda: lifetimes.GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"]),
        )
    l_params = dict(zip(("p", "q", "gamma"), fitter.params_[["p", "q", "v"]].tolist(), strict=True))
    scorer = GammaGammaModel()
    scorer.params_ = l_params
    l_ll = scorer.log_likelihood(rep["frequency"], rep["monetary_value"])
    print(row("lifetimes 0.11.3", l_secs, l_ll, l_params))
    print(
        f"  -> kequn {l_secs / secs:.0f}x faster; "
        f"log-likelihood difference {model.log_likelihood_ - l_ll:+.3f}"
    )


def bench_predictions(df: pd.DataFrame, repeat: int) -> None:
    x, tx, big_t, m = df["frequency"], df["recency"], df["T"], df["monetary_value"]
    bg = BetaGeoModel().fit(x, tx, big_t)
    pn = ParetoNBDModel().fit(x, tx, big_t)
    gg = GammaGammaModel().fit(x, m)
    print(f"Predictions  ({len(df):,} customers, horizon 13 weeks)")
    bg_expected = bg.conditional_expected_number_of_purchases_up_to_time
    pn_expected = pn.conditional_expected_number_of_purchases_up_to_time
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("BG/NBD expected purchases", lambda: bg_expected(13, x, tx, big_t)),
        ("BG/NBD P(alive)", lambda: bg.conditional_probability_alive(x, tx, big_t)),
        ("Pareto/NBD expected purchases", lambda: pn_expected(13, x, tx, big_t)),
        ("Pareto/NBD P(alive)", lambda: pn.conditional_probability_alive(x, tx, big_t)),
        ("Gamma-Gamma expected spend", lambda: gg.conditional_expected_average_profit(x, m)),
        (
            "CLV (BG/NBD, 12 periods, discounted)",
            lambda: gg.customer_lifetime_value(
                bg, x, tx, big_t, m, horizon=52.14, periods=12, discount_rate=0.01
            ),
        ),
    ]
    total = 0.0
    for label, func in cases:
        secs, _ = best_of(repeat, func)
        total += secs
        print(f"  {label:<40} {secs:7.3f} s")
    print(f"  {'all of the above':<40} {total:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--skip-lifetimes", action="store_true", help="time kequn only (no lifetimes needed)"
    )
    parser.add_argument(
        "--lifetimes-pareto-at-scale",
        action="store_true",
        help="also fit lifetimes' Pareto/NBD on the large set (Nelder-Mead: many minutes)",
    )
    parser.add_argument(
        "--skip-continuous", action="store_true", help="skip the continuous-time data sets"
    )
    args = parser.parse_args()
    with_lt = not args.skip_lifetimes
    lt = lifetimes_fitters() if with_lt else None

    print("== CDNow 1/10 sample (2,357 customers, weeks) ==")
    cdnow = load_cdnow_summary()
    bench_transaction(
        "BG/NBD",
        BetaGeoModel,
        lt and lt.BetaGeoFitter,
        ("r", "alpha", "a", "b"),
        cdnow,
        args.repeat,
        args.repeat,
        with_lt,
    )
    bench_transaction(
        "Pareto/NBD",
        ParetoNBDModel,
        lt and lt.ParetoNBDFitter,
        ("r", "alpha", "s", "beta"),
        cdnow,
        args.repeat,
        args.repeat,
        with_lt,
    )
    bench_gamma_gamma(cdnow, args.repeat, args.repeat, with_lt)

    n = args.customers
    print(f"\n== Synthetic, {n:,} customers (CDNow parameters, whole days, weeks) ==")
    start = time.perf_counter()
    bg_data = synthetic("bgnbd", n)
    pn_data = synthetic("pareto", n, seed=2)
    print(f"(simulated in {time.perf_counter() - start:.1f} s)")
    bench_transaction(
        "BG/NBD (BG/NBD data)",
        BetaGeoModel,
        lt and lt.BetaGeoFitter,
        ("r", "alpha", "a", "b"),
        bg_data,
        args.repeat,
        1,
        with_lt,
    )
    bench_transaction(
        "Pareto/NBD (Pareto/NBD data)",
        ParetoNBDModel,
        lt and lt.ParetoNBDFitter,
        ("r", "alpha", "s", "beta"),
        pn_data,
        args.repeat,
        1,
        with_lt and args.lifetimes_pareto_at_scale,
    )
    bench_gamma_gamma(bg_data, args.repeat, 1, with_lt)
    print()
    bench_predictions(bg_data, args.repeat)

    if args.skip_continuous:
        return
    print(f"\n== Synthetic, {n:,} customers, continuous times (every row distinct) ==")
    bg_cont = synthetic("bgnbd", n, seed=3, whole_days=False)
    pn_cont = synthetic("pareto", n, seed=4, whole_days=False)
    bench_transaction(
        "BG/NBD (BG/NBD data)",
        BetaGeoModel,
        lt and lt.BetaGeoFitter,
        ("r", "alpha", "a", "b"),
        bg_cont,
        args.repeat,
        1,
        with_lt,
    )
    bench_transaction(
        "Pareto/NBD (Pareto/NBD data)",
        ParetoNBDModel,
        lt and lt.ParetoNBDFitter,
        ("r", "alpha", "s", "beta"),
        pn_cont,
        1,
        1,
        with_lt and args.lifetimes_pareto_at_scale,
    )


if __name__ == "__main__":
    main()
