"""The clustering workflow on a workspace: features → K-means → rules → stored run.

:func:`cluster` computes the features in the engine (:mod:`kequn.insight.features`), fits
:class:`~kequn.insight.clustering.CustomerKMeans` (or
:class:`~kequn.insight.clustering.CustomerKPrototypes` when categorical attributes are among
the features), explains every cluster as a rule whose
precision and recall the segment engine measures (:mod:`kequn.insight.explain`), and stores
the assignments (``clusters``) and the run (``cluster_runs``) in one transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from kequn.errors import InputError
from kequn.insight.clustering import CustomerKMeans, CustomerKPrototypes
from kequn.insight.explain import ClusterRule, explain_clusters
from kequn.insight.features import Feature, feature_matrix, parse_groups
from kequn.insight.stability import Drift, match_clusters, relabel, warnings_for
from kequn.insight.tables import CLUSTERS, StoredRun, load_run
from kequn.segments.timing import resolve_as_of
from kequn.workspace import Workspace

__all__ = ["ClusterRun", "cluster", "cluster_members"]


@dataclass(frozen=True)
class ClusterRun:
    """A clustering run: the choice of k, the clusters in original units, their rules."""

    run_id: str
    as_of: datetime
    k: int
    method: str
    features: tuple[Feature, ...]
    silhouette: float
    curve: dict[int, float]
    clusters: list[dict[str, Any]]  # cluster, size, share, revenue, revenue_share, centroid
    rules: list[ClusterRule]
    customer_ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    drift: Drift | None = None  # against the previous run, when there was one

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the per-customer arrays."""
        rules = {r.cluster: r for r in self.rules}
        return {
            "drift": self.drift.as_dict() if self.drift is not None else None,
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "k": self.k,
            "method": self.method,
            "silhouette": self.silhouette,
            "curve": {str(k): v for k, v in self.curve.items()},
            "features": [_feature_info(f) for f in self.features],
            "clusters": [
                {
                    **c,
                    **(
                        {
                            "rule": rules[c["cluster"]].rule,
                            "precision": rules[c["cluster"]].precision,
                            "recall": rules[c["cluster"]].recall,
                            "rule_size": rules[c["cluster"]].rule_size,
                        }
                        if c["cluster"] in rules
                        else {}
                    ),
                }
                for c in self.clusters
            ],
        }


def _feature_info(f: Feature) -> dict[str, Any]:
    info: dict[str, Any] = {"name": f.name, "expr": f.expr, "group": f.group}
    if f.categorical:
        info["levels"] = list(f.levels)
    return info


def _centroid(value: float, f: Feature) -> float | str | None:
    """A centroid coordinate: a number, or for a categorical feature its mode (a level)."""
    return f.levels[int(value)] if f.categorical else float(value)


def _parse_k(k: int | str) -> int | str:
    if isinstance(k, str):
        text = k.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit():
            k = int(text)
        else:
            raise InputError(f"k = {k!r}: use 'auto' or a whole number from 2")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InputError(f"k = {k!r}: use 'auto' or a whole number from 2")
    return k


