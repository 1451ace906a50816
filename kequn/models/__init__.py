"""Probabilistic customer-base models: who will buy again, how often, for how much.

* :class:`BetaGeoModel` (BG/NBD) and :class:`ParetoNBDModel` (Pareto/NBD): repeat purchases
  and the probability that a customer is still active, from (frequency, recency, T);
* :class:`GammaGammaModel`: spend per transaction, and :func:`customer_lifetime_value`;
* :func:`summary_from_transactions` / :func:`summary_from_orders`: the per-customer summary
  the models take, from transaction arrays or the store's ``orders`` table;
* :func:`calibration_holdout_table`: the paper's check of predictions against a holdout;
* the CDNow data of the papers: :func:`load_cdnow_transactions`, :func:`load_cdnow_summary`.

All models follow scikit-learn's conventions (``fit`` returns ``self``, learned attributes end
in ``_``, ``NotFittedError`` before ``fit``); see docs/models.md.
"""

from kequn.models._base import ConvergenceWarning, DataWarning
from kequn.models.bgnbd import BetaGeoModel, simulate_bgnbd
from kequn.models.datasets import (
    CDNOW_CALIBRATION_END,
    CDNOW_OBSERVATION_END,
    load_cdnow_summary,
    load_cdnow_transactions,
)
from kequn.models.evaluation import calibration_holdout_table
from kequn.models.gammagamma import GammaGammaModel, customer_lifetime_value
from kequn.models.paretonbd import ParetoNBDModel, simulate_paretonbd
from kequn.models.summary import summary_from_orders, summary_from_transactions

#: The models by the name the CLI and the JSON output use.
MODELS = {
    BetaGeoModel.name: BetaGeoModel,
    ParetoNBDModel.name: ParetoNBDModel,
    GammaGammaModel.name: GammaGammaModel,
}

__all__ = [
    "CDNOW_CALIBRATION_END",
    "CDNOW_OBSERVATION_END",
    "MODELS",
    "BetaGeoModel",
    "ConvergenceWarning",
    "DataWarning",
    "GammaGammaModel",
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
