"""Stable cluster ids across runs, and how far the structure drifted since the last one.

Re-clustering new data numbers clusters afresh (by size). To keep ids meaningful, the new
clusters are matched to the previous run's: both sets of centroids are put in the new
run's standardised space (its log and scaling) and paired by the Hungarian assignment on
their Euclidean distances (``scipy.optimize.linear_sum_assignment``), which minimises the
total distance. A matched cluster takes the previous id; a cluster without a partner (k
grew) takes the smallest unused id, larger clusters first.

The drift report gives, per cluster, the centroid shift in standard deviations (the
distance above) and in original units (new minus previous, per feature), and, for the
customers in both runs, how many changed cluster. A warning is raised when

* k changed, or
* the mean shift of the matched clusters (weighted by size) exceeds
  :data:`SHIFT_WARN` = 0.5 standard deviations, or
* more than :data:`MOVED_WARN` = 20% of the customers in both runs changed cluster,

which is the time to look at the personas again. Only features present in both runs are
compared; categorical features count a different mode as one standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["MOVED_WARN", "SHIFT_WARN", "Drift", "match_clusters", "relabel"]

SHIFT_WARN = 0.5  # mean centroid shift, in standard deviations of the new run
MOVED_WARN = 0.20  # share of the customers in both runs who changed cluster


def match_clusters(cost: np.ndarray) -> dict[int, int]:
    """Hungarian matching on distances (current × previous): {current row: previous row}."""
    if cost.size == 0:
        return {}
    rows, cols = linear_sum_assignment(cost)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def relabel(matching: dict[int, int], previous_ids: list[int], sizes: np.ndarray) -> np.ndarray:
    """New id for each current cluster: its partner's id, else the smallest unused one.

    Ids stay 0..k-1: when k shrank, a partner's id of k or more is not kept either; such
    clusters and unmatched ones take the free ids, larger clusters first.
    """
    k = len(sizes)
    ids = np.full(k, -1, dtype="int64")
    for cur, prev in matching.items():
        if previous_ids[prev] < k:
            ids[cur] = previous_ids[prev]
    used = set(ids[ids >= 0].tolist())
    free = iter([i for i in range(k) if i not in used])
    for cur in sorted(np.flatnonzero(ids < 0).tolist(), key=lambda c: (-int(sizes[c]), c)):
        ids[cur] = next(free)
    return ids


@dataclass(frozen=True)
class Drift:
    """How the clustering changed since ``previous_run``."""

    previous_run: str
    previous_k: int
    k: int
    features_compared: list[str]
    clusters: list[dict[str, Any]]  # cluster, previous (id or None), shift_sd, shift, moved_*
    customers_compared: int
    customers_moved: int
    mean_shift_sd: float
    warnings: list[str] = field(default_factory=list)

    @property
    def moved_share(self) -> float:
        return self.customers_moved / self.customers_compared if self.customers_compared else 0.0

    @property
    def drifted(self) -> bool:
        return bool(self.warnings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "previous_run": self.previous_run,
            "previous_k": self.previous_k,
            "k": self.k,
            "features_compared": self.features_compared,
            "customers_compared": self.customers_compared,
            "customers_moved": self.customers_moved,
            "moved_share": self.moved_share,
            "mean_shift_sd": self.mean_shift_sd,
            "drifted": self.drifted,
            "warnings": self.warnings,
            "clusters": self.clusters,
        }


def warnings_for(k: int, previous_k: int, mean_shift: float, moved_share: float) -> list[str]:
    """The documented drift thresholds, as sentences."""
    out = []
    if k != previous_k:
        out.append(f"k changed from {previous_k} to {k}")
    if mean_shift > SHIFT_WARN:
        out.append(
            f"centroids moved {mean_shift:.2f} standard deviations on average "
            f"(warning above {SHIFT_WARN})"
        )
    if moved_share > MOVED_WARN:
        out.append(
            f"{moved_share:.0%} of customers changed cluster (warning above {MOVED_WARN:.0%})"
        )
    if out:
        out.append("the structure drifted: re-examine the personas (kequn persona)")
    return out