def cluster(
    ws: Workspace,
    *,
    features: str | Sequence[str] | None = None,
    k: int | str = "auto",
    as_of: object = None,
    random_state: int = 0,
    explain: bool = True,
    store: bool = True,
    model: CustomerKMeans | CustomerKPrototypes | None = None,
    previous: str | None = "latest",
) -> ClusterRun:
    """Cluster every customer at ``as_of`` and (by default) explain and store the run.

    ``features``: groups among ``rfm``, ``clv`` (stored CLV / p_alive / churn risk) and
    ``events`` (counts by type, last 90 days); default all, ``clv`` only where scores are
    stored; and ``attr:NAME`` for a categorical customer attribute (``attr:city``), which
    switches the method to K-prototypes (``method == "kprototypes"``). ``k``: ``"auto"``
    (silhouette over 2..8 on a sample) or a number. ``model`` replaces the default estimator
    (settings such as sample sizes). Deterministic for a ``random_state``; pass ``as_of`` for
    reproducible results.

    ``previous``: the run whose ids to keep (``"latest"``, a run id, or None for fresh
    numbering by size): clusters are matched to its centroids and relabelled, and
    ``drift`` reports the shifts, the customers who changed cluster and warnings
    (:mod:`kequn.insight.stability`). Customers are sorted by id before fitting, so the
    same data in any row order gives the same clusters and ids.
    """
    groups = parse_groups(features)
    k_value = _parse_k(k)
    moment = resolve_as_of(as_of, ws.config.timezone)
    fm = feature_matrix(ws, moment, groups)
    n = len(fm.customer_ids)
    if n < 3:
        raise InputError(f"only {n} customers in the workspace; clustering needs at least 3")
    categorical = np.array([f.categorical for f in fm.features])
    est: CustomerKMeans | CustomerKPrototypes
    if model is not None:
        est = model
    elif categorical.any():
        est = CustomerKPrototypes(k_value, categorical=categorical, random_state=random_state)
    else:
        est = CustomerKMeans(k_value, random_state=random_state)
    if model is None:
        est.log = np.array([f.log for f in fm.features])
    est.fit(fm.values)
    centroids = est.centroids_
    labels = est.labels_
    drift = None
    prior = _previous(ws, previous)
    if prior is not None:
        ids, drift = _stabilise(ws, prior, est, fm.features, fm.customer_ids, labels)
        order = np.argsort(ids)  # row i of the centroids is cluster i again
        labels, centroids = ids[labels], centroids[order]
    sizes = np.bincount(labels, minlength=est.k_)
    revenue = np.bincount(labels, weights=fm.revenue, minlength=est.k_)
    total_revenue = float(fm.revenue.sum())
    clusters = [
        {
            "cluster": i,
            "size": int(sizes[i]),
            "share": float(sizes[i] / n),
            "revenue": float(revenue[i]),
            "revenue_share": float(revenue[i] / total_revenue) if total_revenue else 0.0,
            "centroid": {f.name: _centroid(centroids[i, j], f) for j, f in enumerate(fm.features)},
        }
        for i in range(est.k_)
    ]
    rules: list[ClusterRule] = []
    if explain:
        rules = explain_clusters(
            ws, fm.customer_ids, labels, fm.values, fm.features, moment, random_state=random_state
        )
    run = ClusterRun(
        run_id=f"{moment.label:%Y%m%d}-{uuid.uuid4().hex[:8]}",
        as_of=moment.label,
        k=int(est.k_),
        method=est.method_,
        features=fm.features,
        silhouette=float(est.silhouette_),
        curve=dict(est.silhouette_curve_),
        clusters=clusters,
        rules=rules,
        customer_ids=fm.customer_ids,
        labels=labels,
        drift=drift,
    )
    if store:
        _store(ws, run)
    return run


def _previous(ws: Workspace, previous: str | None) -> StoredRun | None:
    if previous is None or previous.lower() == "none":
        return None
    if previous == "latest":
        if ws.table("cluster_runs").count().execute() == 0:
            return None
        return load_run(ws)
    return load_run(ws, previous)


def _standardise(est: Any, features: Sequence[Feature], values: np.ndarray) -> np.ndarray:
    """Original units → the new run's standardised space (numeric features only)."""
    numeric = np.array([not f.categorical for f in features])
    z = values[:, numeric].astype("float64", copy=True)
    log = est.log_
    z[:, log] = np.log1p(np.clip(z[:, log], 0, None))
    return (z - est.mean_) / est.scale_


