"""Each cluster explained as a rule of the segment language, and saved as a segment.

A cluster from K-means is a region of a standardised space nobody can read. Here a shallow
decision tree (depth ≤ 3) learns "in cluster n or not" from the features in **original
units**; the paths to its positive leaves become conditions on the rule-language
expressions that define the features (:class:`kequn.insight.features.Feature`), e.g.::

    days_since_last_order <= 45 and count(orders, ever) > 3 and sum(orders.amount, ever) > 1200

A categorical feature (``attr:city``) is given to the tree as its levels ranked by the
share of the cluster among the customers holding them (Breiman's ordering: for a yes/no
target the best split of a category into two sets is a cut of that ranking), so a split
reads back as a set of values: ``city in ('北京', '上海')``.

The rule's quality is then measured **by the segment engine itself**: the rule is evaluated
with :func:`kequn.segments.flags` and its members compared with the cluster's, so precision
and recall describe what the saved segment will actually select, not what the tree believed.
:func:`save_cluster` stores the rule as an ordinary segment (editable like any other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
from sklearn.tree import DecisionTreeClassifier

from kequn.errors import InputError
from kequn.insight.features import Feature
from kequn.insight.tables import StoredRun, as_of_value, load_run
from kequn.segments import Segment, apply, flags
from kequn.segments.engine import SegmentRun
from kequn.workspace import Workspace

__all__ = ["ClusterRule", "explain_clusters", "rule_for_cluster", "rule_quality", "save_cluster"]

MAX_DEPTH = 3
TREE_SAMPLE = 100_000


@dataclass(frozen=True)
class ClusterRule:
    """A cluster's rule and how well it matches the cluster (computed by the engine)."""

    cluster: int
    rule: str
    precision: float  # share of the rule's members that are in the cluster
    recall: float  # share of the cluster that the rule selects
    rule_size: int
    cluster_size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paths(tree: DecisionTreeClassifier) -> list[list[tuple[int, str, float]]]:
    """Conditions leading to the positive regions, merging subtrees that are all positive.

    The tree has at most 15 nodes (depth 3); this walks nodes, not customers.
    """
    t = tree.tree_
    positive_class = list(tree.classes_).index(1) if 1 in tree.classes_ else None

    def positive(node: int) -> bool:
        if positive_class is None:
            return False
        if t.children_left[node] == -1:
            return int(np.argmax(t.value[node][0])) == positive_class
        return positive(t.children_left[node]) and positive(t.children_right[node])

    out: list[list[tuple[int, str, float]]] = []

    def walk(node: int, path: list[tuple[int, str, float]]) -> None:
        if positive(node):
            out.append(path)
            return
        if t.children_left[node] == -1:
            return
        f, thr = int(t.feature[node]), float(t.threshold[node])
        walk(t.children_left[node], [*path, (f, "<=", thr)])
        walk(t.children_right[node], [*path, (f, ">", thr)])

    walk(0, [])
    return out


