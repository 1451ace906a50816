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

from kequn.insight.clustering import CustomerKMeans, CustomerKPrototypes
from kequn.insight.explain import ClusterRule, rule_for_cluster, rule_quality, save_cluster
from kequn.insight.features import FEATURE_GROUPS, Feature, feature_matrix, feature_table
from kequn.insight.personas import persona, persona_markdown, persona_text
from kequn.insight.runs import ClusterRun, cluster, cluster_members
from kequn.insight.tables import CLUSTER_RUNS, CLUSTERS, StoredRun, load_run

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
