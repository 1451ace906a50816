"""The tables clustering keeps: assignments per run and one row per run.

* ``clusters`` — one row per customer × run: the cluster number (0 = largest cluster).
* ``cluster_runs`` — one row per run: ``as_of`` (a day is recorded as 00:00, as in
  ``segment_runs``), ``k``, ``features`` (JSON list of ``{name, expr, group}``), the
  silhouette of the chosen k, ``curve`` (JSON ``{k: silhouette}``), ``method``
  (``kmeans`` / ``minibatch_kmeans``) and ``rules`` (JSON list, one object per cluster:
  ``cluster``, ``size``, ``revenue_share``, ``rule``, ``precision``, ``recall``,
  ``centroid``), so ``kequn cluster save`` and personas need not refit anything.

Both are canonical tables defined in :mod:`kequn.store`, created when a workspace opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import ibis

from kequn.errors import InputError
from kequn.store import CLUSTER_RUNS, CLUSTERS
from kequn.workspace import Workspace

__all__ = [
    "CLUSTERS",
    "CLUSTER_RUNS",
    "StoredRun",
    "as_of_value",
    "load_run",
]

TABLES = {"clusters": CLUSTERS, "cluster_runs": CLUSTER_RUNS}


@dataclass(frozen=True)
class StoredRun:
    """A row of ``cluster_runs``, with its JSON columns decoded."""

    run_id: str
    as_of: datetime
    k: int
    features: list[dict[str, Any]]
    silhouette: float
    curve: dict[int, float]
    method: str
    rules: list[dict[str, Any]]
    computed_at: datetime

    def rule(self, cluster: int) -> dict[str, Any]:
        """The stored explanation of one cluster; the error lists the valid numbers."""
        for r in self.rules:
            if r["cluster"] == cluster:
                return r
        raise InputError(
            f"cluster {cluster!r} is not in run {self.run_id!r}; use 0 to {self.k - 1}"
        )


def as_of_value(label: datetime) -> date | datetime:
    """The as_of to evaluate again: a recorded 00:00 is the day it stands for."""
    return label.date() if label.time() == time() else label


def load_run(ws: Workspace, run_id: str | None = None) -> StoredRun:
    """A stored run by id, or the latest computed one."""
    t = ws.table("cluster_runs")
    if run_id is not None:
        t = t.filter(t.run_id == run_id)
    rows = t.order_by(ibis.desc("computed_at"), ibis.desc("run_id")).limit(1).to_pyarrow()
    if rows.num_rows == 0:
        if run_id is None:
            raise InputError("no cluster runs yet; run `kequn cluster` first")
        raise InputError(f"unknown cluster run {run_id!r}; see `kequn cluster --json` for ids")
    r = rows.to_pylist()[0]
    return StoredRun(
        run_id=r["run_id"],
        as_of=r["as_of"],
        k=int(r["k"]),
        features=json.loads(r["features"]),
        silhouette=float(r["silhouette"]),
        curve={int(k): float(v) for k, v in json.loads(r["curve"]).items()},
        method=r["method"],
        rules=json.loads(r["rules"]),
        computed_at=r["computed_at"],
    )
