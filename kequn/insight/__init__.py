"""Insight: clusters explained as segment rules, and personas (用户画像) of any segment.

* :mod:`~kequn.insight.features` — per-customer features in SQL, each the value of a
  segment-language expression;
* :mod:`~kequn.insight.clustering` — :class:`CustomerKMeans` (log + standardise, k by
  silhouette on a sample, MiniBatch above 2M rows) and :class:`CustomerKPrototypes` (numbers
  and categorical attributes, Huang's K-prototypes);
* :mod:`~kequn.insight.explain` — a shallow tree per cluster → a rule, its precision and
  recall measured by the segment engine; :func:`save_cluster` stores it as a segment;
* :mod:`~kequn.insight.runs` — the workspace workflow and the ``clusters`` /
  ``cluster_runs`` tables (:mod:`~kequn.insight.tables`);
* :mod:`~kequn.insight.personas` — size, value, R/F/M, over-represented attributes with lift,
  categories, channel, day and hour, a name and a description in Chinese and English.

``docs/insight.md`` describes all of it.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → module: loaded on first use, so `kequn health` or `kequn persona` do not pay for
# scikit-learn (clustering) when they do not cluster
_WHERE = {
    "CustomerKMeans": "kequn.insight.clustering",
    "CustomerKPrototypes": "kequn.insight.clustering",
    "ClusterRule": "kequn.insight.explain",
    "rule_for_cluster": "kequn.insight.explain",
    "rule_quality": "kequn.insight.explain",
    "save_cluster": "kequn.insight.explain",
    "FEATURE_GROUPS": "kequn.insight.features",
    "Feature": "kequn.insight.features",
    "feature_matrix": "kequn.insight.features",
    "feature_table": "kequn.insight.features",
    "persona": "kequn.insight.personas",
    "persona_markdown": "kequn.insight.personas",
    "persona_text": "kequn.insight.personas",
    "ClusterRun": "kequn.insight.runs",
    "cluster": "kequn.insight.runs",
    "cluster_members": "kequn.insight.runs",
    "CLUSTER_RUNS": "kequn.insight.tables",
    "CLUSTERS": "kequn.insight.tables",
    "StoredRun": "kequn.insight.tables",
    "load_run": "kequn.insight.tables",
}


__all__ = [
    "CLUSTERS",
    "CLUSTER_RUNS",
    "FEATURE_GROUPS",
    "ClusterRule",
    "ClusterRun",
    "CustomerKMeans",
    "CustomerKPrototypes",
    "Feature",
    "StoredRun",
    "cluster",
    "cluster_members",
    "feature_matrix",
    "feature_table",
    "load_run",
    "persona",
    "persona_markdown",
    "persona_text",
    "rule_for_cluster",
    "rule_quality",
    "save_cluster",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kequn.insight' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