def _ranked(
    values: np.ndarray, y: np.ndarray, features: Sequence[Feature]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Categorical columns recoded as each level's rank by the cluster's share in it.

    Returns the recoded matrix and, per categorical column, the level indexes in rank
    order (highest share first; levels nobody holds last; ties by level).
    """
    order_of: dict[int, np.ndarray] = {}
    cat = [j for j, f in enumerate(features) if f.categorical]
    if not cat:
        return values, order_of
    x = values.copy()
    for j in cat:
        codes = values[:, j].astype("int64")
        n_levels = max(len(features[j].levels), int(codes.max()) + 1 if len(codes) else 0)
        held = np.bincount(codes, minlength=n_levels)
        inside = np.bincount(codes, weights=y, minlength=n_levels)
        share = np.where(held > 0, inside / np.maximum(held, 1), -1.0)
        order = np.lexsort((np.arange(n_levels), -share))
        rank = np.empty(n_levels, dtype="int64")
        rank[order] = np.arange(n_levels)
        x[:, j] = rank[codes]
        order_of[j] = order
    return x, order_of


def _conjunction(
    path: list[tuple[int, str, float]],
    features: Sequence[Feature],
    order_of: dict[int, np.ndarray] | None = None,
) -> str:
    """One path as ``a and b``: per feature only the tightest bound on each side.

    For a categorical feature the bounds cut its ranking (``order_of``) into the set of
    levels the path keeps, written with :meth:`Feature.condition_in`.
    """
    upper: dict[int, float] = {}
    lower: dict[int, float] = {}
    for f, op, thr in path:
        if op == "<=":
            upper[f] = min(thr, upper.get(f, thr))
        else:
            lower[f] = max(thr, lower.get(f, thr))
    parts = []
    for f in sorted(set(upper) | set(lower)):
        feature = features[f]
        if feature.categorical and order_of is not None and f in order_of:
            order = order_of[f]
            ranks = np.arange(len(order))
            keep = (ranks > lower.get(f, -np.inf)) & (ranks <= upper.get(f, np.inf))
            chosen = [feature.levels[i] for i in order[keep] if i < len(feature.levels)]
            parts.append(feature.condition_in(chosen))
            continue
        if f in lower:
            parts.append(feature.condition(">", lower[f]))
        if f in upper:
            parts.append(feature.condition("<=", upper[f]))
    return " and ".join(parts) if parts else "true"


def rule_for_cluster(
    values: np.ndarray,
    labels: np.ndarray,
    cluster: int,
    features: Sequence[Feature],
    *,
    max_depth: int = MAX_DEPTH,
    sample_size: int = TREE_SAMPLE,
    random_state: int = 0,
) -> str:
    """A rule-language rule approximating ``labels == cluster`` from original-unit features.

    The tree is fitted on at most ``sample_size`` rows. When no leaf has a majority of the
    cluster (a small cluster), the tree is refitted with balanced class weights, which trades
    precision for recall rather than returning nothing.
    """
    if not 1 <= max_depth <= MAX_DEPTH:
        raise InputError(f"max_depth = {max_depth!r}: use 1 to {MAX_DEPTH} (readable rules)")
    n = len(labels)
    rng = np.random.default_rng(random_state)
    rows = np.arange(n) if n <= sample_size else rng.choice(n, sample_size, replace=False)
    y = (labels[rows] == cluster).astype("int64")
    x, order_of = _ranked(values[rows], y, features)
    if y.all():
        return "true"
    if not y.any():
        return "false"
    leaf = max(1, len(rows) // 200)
    paths: list[list[tuple[int, str, float]]] = []
    for weight in (None, "balanced"):
        tree = DecisionTreeClassifier(
            max_depth=max_depth,
            min_samples_leaf=leaf,
            class_weight=weight,
            random_state=random_state,
        ).fit(x, y)
        paths = _paths(tree)
        if paths:
            break
    if not paths:
        return "false"
    clauses = [_conjunction(p, features, order_of) for p in paths]
    if len(clauses) == 1:
        return clauses[0]
    return " or ".join(f"({c})" if " and " in c else c for c in clauses)


def rule_quality(
    ws: Workspace, rule: str, cluster_members: ir.Table, as_of: object
) -> tuple[float, float, int, int]:
    """(precision, recall, rule size, cluster size), the rule evaluated by the segment engine.

    ``cluster_members`` is a table with a ``customer_id`` column. One query: the rule's
    flags for every customer, joined to the cluster's members.
    """
    f = flags(ws, rule, as_of)
    m = cluster_members.select(_cid=cluster_members.customer_id).distinct()
    j = f.left_join(m, f.customer_id == m._cid)
    inside = j._cid.notnull()
    row = (
        j.aggregate(
            rule_size=j.member.cast("int64").sum(),
            cluster_size=inside.cast("int64").sum(),
            both=(j.member & inside).cast("int64").sum(),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    size, csize, both = (int(row[k] or 0) for k in ("rule_size", "cluster_size", "both"))
    precision = both / size if size else 0.0
    recall = both / csize if csize else 0.0
    return precision, recall, size, csize


def explain_clusters(
    ws: Workspace,
    customer_ids: np.ndarray,
    labels: np.ndarray,
    values: np.ndarray,
    features: Sequence[Feature],
    as_of: object,
    *,
    max_depth: int = MAX_DEPTH,
    random_state: int = 0,
) -> list[ClusterRule]:
    """A rule per cluster, with precision and recall measured by evaluating the rule."""
    assigned = ibis.memtable(
        pa.table({"customer_id": pa.array(customer_ids, pa.string()), "cluster": labels})
    )
    out = []
    for n in range(int(labels.max()) + 1 if len(labels) else 0):
        rule = rule_for_cluster(
            values, labels, n, features, max_depth=max_depth, random_state=random_state
        )
        members = assigned.filter(assigned.cluster == n)
        precision, recall, size, csize = rule_quality(ws, rule, members, as_of)
        out.append(ClusterRule(n, rule, precision, recall, size, csize))
    return out


def _find_run(ws: Workspace, run: object) -> StoredRun:
    if isinstance(run, StoredRun):
        return run
    if run is None or isinstance(run, str):
        return load_run(ws, run)
    run_id = getattr(run, "run_id", None)
    if isinstance(run_id, str):
        return load_run(ws, run_id)
    raise InputError(f"run {run!r}: give a run id, a ClusterRun or None for the latest")


def save_cluster(
    ws: Workspace,
    run: object,
    cluster: int,
    name: str,
    *,
    label_zh: str | None = None,
    label_en: str | None = None,
    owner: str = "",
) -> SegmentRun:
    """Store cluster ``cluster``'s rule as an ordinary segment and evaluate it once.

    ``run`` is a run id, a :class:`~kequn.insight.runs.ClusterRun`, or None for the latest
    run. The segment is applied at the run's ``as_of``, so its first membership interval is
    the rule's members then; from there on it is a rule like any other (edit it in a segment
    file and apply again). The description records the run, precision and recall.
    """
    stored = _find_run(ws, run)
    info = stored.rule(cluster)
    day = as_of_value(stored.as_of)
    seg = Segment(
        name=name,
        rule=info["rule"],
        label_zh=label_zh or f"聚类 {cluster}（{stored.run_id}）",
        label_en=label_en or f"Cluster {cluster} of run {stored.run_id}",
        description=(
            f"Explains cluster {cluster} of cluster run {stored.run_id} (as_of {day}, "
            f"k={stored.k}): precision {info['precision']:.1%}, recall {info['recall']:.1%}. "
            f"解释聚类运行 {stored.run_id} 的第 {cluster} 类：精确率 {info['precision']:.1%}，"
            f"召回率 {info['recall']:.1%}。"
        ),
        owner=owner,
        tags=("cluster", stored.run_id),
    )
    report = apply(ws, [seg], as_of=day)
    return report.runs[0]