def _stabilise(
    ws: Workspace,
    prior: StoredRun,
    est: Any,
    features: Sequence[Feature],
    customer_ids: np.ndarray,
    labels: np.ndarray,
) -> tuple[np.ndarray, Drift]:
    """Ids matched to ``prior``'s clusters, and the drift since (see kequn.insight.stability)."""
    k = int(est.k_)
    before = {f["name"]: f for f in prior.features}
    shared = [
        j
        for j, f in enumerate(features)
        if f.name in before and bool(before[f.name].get("levels")) == f.categorical
    ]
    prev_rules = sorted(prior.rules, key=lambda r: r["cluster"])
    prev_ids = [int(r["cluster"]) for r in prev_rules]
    cur = est.centroids_
    numeric = [j for j in shared if not features[j].categorical]
    cat = [j for j in shared if features[j].categorical]
    # previous centroids in original units, in this run's feature order
    prev = cur[:1].repeat(len(prev_rules), axis=0).copy() if len(prev_rules) else cur[:0]
    for i, r in enumerate(prev_rules):
        for j in numeric:
            prev[i, j] = float(r["centroid"][features[j].name])
    z_cur = _standardise(est, features, cur)
    z_prev = _standardise(est, features, prev)
    num_cols = [sum(not f.categorical for f in features[:j]) for j in numeric]
    diff = z_cur[:, None, num_cols] - z_prev[None, :, num_cols]
    cost = (diff**2).sum(axis=2)
    for j in cat:
        mode = np.array([features[j].levels[int(v)] for v in cur[:, j]], dtype=object)
        old = np.array([r["centroid"][features[j].name] for r in prev_rules], dtype=object)
        cost = cost + (mode[:, None] != old[None, :])
    dist = np.sqrt(cost)
    matching = match_clusters(dist) if shared else {}
    sizes = np.bincount(labels, minlength=k)
    ids = relabel(matching, prev_ids, sizes)
    partner = {int(ids[c]): prev_ids[p] for c, p in matching.items()}  # new id → previous id

    # customers in both runs: did they stay with their cluster's partner?
    t = ws.table("clusters")
    old_rows = t.filter(t.run_id == prior.run_id).select("customer_id", "cluster").to_pyarrow()
    old_ids = np.asarray(old_rows.column("customer_id").to_pylist(), dtype=object)
    _, here, there = np.intersect1d(customer_ids, old_ids, return_indices=True)
    new_label = ids[labels[here]]
    old_label = old_rows.column("cluster").to_numpy()[there]
    partner_of = np.array([partner.get(int(c), -1) for c in range(k)])
    moved = partner_of[new_label] != old_label
    clusters = []
    weighted = 0.0
    for c, p in sorted(matching.items(), key=lambda cp: int(ids[cp[0]])):
        cid = int(ids[c])
        shift = {features[j].name: float(cur[c, j] - prev[p, j]) for j in numeric}
        weighted += float(dist[c, p]) * int(sizes[c])
        clusters.append(
            {
                "cluster": cid,
                "previous": prev_ids[p],
                "shift_sd": float(dist[c, p]),
                "shift": shift,
                "moved_in": int(((new_label == cid) & moved).sum()),
                "moved_out": int(((old_label == prev_ids[p]) & moved).sum()),
            }
        )
    for c in sorted(set(range(k)) - set(matching), key=lambda c: int(ids[c])):
        cid = int(ids[c])
        clusters.append({"cluster": cid, "previous": None, "shift_sd": None, "shift": {},
                         "moved_in": int(((new_label == cid) & moved).sum()),
                         "moved_out": 0})  # fmt: skip
    matched_size = sum(int(sizes[c]) for c in matching)
    mean_shift = weighted / matched_size if matched_size else 0.0
    compared, n_moved = len(here), int(moved.sum())
    drift = Drift(
        previous_run=prior.run_id,
        previous_k=prior.k,
        k=k,
        features_compared=[features[j].name for j in shared],
        clusters=clusters,
        customers_compared=compared,
        customers_moved=n_moved,
        mean_shift_sd=mean_shift,
        warnings=warnings_for(k, prior.k, mean_shift, n_moved / compared if compared else 0.0),
    )
    return ids, drift


def _store(ws: Workspace, run: ClusterRun) -> None:
    con = ws.con
    # full precision: "the latest run" must be well defined for runs within one second
    computed_at = resolve_as_of(None, ws.config.timezone).end
    assignments = pa.table(
        {
            "customer_id": pa.array(run.customer_ids, pa.string()),
            "run_id": pa.array(np.full(len(run.labels), run.run_id, dtype=object), pa.string()),
            "as_of": pa.array(np.full(len(run.labels), np.datetime64(run.as_of, "us"))),
            "cluster": pa.array(run.labels.astype("int64")),
            "computed_at": pa.array(np.full(len(run.labels), np.datetime64(computed_at, "us"))),
        },
        schema=CLUSTERS.to_pyarrow(),
    )
    info = run.as_dict()
    rules = [
        {
            "cluster": c["cluster"],
            "size": c["size"],
            "revenue_share": c["revenue_share"],
            "centroid": c["centroid"],
            "rule": c.get("rule"),
            "precision": c.get("precision"),
            "recall": c.get("recall"),
        }
        for c in info["clusters"]
    ]
    row = ibis.memtable(
        [
            {
                "run_id": run.run_id,
                "as_of": run.as_of,
                "k": run.k,
                "features": json.dumps(info["features"], ensure_ascii=False),
                "silhouette": run.silhouette,
                "curve": json.dumps(info["curve"]),
                "method": run.method,
                "rules": json.dumps(rules, ensure_ascii=False),
                "computed_at": computed_at,
            }
        ]
    )
    with ws.store.transaction():
        con.insert("clusters", assignments)
        con.insert("cluster_runs", row)


def cluster_members(ws: Workspace, cluster_no: int, run_id: str | None = None) -> ir.Table:
    """The customers of one cluster of a stored run (latest by default), lazily."""
    stored: StoredRun = load_run(ws, run_id)
    stored.rule(cluster_no)  # an unknown number fails with the valid range
    t = ws.table("clusters")
    return t.filter(t.run_id == stored.run_id, t.cluster == cluster_no).select("customer_id")
