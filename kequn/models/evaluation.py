"""The calibration/holdout check of Fader, Hardie & Lee (2005), as a table.

A model fitted on the calibration period predicts each customer's purchases in the holdout
period; the table sets the mean prediction beside the mean actual count, overall and by the
number of repeat purchases in the calibration period (0, 1, ..., 7+), which is the paper's
Figure 4 ("conditional expectations") as data: plot ``actual`` and ``predicted`` against the
index to draw it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kequn.errors import InputError
from kequn.models._base import TransactionModel, as_float_array

_NEEDED = ("frequency", "recency", "T", "frequency_holdout", "duration_holdout")


def calibration_holdout_table(
    model: TransactionModel, summary: pd.DataFrame, *, max_frequency: int = 7
) -> pd.DataFrame:
    """Actual vs predicted holdout purchases, by calibration frequency and overall.

    ``summary`` is a calibration/holdout summary as built by ``summary_from_transactions``
    or ``summary_from_orders`` with an ``observation_end``. Rows are labelled ``"0"``, ``"1"``,
    ..., ``f"{max_frequency}+"`` and ``"all"``; columns are ``customers``, ``actual`` and
    ``predicted`` (means per customer) and ``actual_total`` and ``predicted_total``. The
    correlation between actual and predicted counts per customer is in
    ``table.attrs["correlation"]``.
    """
    missing = [c for c in _NEEDED if c not in summary.columns]
    if missing:
        raise InputError(
            f"summary lacks the column(s) {missing}; build it with an observation_end so it "
            "holds the holdout period"
        )
    if not (isinstance(max_frequency, int) and max_frequency >= 1):
        raise InputError(f"max_frequency must be an integer >= 1, got {max_frequency!r}")
    x = as_float_array("frequency", summary["frequency"])
    actual = as_float_array("frequency_holdout", summary["frequency_holdout"])
    duration = as_float_array("duration_holdout", summary["duration_holdout"])
    predicted = np.asarray(
        model.conditional_expected_number_of_purchases_up_to_time(
            duration, summary["frequency"], summary["recency"], summary["T"]
        ),
        dtype=np.float64,
    )
    group = np.minimum(x, max_frequency).astype(np.int64)
    labels = [str(i) for i in range(max_frequency)] + [f"{max_frequency}+"]
    frame = pd.DataFrame({"group": group, "actual": actual, "predicted": predicted})
    by = frame.groupby("group")
    table = pd.DataFrame(
        {
            "customers": by.size(),
            "actual": by["actual"].mean(),
            "predicted": by["predicted"].mean(),
            "actual_total": by["actual"].sum(),
            "predicted_total": by["predicted"].sum(),
        }
    ).reindex(range(max_frequency + 1))
    table["customers"] = table["customers"].fillna(0).astype(np.int64)
    table.index = pd.Index(labels, name="frequency")
    table.loc["all"] = [
        len(frame),
        actual.mean(),
        predicted.mean(),
        actual.sum(),
        predicted.sum(),
    ]
    table["customers"] = table["customers"].astype(np.int64)
    table.attrs["correlation"] = float(np.corrcoef(actual, predicted)[0, 1])
    return table
